#!/usr/bin/env bash
# FastDraft for the default model on the GPU machine, in calls of under ten minutes made back to back
# (the machine keeps /tmp while warm). Run from the repository root with PYTHONPATH=. (see ../shared/GPU.md):
#   bash scripts/gpu_fastdraft.sh stage    # call 1: the GGUF's first half to /tmp, a tiny training smoke on CUDA
#   bash scripts/gpu_fastdraft.sh data     # call 2: the default model; its answers to 6,650 ShareGPT prompts outside
#                                          #         the benchmark (train) and 256 inside it (validation); SAM's corpus
#   bash scripts/gpu_fastdraft.sh train M S  # call 3: three candidate drafts trained side by side (S steps, M minutes at most),
#                                          #         compared (scripts/compare_drafts.py); the best one exported
# Inputs: .gguf1/ and .gguf2/ (the GGUF split with `split -b 50000000`), .whl/ (the gguf wheel), .device/*_q.jsonl
# (python -m lab train responses --write-questions ...). Outputs under $OUT.
# A second schedule from the shipped draft (2026-12-03), with the GGUF's halves already in /tmp/g/ggpart*:
#   bash scripts/gpu_fastdraft.sh answers   # the validation answers, the greedy training answers and as many again
#                                           # sampled at T = 1 (6.6 minutes on the H200)
#   bash scripts/gpu_fastdraft.sh more M S  # from lab/data/fastdraft, S steps (M minutes at most) on both answer sets
#                                           # (one job alone: 2,000 steps in 174 s);
#                                           # the head trimmed again and both heads measured (train draft-vocab),
#                                           # beside the shipped draft's on the same answers
#   bash scripts/gpu_fastdraft.sh check     # with the new draft in lab/data/fastdraft: the draft step's GPU time over
#                                           # the target's, the draft cost through the host's bursts and sps, the
#                                           # device rounds in float32, the mixed suite at T = 0
source scripts/gpu_env.sh
mkdir -p /tmp/data

case "$1" in
  stage)
    mkdir -p /tmp/g && cp .gguf1/* /tmp/g/
    python - <<'EOF'
import torch
from lab.models import tiny
from lab.train.fastdraft import train, validate
t = tiny("llama", vocab_size=64, layers=4, hidden=64, seed=1, init_std=0.3).cuda().to(torch.bfloat16)
g = torch.Generator().manual_seed(0)
rows = []
for i in range(64):
    p = torch.randint(1, 64, (8,), generator=g)
    r = t.generate(p[None].cuda(), attention_mask=torch.ones(1, 8, dtype=torch.long, device="cuda"),
                   max_new_tokens=16, do_sample=False)[0, 8:].tolist()
    rows.append({"prompt": p.tolist(), "response": r})
before = validate(t, __import__("lab.drafts", fromlist=["x"]).draft_model(t, [0]), rows[:16], 0)
d, s = train(t, None, rows[16:], rows[:16], __import__("pathlib").Path("/tmp/smoke"), [0], steps=200, minutes=2,
             batch=16, max_len=32, lr=3e-3, progress=False, validate_every=100)
print("cuda smoke: before", before, "after", s["log"][-1])
EOF
    ;;
  data)
    cat /tmp/g/gguf.part.aa .gguf2/gguf.part.ab > /tmp/g/SmolLM2-135M-Instruct.Q4_1.gguf
    md5sum /tmp/g/SmolLM2-135M-Instruct.Q4_1.gguf
    [ -e /tmp/cache/SmolLM2-135M-Instruct/config.json ] || python -c "from pathlib import Path; from lab import models; \
models.convert_gguf(Path('/tmp/g/SmolLM2-135M-Instruct.Q4_1.gguf'), models.cache_dir() / models.DEFAULT_NAME)"
    [ -s /tmp/data/val.jsonl ] || python -m lab train responses --questions .device/val_q.jsonl --held-out --count 256 --out /tmp/data/val.jsonl \
      --device cuda --batch 256 --tokens 160
    python -m lab train responses --questions .device/train_q.jsonl --count 7000 --out /tmp/data/train.jsonl \
      --device cuda --batch 512 --tokens 160 --corpus "$OUT/sam_corpus.json" --corpus-count 1200
    python - <<'PY'  # the step rate of one 3-layer job, to size the training call
import time
from pathlib import Path
from lab import models
from lab.train.fastdraft import train
from lab.train.responses import read
t, tok = models.load("default", "cuda")
rows = read("/tmp/data/train.jsonl")
start = time.time()
train(t, tok, rows, [], Path("/tmp/rate"), [0, 1, 29], steps=40, minutes=2, batch=32, max_len=384, lr=6e-4, progress=False)
print(f"rate: {40 / (time.time() - start):.1f} steps/s (3 layers, batch 32, one job)")
PY
    gzip -c /tmp/data/train.jsonl > "$OUT/train.jsonl.gz"; gzip -c /tmp/data/val.jsonl > "$OUT/val.jsonl.gz"
    ls -la "$OUT"
    ;;
  train)
    minutes=${2:-5}
    for spec in "a:0,29" "b:0,1,29" "c:0,1,2,29"; do
      name=${spec%%:*}; layers=${spec#*:}
      python -m lab train fastdraft --data /tmp/data/train.jsonl --val /tmp/data/val.jsonl --out /tmp/ck/$name \
        --layers "$layers" --minutes "$minutes" --steps "${3:-3000}" --validate-every 1000 --device cuda \
        --export /tmp/fd/$name > /tmp/train_$name.log 2>&1 &
    done
    wait
    tail -n 4 /tmp/train_*.log
    cp /tmp/train_*.log "$OUT/" 2>/dev/null || true
    python scripts/compare_drafts.py --val /tmp/data/val.jsonl --drafts /tmp/fd/a /tmp/fd/b /tmp/fd/c \
      --out "$OUT/compare_drafts.json"
    ;;
  answers)
    [ -e /tmp/g/m.gguf ] || cat /tmp/g/ggpart* > /tmp/g/m.gguf
    python -c "from pathlib import Path; from lab import models; \
models.convert_gguf(Path('/tmp/g/m.gguf'), models.cache_dir() / models.DEFAULT_NAME)" > /dev/null 2>&1
    python -m lab train responses --questions .whl/val_q.jsonl --count 256 --out /tmp/data/val.jsonl --device cuda \
      --batch 256 --tokens 160 | tail -1
    python -m lab train responses --questions .whl/train_q.jsonl --count 7000 --out /tmp/data/train.jsonl \
      --device cuda --batch 512 --tokens 160 | tail -1
    python -m lab train responses --questions .whl/train_q.jsonl --count 7000 --out /tmp/data/sampled.jsonl \
      --device cuda --batch 512 --tokens 160 --temperature 1 --seed 1 | tail -1
    for f in val train sampled; do gzip -c /tmp/data/$f.jsonl > "$OUT/$f.jsonl.gz"; done
    ;;
  more)
    cat /tmp/data/train.jsonl /tmp/data/sampled.jsonl > /tmp/data/both.jsonl
    python -m lab train fastdraft --data /tmp/data/both.jsonl --val /tmp/data/val.jsonl --out /tmp/ck/more \
      --layers 0,1,2,29 --init lab/data/fastdraft --lr 3e-4 --seed 1 --minutes "${2:-7}" --steps "${3:-3000}" \
      --validate-every 500 --device cuda --export /tmp/fd/more 2>&1 | grep -v "Warn\|clean_up" | tail -12
    head -n 6000 /tmp/data/train.jsonl > /tmp/cal.jsonl  # the calibration answers: the same 6,000 questions as before
    python -m lab train draft-vocab --draft /tmp/fd/more --corpus /tmp/cal.jsonl --keep 16384 \
      --val /tmp/data/val.jsonl --device cuda > "$OUT/draft-vocab.txt" 2>&1
    python -m lab train draft-vocab --corpus /tmp/cal.jsonl --keep 16384 --val /tmp/data/val.jsonl --device cuda \
      --dry-run > "$OUT/draft-vocab-shipped.txt" 2>&1  # the shipped draft on the same answers, side by side
    for f in "$OUT"/draft-vocab*.txt; do echo "== $f"; grep -A12 '"full_head"' "$f"; done
    cp /tmp/fd/more/* "$OUT/"
    ;;
  check)  # gpu_fused_ends.sh's measurements, fused ends on, with the draft now in lab/data/fastdraft
    FES=1 SWEEP=0 bash scripts/gpu_fused_ends.sh cost
    bash scripts/gpu_fused_ends.sh bench
    ;;
esac
