#!/usr/bin/env bash
# Issue 11 on the GPU machine, after scripts/gpu_vocab.sh in the same session (the model is converted; vocab.json and
# the manifest it wrote are in lab/data/fastdraft): fastdraft's step cost and sps speed on held-out chat with the
# trimmed head and the whole one (scripts/compare_drafts.py --full), then the spec bench at T = 0 with fastdraft
# (trimmed, its default) beside sps with the whole head at the same chain length, on the mixed suite (twice: the
# spread between runs of the same code) and on the copy-heavy suite; outputs in $OUT.
source scripts/gpu_env.sh
set +eo pipefail
if [ -z "$(ls -A /tmp/cache 2>/dev/null)" ]; then
  cat /tmp/g/ggpart* > /tmp/g/m.gguf
  python -c "from pathlib import Path; from lab import models; models.convert_gguf(Path('/tmp/g/m.gguf'), models.cache_dir() / models.DEFAULT_NAME)" > /dev/null 2>&1
fi
timeout 170 python scripts/compare_drafts.py --val .whl/chat_suite.jsonl --drafts lab/data/fastdraft --full \
  --prompts 8 --tokens 96 --out "$OUT/compare-drafts.json" > "$OUT/compare-drafts.txt" 2>&1
bench() {  # name, suite, then bench options
  local name=$1 suite=$2; shift 2
  timeout 130 python -m lab bench spec --model default --device cuda --dtype bfloat16 --suite "$suite" \
    --no-plots --out "$OUT/$name.json" "$@" > "$OUT/$name.txt" 2>&1
}
bench t0-trim .whl/suite.jsonl --max-new-tokens 64 --methods greedy,fastdraft,sps,pld --opt sps.draft=fastdraft:full \
  --opt sps.length=2 --opt sps.adaptive=false
bench t0-trim-again .whl/suite.jsonl --max-new-tokens 64 --methods greedy,fastdraft,sps \
  --opt sps.draft=fastdraft:full --opt sps.length=2 --opt sps.adaptive=false
bench copy-trim .whl/copy_suite.jsonl --max-new-tokens 128 --methods greedy,fastdraft,sps,pld \
  --opt sps.draft=fastdraft:full --opt sps.length=2 --opt sps.adaptive=false
for f in "$OUT"/*.txt; do echo "== $f"; grep -v "Warn\|spec bench\|clean_up" "$f" | tail -9; done
rm -f "$OUT"/t*.txt "$OUT"/copy*.txt
