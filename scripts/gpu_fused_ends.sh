#!/usr/bin/env bash
# Issue 11 on the GPU machine: a greedy step's fused ends (Weights.fused_ends: the embedding gather inside the first
# product, the final norm, the head and its argmax in one kernel) off and on, side by side on the default model and
# its trained draft. `bash scripts/gpu_fused_ends.sh cost`: the head kernel's plans (scripts/sweep_head_argmax.py),
# each burst's GPU time and kernels a step, the draft step's cost (compare_drafts.py), with the fused ends off and on
# (FES="1": on only; SWEEP=0: no sweep); `... bench`: the device rounds
# checked in float32 and the mixed suite at T = 0 (greedy, fastdraft, sps with chains of 2), fused. Outputs in $OUT.
source scripts/gpu_env.sh
set +eo pipefail
[ -e /tmp/g/m.gguf ] || cat /tmp/g/ggpart* > /tmp/g/m.gguf
python -c "from pathlib import Path; from lab import models; models.convert_gguf(Path('/tmp/g/m.gguf'), models.cache_dir() / models.DEFAULT_NAME)" > /dev/null 2>&1
if [ "${1:-cost}" = cost ]; then
  [ "${SWEEP:-1}" = 0 ] || timeout 100 python scripts/sweep_head_argmax.py --out "$OUT/sweep-head-argmax.json" 2>&1 \
    | tail -20
  for fe in ${FES:-1 0}; do
    DECODING_LAB_FUSED_ENDS=$fe timeout 90 python scripts/profile_graph_kernels.py --suite .whl/suite.jsonl --bursts \
      --top 14 > "$OUT/profile-bursts-fe$fe.txt" 2>&1
    grep "==\|draft step\|Error" "$OUT/profile-bursts-fe$fe.txt"
  done
  for fe in ${FES:-1 0}; do
    DECODING_LAB_FUSED_ENDS=$fe timeout 110 python scripts/compare_drafts.py --val .whl/suite.jsonl \
      --drafts lab/data/fastdraft --prompts 4 --tokens 96 --out "$OUT/compare-drafts-fe$fe.json" > "$OUT/log.txt" 2>&1
    echo "fused ends $fe"; tail -2 "$OUT/log.txt"
  done
else
  timeout 120 python scripts/check_rounds_gpu.py --suite .whl/suite.jsonl --prompts 4 --tokens 64 \
    > "$OUT/check-rounds.txt" 2>&1; tail -2 "$OUT/check-rounds.txt"
  timeout 200 python -m lab bench spec --model default --device cuda --dtype bfloat16 --suite .whl/suite.jsonl \
    --max-new-tokens 64 --no-plots --methods greedy,fastdraft,sps --opt sps.draft=fastdraft --opt sps.length=2 \
    --opt sps.adaptive=false --out "$OUT/spec-t0.json" > "$OUT/log.txt" 2>&1
  grep -v "Warn\|spec bench\|clean_up" "$OUT/log.txt" | tail -5
fi
rm -f "$OUT/log.txt"
