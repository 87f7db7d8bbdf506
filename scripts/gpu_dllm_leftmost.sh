#!/usr/bin/env bash
# Issue 9 on the GPU machine: the `leftmost-N` reference orders (llada leftmost=N: the surest of the block's N
# left-most masked positions, one token per step) against low confidence at block 16 on the 162 scored tasks of
# results/dllm_suite_162.jsonl, and ssd-dllm verifying against each (drafts=16, lookup=3), three processes side by
# side; float32, 48 new tokens, as the CPU runs of results/dllm-distill/bench162_block16_cpu.json. Stage the GGUF
# in two halves first (/tmp/g/ggpartaa, ggpartab: ../shared/GPU.md); outputs in $OUT, joined afterwards with
# `python -m lab bench dllm --merge`. `bash scripts/gpu_dllm_leftmost.sh detours`: ssd-dllm alone, with detour states;
# `... block32`: leftmost-2 and ssd-dllm at block 32. `... sure`: leftmost-2@T (the left-most row whenever its
# confidence is at least T, llada leftmost=2 sure=T) at four T, and ssd-dllm verifying against each. `... chat`:
# leftmost-2@0.7 and ssd-dllm on the 20 held-out chat prompts of results/dllm_suite.jsonl, judged by the default model.
source scripts/gpu_env.sh
set +eo pipefail
cat /tmp/g/ggpart* > /tmp/g/m.gguf
python -c "from pathlib import Path; from lab import models; models.convert_gguf(Path('/tmp/g/m.gguf'), models.cache_dir() / models.DEFAULT_NAME)" > /dev/null 2>&1
LOGS=${LOGS:-$OUT}  # the logs: in $OUT unless they would crowd out results (8 files come back)
mkdir -p "$LOGS"
run() {  # NAME POLICIES
  timeout -s INT "${SECONDS_EACH:-500}" python -m lab bench dllm --suite results/dllm_suite_162.jsonl --tasks qa,copy,arithmetic \
    --judge none --device cuda --dtype float32 --max-new-tokens 48 --block-size "${3:-16}" --policies "$2" \
    --out "$OUT/leftmost_$1.json" --no-plots --no-progress > "$LOGS/leftmost_$1.txt" 2>&1
}
if [ "${1:-}" = detours ]; then  # ssd-dllm with detour states, the likeliest first, one process per setting
  run best_2 "ssd-dllm:drafts=16:order=leftmost-2:lookup=3" &
  run best_2_96 "ssd-dllm:drafts=16:order=leftmost-2:lookup=3:detours=96" &
  run best_3_96 "ssd-dllm:drafts=16:order=leftmost-3:lookup=3:detours=96" &
elif [ "${1:-}" = block32 ]; then  # block 32: the reference (58.0% on 2026-12-02, against 61.1% at block 16) and
  run block32_ref "llada:leftmost=2" 32 &  # ssd-dllm drafting the whole block (did not finish in 320 s)
  run block32_ssd "ssd-dllm:drafts=32:order=leftmost-2:lookup=3" 32 &
  run block32_ssd_128 "ssd-dllm:drafts=32:order=leftmost-2:lookup=3:detours=128" 32 &
elif [ "${1:-}" = sure ]; then  # the references leftmost=2 sure=T and ssd-dllm against each (lookup, detours=96)
  for t in ${REFS:-0.3 0.5 0.7 0.9}; do run "sure_${t}_ref" "llada:leftmost=2:sure=$t" & done
  for t in ${SSDS:-0.3 0.5 0.7 0.9}; do
    run "sure_${t}_ssd" "ssd-dllm:drafts=16:order=leftmost-2@$t:lookup=3:detours=96" &
  done
elif [ "${1:-}" = chat ]; then  # chat was not among the tasks that chose T = 0.7
  timeout -s INT "${SECONDS_EACH:-500}" python -m lab bench dllm --suite results/dllm_suite.jsonl --tasks chat \
    --device cuda --dtype float32 --max-new-tokens 48 --block-size 16 --out "$OUT/leftmost_sure_0.7_chat.json" \
    --policies "llada:leftmost=2:sure=0.7,ssd-dllm:drafts=16:order=leftmost-2@0.7:lookup=3:detours=96" --no-plots \
    --no-progress > "$LOGS/leftmost_sure_0.7_chat.txt" 2>&1 &
else  # the first run: the references, and ssd-dllm before detour states
  run a "llada:steps=0,llada:leftmost=2" &
  run b "llada:leftmost=3,llada:leftmost=4" &
  run c "ssd-dllm:drafts=16:order=leftmost-2:lookup=3,ssd-dllm:drafts=16:order=leftmost-3:lookup=3,ssd-dllm:drafts=16:order=leftmost-4:lookup=3" &
fi
wait
for f in "$LOGS"/leftmost_*.txt; do grep -v "Loading weights\|Warn\|clean_up\|^|\|^$" "$f" | tail -n 4; done
