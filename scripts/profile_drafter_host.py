"""Host time of speculative methods per step on the fast backend, and where it goes (cProfile): what a method adds
to each target forward besides the forward itself.

On the CPU (the default) a tiny model whose forwards cost little shows the Python work alone. With `--model default
--device cuda` it profiles the real model on the GPU: time inside calls that read the GPU back (`tolist`, `item`)
is then time the host waited for the device, and the rest is host work the device waited for.

    python scripts/profile_drafter_host.py [--methods greedy,pld,sam,token-recycling] [--top 12]
    python scripts/profile_drafter_host.py --model default --device cuda --suite .whl/chat_suite.jsonl --methods greedy,sps
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time

import torch

from lab.api import Lab
from lab.models import tiny


def prompts(args: argparse.Namespace, lab: Lab) -> list[list[int]]:
    """Token ids to decode: the suite's first prompts (chat template as the suite says), or a repetitive toy one."""
    if not args.suite:
        return [[5, 9, 14, 22, 31, 7, 8, 40, 41, 42, 43, 44] * 6]
    with open(args.suite) as f:
        rows = [json.loads(line) for line in f if line.strip()][:args.prompts]
    return [lab.encode(r["prompt"], chat=bool(r.get("chat", False))) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", default="greedy,pld,sam,token-recycling")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--model", help="a model name (default: a tiny random Llama on the CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--suite", help="a bench suite .jsonl whose first --prompts prompts to decode")
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    if args.model:
        lab = Lab(args.model, device=args.device, dtype=torch.bfloat16 if args.device != "cpu" else None,
                  backend="fast")
    else:
        lab = Lab(model_obj=tiny("llama", vocab_size=96, layers=2, seed=3), backend="fast")
    ids = prompts(args, lab)
    for name in args.methods.split(","):
        lab.generate(name, ids[0], max_new_tokens=args.tokens)  # first-call costs: graphs, drafts
        profiler = cProfile.Profile()
        forwards = tokens = 0
        start = time.perf_counter()
        profiler.enable()
        for prompt in ids:
            trace = lab.generate(name, prompt, max_new_tokens=args.tokens).trace
            forwards, tokens = forwards + trace.forwards, tokens + trace.new_tokens
        profiler.disable()
        seconds = time.perf_counter() - start
        print(f"\n== {name}: {1000 * seconds / forwards:.3f} ms a target forward, {tokens / seconds:.1f} tokens/s under "
              f"cProfile ({forwards} forwards, {tokens} tokens, {len(ids)} prompts)")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
