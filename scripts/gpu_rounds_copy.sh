#!/usr/bin/env bash
# After scripts/gpu_rounds.sh's measurements: fastdraft with its new defaults (chains of 2) on the mixed suite, and
# the draft-model methods beside PLD on copy-heavy prompts (.whl/copy_suite.jsonl: `python -m lab bench spec
# --write-suite .whl/copy_suite.jsonl --categories copy --per-category 8`); the GGUF halves already in /tmp/g.
source scripts/gpu_env.sh
set +eo pipefail
cat /tmp/g/ggpart* > /tmp/g/m.gguf
python -c "from pathlib import Path; from lab import models; models.convert_gguf(Path('/tmp/g/m.gguf'), models.cache_dir() / models.DEFAULT_NAME)" > /dev/null 2>&1
bench() {  # name, suite, tokens, then bench options
  local name=$1 suite=$2 tokens=$3; shift 3
  timeout 200 python -m lab bench spec --model default --device cuda --dtype bfloat16 --suite "$suite" \
    --max-new-tokens "$tokens" --no-plots --out "$OUT/$name.json" "$@" > "$OUT/$name.txt" 2>&1
}
bench t0-defaults .whl/suite.jsonl 64 --methods greedy,fastdraft,sps,pld
bench copy-t0 .whl/copy_suite.jsonl 128 --methods greedy,fastdraft,pld,token-recycling,sam
for f in "$OUT"/*.txt; do echo "== $f"; grep -v "Warn\|spec bench\|clean_up" "$f" | tail -9; done
rm -f "$OUT"/*.txt
