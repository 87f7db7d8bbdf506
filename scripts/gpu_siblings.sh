#!/usr/bin/env bash
# Issue 11 on the GPU machine: device rounds whose draft also proposes its second choice at each depth (siblings,
# lab/backends/fast/rounds.py), with fastdraft's trimmed head. The default model from the GGUF halves in /tmp/g; the
# float32 check (siblings included); the draft step cost with the trimmed and the whole head (compare_drafts.py
# --full); the spec bench at T = 0 on the mixed suite: greedy, sps (fastdraft, chains of 2), fastdraft with
# siblings (chains of 2 and their siblings: 5 verified tokens), pld; the same with forwards of up to 5 new tokens on
# the matrix-vector path (DECODING_LAB_GEMV_ROWS=5). Outputs in $OUT.
source scripts/gpu_env.sh
set +eo pipefail
cat /tmp/g/ggpart* > /tmp/g/m.gguf
python -c "from pathlib import Path; from lab import models; models.convert_gguf(Path('/tmp/g/m.gguf'), models.cache_dir() / models.DEFAULT_NAME)" > /dev/null 2>&1
timeout 150 python scripts/check_rounds_gpu.py --prompts 6 --tokens 64 > "$OUT/check-rounds.txt" 2>&1
timeout 130 python scripts/compare_drafts.py --val .whl/chat_suite.jsonl --drafts lab/data/fastdraft --full \
  --prompts 4 --tokens 96 --out "$OUT/compare-drafts.json" > "$OUT/compare-drafts.txt" 2>&1
bench() {  # name, then bench options
  local name=$1; shift
  timeout 120 python -m lab bench spec --model default --device cuda --dtype bfloat16 --suite .whl/suite.jsonl \
    --max-new-tokens 64 --no-plots --methods greedy,sps,fastdraft,pld --opt sps.draft=fastdraft \
    --opt sps.length=2 --opt sps.adaptive=false --opt fastdraft.siblings=true --out "$OUT/$name.json" "$@" \
    > "$OUT/$name.txt" 2>&1
}
bench t0-siblings
DECODING_LAB_GEMV_ROWS=5 bench t0-siblings-gemv5
for f in "$OUT"/*.txt; do echo "== $f"; grep -v "Warn\|spec bench\|clean_up" "$f" | tail -12; done
rm -f "$OUT"/t0*.txt
