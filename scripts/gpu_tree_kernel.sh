#!/usr/bin/env bash
# Issue 8 on the GPU machine: the exact verifier at T = 1 with lab.kernels.tree_rejection (DECODING_LAB_TREE_KERNEL=1)
# (the default on a GPU) and with the batched torch operations of rejection_tree (=0), each run against its own sampling
# baseline on the mixed suite; outputs in $OUT. Run on 2026-12-02: results/t1-tree-kernel-{1,0}-2026-12-02.json.
source scripts/gpu_env.sh
set +eo pipefail
cat /tmp/g/ggpart* > /tmp/g/m.gguf
python -c "from pathlib import Path; from lab import models; models.convert_gguf(Path('/tmp/g/m.gguf'), models.cache_dir() / models.DEFAULT_NAME)" > /dev/null 2>&1
for kernel in 1 0; do
  DECODING_LAB_TREE_KERNEL=$kernel timeout 150 python -m lab bench spec --model default --device cuda \
    --dtype bfloat16 --suite .whl/suite.jsonl --max-new-tokens 64 --no-plots --temperature 1 \
    --methods greedy,fastdraft,specinfer --out "$OUT/t1-tree-kernel-$kernel.json" > "$OUT/t1-$kernel.txt" 2>&1
  grep -v "Warn\|spec bench\|clean_up" "$OUT/t1-$kernel.txt" | tail -7
done
rm -f "$OUT"/*.txt
