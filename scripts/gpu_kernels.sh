#!/usr/bin/env bash
# Kernel work on the GPU machine; no model, no .whl needed (run from the repository root):
#   bash scripts/gpu_kernels.sh sweep [decode|verify]   # tree attention's plans and launch configurations, one call at a time
#   bash scripts/gpu_kernels.sh mask         # tree attention: the committed prefix's mask read or skipped
#   bash scripts/gpu_kernels.sh bench TAG    # python -m lab bench gpu --kernels -> $OUT/gpu-kernels-TAG.json
#   bash scripts/gpu_kernels.sh tree         # scripts/check_tree_rejection_gpu.py
#   bash scripts/gpu_kernels.sh flashinfer [SECONDS]   # install FlashInfer from /tmp/fi and build its JIT modules
#     (then `bench` includes it: FlashInfer's wheel travels in two ignored halves, .fi0/ and .fi1/)
set -euo pipefail
export PYTHONPATH=.:/tmp/pylib HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
[ -e lab/kernels ] || ln -sfn ../kernels lab/kernels
[ -e lab/widgets ] || ln -sfn ../widgets lab/widgets
case "$1" in
  sweep)  # [decode|verify]
    python scripts/sweep_attention.py --one-call ${2:+--only $2} --out "$OUT/sweep-attention-one-call${2:+-$2}.json" \
      | tee "$OUT/sweep-attention-one-call${2:+-$2}.txt" ;;
  mask)
    python scripts/sweep_attention.py --mask --out "$OUT/sweep-attention-mask.json" \
      | tee "$OUT/sweep-attention-mask.txt" ;;
  tree)  # the tree rejection kernels against their reference, compiled
    python scripts/check_tree_rejection_gpu.py | tee "$OUT/check-tree-rejection-gpu.txt" ;;
  bench)
    python -m lab bench gpu --kernels --models "" --out "$OUT/gpu-kernels-$2.json" | tee "$OUT/gpu-kernels-$2.txt" ;;
  flashinfer)  # FlashInfer from its wheels in /tmp/fi (carried in halves), its JIT modules built side by side
    python -c "import flashinfer" 2>/dev/null || pip install -q --no-deps --target /tmp/pylib /tmp/fi/*.whl
    for part in attention sampling; do
      timeout "${2:-480}" python -c "
import time, torch
from lab.bench.gpu import flashinfer_ops
start = time.time()
for name, fn in flashinfer_ops().items():
    if ('attention' in name) == ('$part' == 'attention'):
        fn(); torch.cuda.synchronize(); print('built', name, round(time.time() - start), 's', flush=True)
" > "$OUT/flashinfer-build-$part.txt" 2>&1 &
    done
    wait || true
    cat "$OUT"/flashinfer-build-*.txt | grep -v Warning | tail -20
    find ~/.cache /tmp/pylib/flashinfer -name "*.so" -newer /tmp/fi -exec ls -la {} \; 2>/dev/null | tail -8 ;;
esac
