"""Where a captured graph's GPU time goes, kernel by kernel (torch.profiler, 10 replays), for the graphs a
speculative round replays on the default model: the target's verification of a chain (8 new tokens) and the
4-layer FastDraft's burst of 4 greedy steps with their probabilities.

    python scripts/profile_graph_kernels.py [--suite .whl/chat_suite.jsonl] [--top 18] [--gemv-rows 8] [--bursts]

`--gemv-rows 8` sends the target's forwards of up to 8 new tokens through the matrix-vector kernels (fused.gemv_rows)
instead of cuBLAS: compare the verification graph's time with and without it. `--bursts` profiles instead the two
bursts of 8 steps that a draft step's cost compares (scripts/compare_drafts.py): the target's greedy steps and the
draft's chain (tokens and probabilities), each with its kernels a step and its replay's GPU time a step (CUDA events,
median of 50 replays: the kernels and the gaps between them); run it with DECODING_LAB_FUSED_ENDS=0 and 1 to compare
the fused ends of a step (Weights.fused_ends).
"""
from __future__ import annotations

import argparse
import gc
import json

import torch
from torch.profiler import ProfilerActivity, profile

from lab.api import Lab
from lab.backends.fast import graphs
from lab.bench.gpu import replay_us


def graph_kernels(graph, replays: int = 10) -> tuple[float, list]:
    """A captured graph's kernels under torch.profiler (after 3 warm replays): us of kernel time a replay, and the
    profiler's per-kernel averages, slowest first (their times summed over `replays`)."""
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            graph.replay()
        torch.cuda.synchronize()
    kernels = sorted(prof.key_averages(), key=lambda e: -e.self_device_time_total)
    return sum(e.self_device_time_total for e in kernels) / replays, kernels


def print_kernels(kernels: list, top: int, replays: int = 10) -> None:
    for e in kernels[:top]:
        print(f"   {e.self_device_time_total / replays:8.1f} us  {e.count / replays:6.1f} calls  {e.key[:90]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default=".whl/chat_suite.jsonl")
    ap.add_argument("--top", type=int, default=18)
    ap.add_argument("--gemv-rows", type=int, default=1)
    ap.add_argument("--bursts", action="store_true")
    args = ap.parse_args()
    lab = Lab("default", device="cuda", dtype=torch.bfloat16, backend="fast")
    lab.target.w.gemv_rows = args.gemv_rows
    rows = [json.loads(line) for line in open(args.suite) if line.strip()][:3]
    if args.bursts:
        return bursts(lab, rows[0], args.top)
    for r in rows:
        lab.generate("sps", r["prompt"], chat=r["chat"], max_new_tokens=96)
    for slab in [o for o in gc.get_objects() if isinstance(o, graphs.Slab)]:
        layers = len(slab.weights.layers)
        for key, g in (slab.graphs or {}).items():
            name = tuple(len(x) if isinstance(x, tuple) else x for x in key)
            draft_burst = name[0] == "burst" and layers < 30 and name[3] == 4
            verify = name[0] != "burst" and layers == 30 and name[1] == 8
            if not (draft_burst or verify):
                continue
            total, kernels = graph_kernels(g.graph)
            print(f"== {layers} layers, graph {name}: {total:.1f} us of kernels a replay")
            print_kernels(kernels, args.top)


def bursts(lab, row: dict, top: int) -> None:
    """The target's greedy burst and the trained draft's chain burst of 8 steps after one prompt: GPU time and
    kernels a step, and the draft's over the target's."""
    ids = lab.encode(row["prompt"], True)
    draft = lab.draft("fastdraft")
    fused = lab.target.w.fused_ends
    per_step = {}
    for name, backend, probs in (("target greedy", lab.target, False), ("draft chain", draft, True)):
        fork = backend.fork()
        fork.prefill(ids)
        (fork.greedy_chain if probs else fork.greedy_run)(ids[-1], 8)  # captures the burst
        burst = next(g for key, g in fork.slab.graphs.items() if key[0] == "burst" and key[3] == 8 and key[4] == probs)
        total, kernels = graph_kernels(burst.graph)
        calls = sum(e.count for e in kernels) / 10
        per_step[name] = replay_us(burst.graph) / 8
        print(f"== {name}, fused ends {fused}: {per_step[name]:.1f} us a step (GPU, replay / 8), "
              f"{total / 8:.1f} us of kernels and {calls / 8:.1f} kernels a step")
        print_kernels(kernels, top)
    print(f"draft step / target step (GPU time): {per_step['draft chain'] / per_step['target greedy']:.3f}")


if __name__ == "__main__":
    main()
