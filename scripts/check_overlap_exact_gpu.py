"""The overlapping methods (a draft in a thread beside the target) against greedy on the GPU, in float32, where a
lossless method must give greedy's tokens exactly: SpecBranch in parallel and serialized, and PEARL.

    python scripts/check_overlap_exact_gpu.py [--suite .whl/suite.jsonl] [--prompts 6] [--tokens 32]

On 2026-11-30 (H200) SpecBranch in parallel left greedy's tokens on 4 of 6 prompts (serialized: 6 of 6; PEARL 6 of
6), also under CUDA_LAUNCH_BLOCKING=1; the suspected cause, two threads capturing CUDA graphs on torch's one shared
default capture stream, was fixed after that run (lab/backends/fast/graphs.py `capture`); the re-run gave 6 of 6 for
all three (results/overlap-exact-gpu-2026-11-30.txt), and SpecBranch runs in parallel by default again.
"""
from __future__ import annotations

import argparse
import json

import torch

from lab.api import Lab


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default=".whl/suite.jsonl", help="a `bench spec --write-suite` file")
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--tokens", type=int, default=32)
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(args.suite) if line.strip()][:args.prompts]
    lab = Lab("default", device="cuda", dtype=torch.float32)
    same = {}
    for r in rows:
        want = lab.generate("greedy", r["prompt"], chat=r["chat"], max_new_tokens=args.tokens).tokens
        for name, opts in (("specbranch", {"parallel": True}), ("specbranch", {"parallel": False}), ("pearl", {})):
            got = lab.generate(name, r["prompt"], chat=r["chat"], max_new_tokens=args.tokens, **opts).tokens
            key = f"{name} {opts}"
            same[key] = same.get(key, 0) + (got == want)
            print(r["id"], key, got == want, flush=True)
    for key, n in same.items():
        print(f"{key}: {n}/{len(rows)} identical to greedy")


if __name__ == "__main__":
    main()
