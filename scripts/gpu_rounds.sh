#!/usr/bin/env bash
# Issue 11 on the GPU machine (device rounds for sps / fastdraft): the default model from the GGUF halves already in
# /tmp/g, then the float32 check of the device rounds, the spec bench at T = 0 on the mixed suite and the draft
# comparison on held-out chat; outputs in $OUT. The suites: `python -m lab bench spec --write-suite .whl/suite.jsonl
# --per-category 2` and `... --write-suite .whl/chat_suite.jsonl --categories chat --per-category 8`.
source scripts/gpu_env.sh
set +eo pipefail
cat /tmp/g/ggpart* > /tmp/g/m.gguf
python -c "from pathlib import Path; from lab import models; models.convert_gguf(Path('/tmp/g/m.gguf'), models.cache_dir() / models.DEFAULT_NAME)" > /dev/null 2>&1
timeout 130 python scripts/check_rounds_gpu.py --prompts 6 --tokens 64 > "$OUT/check-rounds.txt" 2>&1
timeout 260 python -m lab bench spec --model default --device cuda --dtype bfloat16 --suite .whl/suite.jsonl \
  --max-new-tokens 64 --no-plots --methods greedy,fastdraft,sps,pld,token-recycling --out "$OUT/t0.json" > "$OUT/t0.txt" 2>&1
timeout 150 python scripts/compare_drafts.py --val .whl/chat_suite.jsonl --drafts lab/data/fastdraft --prompts 8 \
  --tokens 96 --out "$OUT/compare.json" > "$OUT/compare.txt" 2>&1
for f in "$OUT"/*.txt; do echo "== $f"; grep -v Warn "$f" | tail -14; done
