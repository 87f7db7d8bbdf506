"""Host time of speculative methods per step on the fast backend (CPU, a tiny model whose forwards cost little), and
where it goes (cProfile): what a method adds to each target forward besides the forward itself.

    python scripts/profile_drafter_host.py [--methods greedy,pld,sam,token-recycling] [--top 12]
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import torch

from lab.api import Lab
from lab.models import tiny


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", default="greedy,pld,sam,token-recycling")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(1)
    lab = Lab(model_obj=tiny("llama", vocab_size=96, layers=2, seed=3), backend="fast")
    prompt = [5, 9, 14, 22, 31, 7, 8, 40, 41, 42, 43, 44] * 6
    for name in args.methods.split(","):
        lab.generate(name, prompt, max_new_tokens=64)  # first-call costs
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.enable()
        trace = lab.generate(name, prompt, max_new_tokens=128).trace
        profiler.disable()
        seconds = time.perf_counter() - start
        print(f"\n== {name}: {1000 * seconds / trace.forwards:.3f} ms a target forward under cProfile "
              f"({trace.forwards} forwards, {trace.new_tokens} tokens)")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
