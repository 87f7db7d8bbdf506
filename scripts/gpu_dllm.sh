#!/usr/bin/env bash
# dllm-default on the GPU machine, in calls of under ten minutes made back to back (the machine keeps /tmp while
# warm). Run from the repository root (see ../shared/GPU.md):
#   bash scripts/gpu_dllm.sh stage DIR     # calls 1-4: one piece of the split GGUF to /tmp/g
#   bash scripts/gpu_dllm.sh train DIR     # call 5: the last piece; the default model; the first training job
#   bash scripts/gpu_dllm.sh finish        # call 6: the second job, sized to end inside the call; adapter + manifest
#   bash scripts/gpu_dllm.sh bench DIR B   # after staging: the dLLM bench (float32, block size B, the settings in
#                                          # POLICIES below) on .whl/dllm_suite.jsonl (`bench dllm --write-suite`)
#   bash scripts/gpu_dllm.sh distill DIR   # after staging: dllm-default's own one-token-per-step answers to the
#                                          # prompts of .dd/pairs.jsonl.gz, then two self-distillation jobs side by
#                                          # side from dllm-default (plain, and dParallel's certainty forcing)
#   bash scripts/gpu_dllm.sh benchd        # next call: both distilled models on .whl/dllm_suite40.jsonl, side by side
#   bash scripts/gpu_dllm.sh distill-l2r DIR  # after staging: one plain self-distillation job on dllm-default's own
#                                          # left-to-right one-token-per-step answers
#   bash scripts/gpu_dllm.sh bench-l2r     # next call: it and dllm-default side by side on .whl/dllm_suite.jsonl, the
#                                          # left-to-right reference and the lossless policies verifying against it
# Inputs: .gguf0/ .. .gguf4/ (the GGUF in five pieces: `split -n 5 -d -a 2 FILE ggpart`; the working tree plus a
# piece must fit in one call's 64 MiB; the first four staged, the fifth given to train or bench), .whl/ (the gguf
# wheel), .dd/pairs.jsonl.gz (`python -m lab train dllm-data`). Outputs under $OUT.
source scripts/gpu_env.sh
mkdir -p /tmp/g
RECIPE=(--data .dd/pairs.jsonl.gz --block 4,8,16,32 --seq 512 --batch 32 --lr 3e-4 --warmup 100 --rank 16 --alpha 32
        --every 250 --val 256 --device cuda --attention flex)

POLICIES="llada:steps=24,fast-dllm:threshold=0.9,fast-dllm:threshold=0.7,fast-dllm:factor=1.0,\
fast-dllm:threshold=0.9:block_size=4,fast-dllm:threshold=0.9:block_size=16,dream:steps=24,prophet,freedave,\
freedave:drafts=8,freedave:drafts=16:block_size=16,ssd-dllm,ssd-dllm:drafts=8,dinfer,lopa,localleap,wedlm,deer,apd,\
learn2pd,tracelock"

DISTILL=(--init dllm-default --data /tmp/traj.jsonl.gz --block 8,16 --seq 384 --batch 32 --lr 1e-4 --warmup 50
         --every 200 --val 256 --device cuda --attention flex)
L2R_POLICIES="llada:remasking=left_to_right,freedave:drafts=8:order=left-to-right,\
ssd-dllm:drafts=8:order=left-to-right,freedave:drafts=8,fast-dllm:threshold=0.9"
DISTILL_POLICIES="fast-dllm:threshold=0.9,fast-dllm:threshold=0.8,fast-dllm:threshold=0.7,fast-dllm:threshold=0.5,\
fast-dllm:factor=1.0,fast-dllm:threshold=0.9:block_size=16,fast-dllm:threshold=0.7:block_size=16,prophet,\
freedave:drafts=8,ssd-dllm:drafts=8,freedave:drafts=16:block_size=16,dinfer,localleap,lopa"

convert() {  # the fifth piece, the GGUF whole again, the default model's cache
  cp "$1"/* /tmp/g/
  cat /tmp/g/ggpart0* > /tmp/g/m.gguf && md5sum /tmp/g/m.gguf
  python -c "from pathlib import Path; from lab import models; \
models.convert_gguf(Path('/tmp/g/m.gguf'), models.cache_dir() / models.DEFAULT_NAME)" 2>&1 | tail -n 1
}

export_checkpoint() {  # the LoRA of the newest checkpoint as bfloat16 (a run that dies later still brings it back)
  python - "$1" <<'PY'
import sys, torch
from safetensors.torch import save_file
ck = torch.load("/tmp/dllm/checkpoint.pt", map_location="cpu", weights_only=False)
save_file({n: t.to(torch.bfloat16).contiguous() for n, t in ck["lora"].items()}, sys.argv[1] + "/adapter_partial.safetensors")
st = ck["state"]
print("step", st["step"], "tokens", st["tokens"], "seconds", round(st["seconds"], 1), "validation", st["validation"][-3:])
open(sys.argv[1] + "/history.json", "w").write(__import__("json").dumps(st))
PY
}

case "$1" in
  stage)
    cp "$2"/* /tmp/g/ && ls -la /tmp/g && nvidia-smi --query-gpu=name,memory.used --format=csv
    if [ "${3:-}" = smoke ]; then  # the recipe on a tiny model with the default vocabulary: flex masks on CUDA
      python -c "from lab.models import tiny; tiny('llama', vocab_size=49152, layers=2, hidden=64).save_pretrained('/tmp/tiny')"
      python -m lab train dllm --out /tmp/smoke --model /tmp/tiny "${RECIPE[@]}" --steps 30 --every 15 --val 32 2>&1 \
        | grep -v "Loading weights" | tail -n 5
    fi
    ;;
  train)
    cp "$2"/* /tmp/g/
    cat /tmp/g/ggpart0* > /tmp/g/m.gguf && md5sum /tmp/g/m.gguf
    python -c "from pathlib import Path; from lab import models; \
models.convert_gguf(Path('/tmp/g/m.gguf'), models.cache_dir() / models.DEFAULT_NAME)"
    python -m lab train dllm --out /tmp/dllm "${RECIPE[@]}" --steps 100000 --minutes "${3:-8.2}" 2>&1 \
      | grep -v "Loading weights" | tail -n 20
    export_checkpoint "$OUT"
    ;;
  bench)
    cp "$2"/* /tmp/g/
    cat /tmp/g/ggpart0* > /tmp/g/m.gguf && md5sum /tmp/g/m.gguf
    python -c "from pathlib import Path; from lab import models; \
models.convert_gguf(Path('/tmp/g/m.gguf'), models.cache_dir() / models.DEFAULT_NAME)" 2>&1 | tail -n 1
    timeout -s INT "${4:-450}" python -m lab bench dllm --suite .whl/dllm_suite.jsonl --device cuda --dtype float32 --max-new-tokens 48 \
      --block-size "$3" --policies "$POLICIES" --out "$OUT/dllm_bench.json" --no-plots --no-progress 2>&1 | grep -v "Loading weights" | tail -n 40
    ;;
  distill)
    convert "$2"
    python -m lab train dllm-trajectories --prompts .dd/pairs.jsonl.gz --out /tmp/traj.jsonl.gz --length 48 --block 8 \
      --batch 256 --device cuda --dtype bfloat16 --minutes "${3:-2}" 2>&1 | grep -v "Loading weights" | tail -n 4
    cp /tmp/traj.jsonl.gz "$OUT/"
    for beta in 0 1; do
      python -m lab train dllm --out /tmp/d$beta "${DISTILL[@]}" --certainty $beta --steps "${4:-600}" \
        --minutes "${5:-6}" > /tmp/d$beta.log 2>&1 &
    done
    wait
    for beta in 0 1; do
      grep -v "Loading weights" /tmp/d$beta.log | tail -n 4
      if [ ! -e /tmp/d$beta/adapter.safetensors ]; then  # out of time: finish at the step it reached
        at=$(python -c "import torch; print(torch.load('/tmp/d$beta/checkpoint.pt', weights_only=False)['state']['step'])")
        python -m lab train dllm --out /tmp/d$beta "${DISTILL[@]}" --certainty $beta --steps "$at" 2>&1 | tail -n 1
      fi
      mkdir -p "$OUT/d$beta" && cp /tmp/d$beta/adapter.safetensors /tmp/d$beta/manifest.json "$OUT/d$beta/" 2>/dev/null \
        || echo "d$beta did not finish"
    done
    ;;
  distill-l2r)
    convert "$2"
    python -m lab train dllm-trajectories --prompts "${6:-.dd/pairs.jsonl.gz}" --out /tmp/traj.jsonl.gz --length 48 --block 8 \
      --batch 256 --device cuda --dtype bfloat16 --order left-to-right --minutes "${3:-1}" 2>&1 \
      | grep -v "Loading weights" | tail -n 2
    cp /tmp/traj.jsonl.gz "$OUT/traj_l2r.jsonl.gz"
    python -m lab train dllm --out /tmp/d0 "${DISTILL[@]}" --certainty 0 --steps "${4:-500}" --minutes "${5:-2.6}" 2>&1 \
      | grep -v "Loading weights" | tail -n 3
    if [ ! -e /tmp/d0/adapter.safetensors ]; then  # out of time: finish at the step it reached
      at=$(python -c "import torch; print(torch.load('/tmp/d0/checkpoint.pt', weights_only=False)['state']['step'])")
      python -m lab train dllm --out /tmp/d0 "${DISTILL[@]}" --certainty 0 --steps "$at" 2>&1 | tail -n 1
    fi
    mkdir -p "$OUT/l2r" && cp /tmp/d0/adapter.safetensors /tmp/d0/manifest.json "$OUT/l2r/"
    ;;
  bench-l2r)
    for model in /tmp/d0 dllm-default; do
      name=$(basename $model)
      timeout -s INT "${2:-200}" python -m lab bench dllm --model $model --suite .whl/dllm_suite.jsonl \
        --device cuda --dtype float32 --max-new-tokens 48 --block-size 8 --policies "$L2R_POLICIES" \
        --out "$OUT/dllm_bench_l2r_$name.json" --no-plots --no-progress > /tmp/b_$name.log 2>&1 &
    done
    wait
    for name in d0 dllm-default; do grep -v "Loading weights" /tmp/b_$name.log | tail -n 10; done
    ;;
  benchd)
    for beta in 0 1; do
      timeout -s INT "${2:-480}" python -m lab bench dllm --model /tmp/d$beta --suite .whl/dllm_suite40.jsonl \
        --device cuda --dtype float32 --max-new-tokens 48 --block-size 8 --policies "$DISTILL_POLICIES" \
        --out "$OUT/dllm_bench_d$beta.json" --no-plots --no-progress > /tmp/b$beta.log 2>&1 &
    done
    wait
    for beta in 0 1; do grep -v "Loading weights" /tmp/b$beta.log | tail -n 22; done
    ;;
  finish)
    steps=$(python -c "
import torch; st = torch.load('/tmp/dllm/checkpoint.pt', map_location='cpu', weights_only=False)['state']
rate = st['step'] / st['seconds']; print(st['step'] + int(rate * 60 * ${2:-8.3} * 0.93))")
    echo "finishing at step $steps"
    python -m lab train dllm --out /tmp/dllm "${RECIPE[@]}" --steps "$steps" --minutes 9.3 2>&1 \
      | grep -v "Loading weights" | tail -n 20
    export_checkpoint "$OUT"
    cp /tmp/dllm/adapter.safetensors /tmp/dllm/manifest.json "$OUT/" 2>/dev/null || true
    ls -la "$OUT"
    ;;
esac
