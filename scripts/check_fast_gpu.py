"""The fast backend on a GPU (fused kernels, captured graphs) against the HF backend in float32, random weights of a
real shape: the largest logit difference over every kind of forward, each forward run enough times to be replayed.

    python scripts/check_fast_gpu.py [--shape smollm2] [--gemv-rows 8]
"""
from __future__ import annotations

import argparse
import json

import torch

from lab.backends.fast import FastBackend
from lab.backends.hf import HFBackend
from lab.bench.gpu import load


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="smollm2")
    parser.add_argument("--gemv-rows", type=int, default=1, help="forwards of up to this many new tokens through the "
                        "matrix-vector kernels (Weights.gemv_rows)")
    args = parser.parse_args()
    model, _, _ = load(f"random:{args.shape}", torch.float32)
    hf, fast = HFBackend(model), FastBackend(model)
    fast.w.gemv_rows = args.gemv_rows
    print("fused:", fast.w.fused, "graphs:", fast.graphs)
    prompt = torch.randint(10, 1000, (300,), generator=torch.Generator().manual_seed(0)).tolist()
    worst: dict[str, float] = {}

    def diff(name, a, b):
        worst[name] = max(worst.get(name, 0.0), float((a - b).abs().max()))

    for _ in range(4):  # graphs are captured on the third ask
        diff("prefill", hf.prefill(prompt), fast.prefill(prompt))
        diff("decode", hf.decode(5), fast.decode(5))
        diff("chain", hf.forward([6, 7, 8]).logits, fast.forward([6, 7, 8]).logits)
        tree = ([9, 10, 11, 12, 13], [-1, 0, 0, 1, 2])
        diff("tree", hf.forward(*tree).logits, fast.forward(*tree).logits)
        hf.keep([0, 2, 4]), fast.keep([0, 2, 4])
        diff("after keep", hf.decode(14), fast.decode(14))
        visible = torch.rand(len(hf.ids), generator=torch.Generator().manual_seed(1)) > 0.2
        diff("visible", hf.forward([3], visible=visible).logits, fast.forward([3], visible=visible).logits)
        diff("block", hf.forward([4, 5, 6], among="block").logits, fast.forward([4, 5, 6], among="block").logits)
        diff("decode after", hf.decode(7), fast.decode(7))
    print("graphs captured:", len(fast.slab.graphs))
    print(json.dumps(worst, indent=1))
    # greedy bursts (one graph of 8 argmax steps) against 8 single steps, and against the HF backend
    runs = {}
    for name, backend in (("burst", fast), ("steps", FastBackend(model)), ("hf", hf)):
        backend.prefill(prompt)
        token, out = 5, []
        for _ in range(6):
            got = backend.greedy_run(token, 8) if name != "steps" else \
                [int(backend.decode(t).argmax()) for t in [token]] + []
            if name == "steps":
                for _ in range(7):
                    got.append(int(backend.decode(got[-1]).argmax()))
            out += got
            token = got[-1]
        runs[name] = out
    print("burst == steps:", runs["burst"] == runs["steps"], "burst == hf:", runs["burst"] == runs["hf"])
    print("first 16:", runs["burst"][:16])
    # draft chains (bursts of 8, 4, 2, 1 steps with each token's probability) against the HF backend's loop, for
    # every length 1..13, then a decode after each (the cache the bursts left)
    fast.prefill(prompt), hf.prefill(prompt)
    same, prob_gap = True, 0.0
    token = 5
    for n in list(range(1, 14)) * 2:
        a, pa = fast.greedy_chain(token, n)
        b, pb = hf.greedy_chain(token, n)
        same &= a == b
        prob_gap = max(prob_gap, max(abs(x - y) for x, y in zip(pa, pb)))
        diff("decode after chain", hf.decode(b[-1]), fast.decode(a[-1]))
        fast.rollback(len(fast.ids) - 1), hf.rollback(len(hf.ids) - 1)  # drop that decode
        token = b[-1]
    print("chains == hf:", same, "largest probability gap:", prob_gap,
          "decode after chain:", worst["decode after chain"])


if __name__ == "__main__":
    main()
