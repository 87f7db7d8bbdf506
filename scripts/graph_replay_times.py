"""What a captured graph of the fast backend costs on a GPU: the host's time to launch one replay (the GPU idle
before it) and the GPU's time per replay (30 back to back), for every graph that greedy, sps and pld capture on the
default model (the target's 30 layers and the 4-layer FastDraft; keys: layers, new tokens, columns, or a burst's
columns, steps and whether it returns probabilities).

    python scripts/graph_replay_times.py [--suite .whl/chat_suite.jsonl]
"""
from __future__ import annotations

import argparse
import gc
import json
import time

import torch

from lab.api import Lab
from lab.backends.fast import graphs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default=".whl/chat_suite.jsonl")
    args = ap.parse_args()
    lab = Lab("default", device="cuda", dtype=torch.bfloat16, backend="fast")
    row = json.loads(open(args.suite).readline())
    for method in ("greedy", "sps", "pld"):
        lab.generate(method, row["prompt"], chat=row["chat"], max_new_tokens=64)
    for slab in [o for o in gc.get_objects() if isinstance(o, graphs.Slab)]:
        for key, g in (slab.graphs or {}).items():
            for _ in range(3):
                g.graph.replay()
            host = []
            for _ in range(30):
                torch.cuda.synchronize()
                start = time.perf_counter()
                g.graph.replay()
                host.append(time.perf_counter() - start)
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(30):
                g.graph.replay()
            torch.cuda.synchronize()
            gpu = (time.perf_counter() - start) / 30
            name = tuple(len(x) if isinstance(x, tuple) else x for x in key)
            print(f"layers {len(slab.weights.layers)} key {str(name):32s} launch {sorted(host)[15] * 1e6:7.1f} us "
                  f"(GPU idle before), GPU {gpu * 1e6:8.1f} us a replay")


if __name__ == "__main__":
    main()
