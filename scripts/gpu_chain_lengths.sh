#!/usr/bin/env bash
# Issue 11 on the GPU machine: fastdraft (trimmed head) with chains of 2 (its default) beside sps with the same draft
# in chains of 1, on the mixed suite at T = 0, three runs of the same code (the spread between runs); outputs in $OUT.
source scripts/gpu_env.sh
set +eo pipefail
cat /tmp/g/ggpart* > /tmp/g/m.gguf
python -c "from pathlib import Path; from lab import models; models.convert_gguf(Path('/tmp/g/m.gguf'), models.cache_dir() / models.DEFAULT_NAME)" > /dev/null 2>&1
for run in a b c; do
  timeout 150 python -m lab bench spec --model default --device cuda --dtype bfloat16 --suite .whl/suite.jsonl \
    --max-new-tokens 64 --no-plots --methods greedy,fastdraft,sps --opt sps.draft=fastdraft --opt sps.length=1 \
    --opt sps.adaptive=false --out "$OUT/t0-k1-k2-$run.json" > "$OUT/t0-$run.txt" 2>&1
  grep -v "Warn\|spec bench\|clean_up" "$OUT/t0-$run.txt" | tail -5
done
rm -f "$OUT"/*.txt
