"""The tree rejection kernels compiled on a GPU against their reference (`lab.kernels.tree_rejection`), on the
tests' random trees (`tree_rejection.random_inputs`, up to 32 nodes) at vocabularies from 8 to Llama-3's. Prints
the count of equal outputs (leaf, depth, end row, token) per vocabulary.

    python scripts/check_tree_rejection_gpu.py [--trials 200]
"""
from __future__ import annotations

import argparse
import json

import torch

from lab.kernels import tree_rejection as tr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=200)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    for vocab in (8, 1000, 49152, 128256):
        same, depths = 0, set()
        trials = args.trials if vocab < 100000 else args.trials // 4
        for trial in range(trials):
            inputs = tuple(x.cuda() for x in tr.random_inputs(g, vocab, trial, most=32))
            want = tr.tree_rejection_reference(*inputs)
            got = tr.tree_rejection(*inputs)
            same += bool(torch.equal(want, got))
            depths.add(int(want[1]))
        print(json.dumps({"vocab": vocab, "trials": trials, "equal": same, "depths": sorted(depths)}), flush=True)


if __name__ == "__main__":
    main()
