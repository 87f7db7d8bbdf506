"""The min-p sampler's launch plan on a GPU: each (ranges a row, block) against the plan `sampling.plan` picks, at the
bench's shape and inputs, timed eagerly (triton.testing.do_bench) and as a CUDA graph, each checked against the torch
reference on the same noise.

    python scripts/sweep_min_p.py [--rows 64] [--vocab 128256]
"""
from __future__ import annotations

import argparse
import json

import torch

from lab.bench.gpu import graph_us
from lab.kernels import sampling


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--scale", type=float, default=1.0, help="logits ~ N(0, scale^2): 1 is the bench's (about 2%% of "
                    "tokens kept at T 0.8, min_p 0.05); larger scales keep fewer, and fewer noise values are read")
    args = ap.parse_args()
    from triton.testing import do_bench

    g = torch.Generator(device="cuda").manual_seed(0)
    logits = torch.randn(args.rows, args.vocab, device="cuda", generator=g) * args.scale
    noise = torch.empty_like(logits).exponential_(generator=g)
    want = sampling.sample_min_p_reference(logits, 0.8, 0.05, noise)
    torch_us = do_bench(lambda: sampling.sample_min_p_reference(logits, 0.8, 0.05, noise)) * 1000
    plan = sampling.plan(args.rows, args.vocab, torch.cuda.get_device_properties(0).multi_processor_count)
    print(json.dumps({"shape": [args.rows, args.vocab], "torch_us": round(torch_us, 1), "plan": plan}))
    for block in (1024, 2048, 4096):
        for splits in (None, 2, 4, 8, 16, 32, 64):
            if splits is not None and splits * block > 2 * args.vocab:
                continue
            fn = lambda: sampling.sample_min_p(logits, 0.8, 0.05, noise, splits=splits, block=block)  # noqa: E731
            same = bool((fn() == want).all())
            us = do_bench(fn) * 1000
            print(json.dumps({"block": block, "splits": splits or "plan", "us": round(us, 1),
                              "graph_us": graph_us(fn), "vs_torch": round(torch_us / us, 2), "same": same}))


if __name__ == "__main__":
    main()
