# Sourced by the scripts/gpu_*.sh recipes on the GPU machine: the project from its tree, caches in /tmp, no hub,
# the links that the installed package has (lab.kernels, lab.widgets), the gguf wheel carried in .whl/.
set -euo pipefail
export PYTHONPATH=.:/tmp/pylib DECODING_LAB_CACHE=/tmp/cache HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
[ -e lab/kernels ] || ln -sfn ../kernels lab/kernels
[ -e lab/widgets ] || ln -sfn ../widgets lab/widgets
python -c "import gguf" 2>/dev/null || pip install -q --no-deps --no-index --target /tmp/pylib .whl/*.whl
