#!/usr/bin/env bash
# Issue 11 on the GPU machine (device rounds for sps / fastdraft): the default model from the GGUF halves already in
# /tmp/g, then the float32 check of the device rounds and the spec bench at T = 0 on the mixed suite with sps at
# fixed chain lengths beside fastdraft's adaptive one, and at T = 1; outputs in $OUT (at most 8 files come back:
# the .txt tables are printed). The suite: `python -m lab bench spec --write-suite .whl/suite.jsonl
# --per-category 2`.
source scripts/gpu_env.sh
set +eo pipefail
cat /tmp/g/ggpart* > /tmp/g/m.gguf
python -c "from pathlib import Path; from lab import models; models.convert_gguf(Path('/tmp/g/m.gguf'), models.cache_dir() / models.DEFAULT_NAME)" > /dev/null 2>&1
timeout 120 python scripts/check_rounds_gpu.py --prompts 6 --tokens 64 > "$OUT/check-rounds.txt" 2>&1
bench() {  # name, then bench options
  local name=$1; shift
  timeout 110 python -m lab bench spec --model default --device cuda --dtype bfloat16 --suite .whl/suite.jsonl \
    --max-new-tokens 64 --no-plots --methods greedy,fastdraft,sps,pld --out "$OUT/$name.json" "$@" > "$OUT/$name.txt" 2>&1
}
bench t0-k2 --opt sps.length=2 --opt sps.adaptive=false
bench t0-k1 --opt sps.length=1 --opt sps.adaptive=false
bench t0-k3 --opt sps.length=3 --opt sps.adaptive=false
bench t0-k2-again --opt sps.length=2 --opt sps.adaptive=false
bench t1 --temperature 1 --opt sps.length=2 --opt sps.adaptive=false
for f in "$OUT"/*.txt; do echo "== $f"; grep -v "Warn\|spec bench\|clean_up" "$f" | tail -9; done
rm -f "$OUT"/t*.txt
