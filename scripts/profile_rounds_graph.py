"""Where a graph of greedy speculative rounds (lab/backends/fast/rounds.py) spends its GPU time, against greedy's
own decode steps: for fastdraft's drafts with the trimmed head and with the whole one (`fastdraft:full`).

    python scripts/profile_rounds_graph.py [--suite .whl/chat_suite.jsonl] [--top 14]

For each draft, after sps has run on three chat prompts (the graphs are captured): a replay of its rounds graph
(4 rounds of chains of 2), timed with CUDA events over 20 replays, in target decode steps (a step of greedy's
8-step burst graph, timed the same way), then its kernels under torch.profiler, grouped by name.
"""
from __future__ import annotations

import argparse
import gc
import json

import torch
from profile_graph_kernels import graph_kernels, print_kernels  # scripts/ is on the path when run as a script

from lab.api import Lab
from lab.backends.fast import graphs
from lab.backends.fast.rounds import GreedyRounds


def replay_us(graph, times: int = 20) -> float:
    for _ in range(3):
        graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(times):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default=".whl/chat_suite.jsonl")
    ap.add_argument("--top", type=int, default=14)
    args = ap.parse_args()
    lab = Lab("default", device="cuda", dtype=torch.bfloat16, backend="fast")
    rows = [json.loads(line) for line in open(args.suite) if line.strip()][:3]
    for r in rows:
        lab.generate("greedy", r["prompt"], chat=r["chat"], max_new_tokens=96)
    burst = next(g for o in gc.get_objects() if isinstance(o, graphs.Slab) and len(o.weights.layers) == 30
                 for key, g in (o.graphs or {}).items() if key[0] == "burst" and key[3] == 8)
    step = replay_us(burst.graph) / 8
    print(f"target decode step (greedy's 8-step burst / 8): {step:.1f} us")
    def rounds() -> dict:
        return {id(o): o for o in gc.get_objects() if isinstance(o, GreedyRounds) and o.graph is not None}

    for draft in ("fastdraft", "fastdraft:full"):
        before = rounds()
        for r in rows:
            lab.generate("sps", r["prompt"], chat=r["chat"], max_new_tokens=96, draft=draft, length=2, adaptive=False)
        w = lab.draft(draft).w
        runner = max((o for i, o in rounds().items() if i not in before and o.k == 2), key=lambda o: o.cols.numel())
        total = replay_us(runner.graph)
        print(f"== {draft}: head {tuple(w.head.shape)}; a replay of {runner.rounds} rounds of 2 drafts: {total:.1f} us,"
              f" {total / runner.rounds:.1f} us a round = {total / runner.rounds / step:.2f} target steps")
        busy, kernels = graph_kernels(runner.graph)
        print(f"   kernels {busy:.1f} us a replay ({busy / total:.0%} of it)")
        print_kernels(kernels, args.top)


if __name__ == "__main__":
    main()
