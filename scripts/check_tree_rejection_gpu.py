"""The tree rejection kernels compiled on a GPU against their reference (`lab.kernels.tree_rejection`), on random
trees: chains, bushy trees whose drafts are near the target (later siblings tried, and passing), fixed and drawn
nodes, rows where q == p, nodes without rows, at vocabularies from 8 to Llama-3's. Prints the count of equal
outputs (leaf, depth, end row, token) per vocabulary.

    python scripts/check_tree_rejection_gpu.py [--trials 200]
"""
from __future__ import annotations

import argparse
import json

import torch

from lab.kernels import tree_rejection as tr


def case(g: torch.Generator, vocab: int, trial: int, device: str) -> tuple:
    n = int(torch.randint(0, 33, (), generator=g))
    bushy = trial % 2
    parents = [int(torch.randint(-1, min(i, 2) if bushy else i, (), generator=g)) if i else -1 for i in range(n)]
    rows = n + 1 if trial % 4 else max(1, n - 1)
    p = (torch.randn(n + 1, vocab, generator=g) * 1.5).softmax(-1)
    drawn = [bool(torch.rand((), generator=g) < 0.7) for _ in range(n)]
    q = torch.stack([(p[parents[i] + 1].log() * bushy + torch.randn(vocab, generator=g) * (0.7 if bushy else 2))
                     .softmax(-1) for i in range(n) if drawn[i]]) if any(drawn) else torch.zeros(0, vocab)
    index = torch.tensor([sum(drawn[:i]) if d else -1 for i, d in enumerate(drawn)], dtype=torch.long)
    for i in range(n):
        if drawn[i] and trial % 3 == 0:
            q[index[i]] = p[parents[i] + 1]
    tokens = torch.stack([torch.multinomial(q[index[i]], 1, generator=g)[0] if drawn[i]
                          else torch.randint(vocab, (), generator=g) for i in range(n)]) if n else \
        torch.zeros(0, dtype=torch.long)
    args = (torch.tensor(parents, dtype=torch.long), tokens, q, index, p[:rows], torch.rand(n, generator=g),
            torch.empty(vocab).exponential_(generator=g))
    return tuple(a.to(device) for a in args)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=200)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    for vocab in (8, 1000, 49152, 128256):
        same, depths = 0, set()
        trials = args.trials if vocab < 100000 else args.trials // 4
        for trial in range(trials):
            inputs = case(g, vocab, trial, "cuda")
            want = tr.tree_rejection_reference(*inputs)
            got = tr.tree_rejection(*inputs)
            same += bool(torch.equal(want, got))
            depths.add(int(want[1]))
        print(json.dumps({"vocab": vocab, "trials": trials, "equal": same, "depths": sorted(depths)}), flush=True)


if __name__ == "__main__":
    main()
