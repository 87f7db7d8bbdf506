#!/usr/bin/env bash
# Issue 11 on the GPU machine: fastdraft's LM head trimmed to the target's most frequent tokens (VocabTrim,
# lab/vocab_trim.py). The default model from the GGUF halves already in /tmp/g; the target's greedy answers to
# 6,000 questions outside the benchmark's held-out set (the calibration set) and to 256 held-out ones (validation);
# `train draft-vocab` counts the first and measures acceptance with both heads on the second, writing vocab.json and
# the manifest (copied to $OUT); then where a rounds graph's time goes with each head, and the float32 check of the
# device rounds and of the trimmed draft's burst. The questions: `python -m lab train responses --write-questions
# --count 6000 --out .whl/cal_q.jsonl` and `... --held-out --count 256 --out .whl/val_q.jsonl`.
source scripts/gpu_env.sh
set +eo pipefail
cat /tmp/g/ggpart* > /tmp/g/m.gguf
python -c "from pathlib import Path; from lab import models; models.convert_gguf(Path('/tmp/g/m.gguf'), models.cache_dir() / models.DEFAULT_NAME)" > /dev/null 2>&1
python -m lab train responses --questions .whl/cal_q.jsonl --count 6000 --out /tmp/cal.jsonl --device cuda \
  --batch 512 --tokens 160 2>&1 | tail -2
python -m lab train responses --questions .whl/val_q.jsonl --count 256 --out /tmp/val.jsonl --device cuda \
  --batch 256 --tokens 160 2>&1 | tail -1
timeout 150 python -m lab train draft-vocab --corpus /tmp/cal.jsonl --keep 16384 --compare 8192,12288,24576 \
  --val /tmp/val.jsonl --device cuda > "$OUT/draft-vocab.txt" 2>&1
cp lab/data/fastdraft/vocab.json lab/data/fastdraft/manifest.json "$OUT/"
timeout 150 python scripts/profile_rounds_graph.py > "$OUT/profile-rounds.txt" 2>&1
timeout 150 python scripts/check_rounds_gpu.py --prompts 6 --tokens 64 > "$OUT/check-rounds.txt" 2>&1
for f in "$OUT"/*.txt; do echo "== $f"; grep -v "Warn\|clean_up" "$f" | tail -40; done
