#!/usr/bin/env bash
# Issue 8 on the GPU machine (2026-12-03): tree attention reads no mask below the committed prefix (`visible`).
# The default model's GGUF halves already in /tmp/g (GPU.md), the mixed suite in .whl/suite.jsonl (`python -m lab
# bench spec --write-suite .whl/suite.jsonl --per-category 2`); outputs in $OUT.
#   bash scripts/gpu_visible.sh kernels   # the kernel bench, then the float32 check of the device rounds
#   bash scripts/gpu_visible.sh models    # greedy and tree verification on the default model and the 8B shape
source scripts/gpu_env.sh
set +eo pipefail
if [ ! -e /tmp/g/m.gguf ]; then
  cat /tmp/g/ggpart* > /tmp/g/m.gguf
  python -c "from pathlib import Path; from lab import models
models.convert_gguf(Path('/tmp/g/m.gguf'), models.cache_dir() / models.DEFAULT_NAME)" > /dev/null 2>&1
fi
case "$1" in
  kernels)
    timeout 300 python -m lab bench gpu --kernels --models "" --out "$OUT/gpu-kernels-2026-12-03.json" \
      > "$OUT/gpu-kernels-2026-12-03.txt" 2>&1
    grep -v Warn "$OUT/gpu-kernels-2026-12-03.txt" | tail -30
    timeout 200 python scripts/check_rounds_gpu.py --suite .whl/suite.jsonl --prompts 4 --tokens 64 \
      > "$OUT/check-rounds-gpu-2026-12-03-visible.txt" 2>&1
    grep -v Warn "$OUT/check-rounds-gpu-2026-12-03-visible.txt" | tail -3 ;;
  models)
    timeout 250 python -m lab bench gpu --models default --tokens 128 --prompts 4 --fp32-check \
      --out "$OUT/gpu-2026-12-03.json" > "$OUT/gpu-2026-12-03.txt" 2>&1
    grep -v Warn "$OUT/gpu-2026-12-03.txt" | tail -12
    timeout 250 python -m lab bench gpu --models random:llama-8b --tokens 128 --prompts 2 \
      --out "$OUT/gpu-2026-12-03-8b.json" > "$OUT/gpu-2026-12-03-8b.txt" 2>&1
    grep -v Warn "$OUT/gpu-2026-12-03-8b.txt" | tail -8 ;;
esac
