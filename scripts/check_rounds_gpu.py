"""Greedy speculative rounds on the device (lab/backends/fast/rounds.py) on a GPU, in float32 on the default model:
sps and fastdraft give the fast backend's greedy tokens, and at a fixed chain length (with siblings too) the very
drafts and verdicts of the host loop (the HF backend on the same GPU), round for round; the draft's greedy chain (a
Burst) is the HF backend's.

    python scripts/check_rounds_gpu.py [--suite .whl/suite.jsonl] [--prompts 6] [--tokens 64]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from lab.api import Lab
from lab.backends.fast import FastBackend


def rounds_of(trace):
    return [(s.proposed, s.accepted, s.bonus) for s in trace.steps if s.proposed]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default=".whl/suite.jsonl")
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    rows = [json.loads(line) for line in Path(args.suite).read_text().splitlines() if line.strip()][:args.prompts]
    fast = Lab("default", device=args.device, dtype=torch.float32, backend="fast")
    host = Lab(model_obj=fast.model, tokenizer=fast.tokenizer, backend="hf")
    assert isinstance(fast.target, FastBackend)
    lines = []
    for row in rows:
        prompt, chat = row["prompt"], row.get("chat", True)
        want = fast.generate("greedy", prompt, max_new_tokens=args.tokens, chat=chat).tokens
        ids = fast.encode(prompt, chat)
        chains = []
        for lab_ in (fast, host):  # the draft's own greedy chain: a Burst (trimmed head: argmax over its rows) vs HF
            runner = lab_.draft("fastdraft").fork()
            runner.hold(ids[:-1])
            chains.append(runner.greedy_chain(ids[-1], 16)[0])
        line = {"prompt": row["id"], "draft_chain_same_as_hf": chains[0] == chains[1],
                "trimmed_head": type(fast.draft("fastdraft").weights.lm_head).__name__ == "TrimmedLMHead"}
        lines.append(line)
        print(json.dumps(line), flush=True)
        for method, options in (("sps", {"draft": "fastdraft"}), ("fastdraft", {}),
                                ("sps", {"draft": "fastdraft", "length": 3, "adaptive": False}),
                                ("fastdraft", {"length": 2, "adaptive": False, "siblings": True})):
            got = fast.generate(method, prompt, max_new_tokens=args.tokens, chat=chat, **options).trace
            calls = sum(1 for s in got.steps if s.info.get("device_rounds"))
            line = {"prompt": row["id"], "method": method, "options": options, "same_as_greedy": got.tokens == want,
                    "rounds": len(rounds_of(got)), "device_round_steps": calls,
                    "tokens_per_forward": round(got.metrics()["tokens_per_forward"], 3)}
            if "adaptive" in options:  # the HF backend has no device path: the host loop
                ref = host.generate(method, prompt, max_new_tokens=args.tokens, chat=chat, **options).trace
                line["same_rounds_as_host_loop"] = rounds_of(got) == rounds_of(ref)
            lines.append(line)
            print(json.dumps(line), flush=True)
    ok = all(line.get("same_as_greedy", True) and line.get("same_rounds_as_host_loop", True) and
             line.get("draft_chain_same_as_hf", True) for line in lines)
    print(f"float32, {torch.cuda.get_device_name() if args.device == 'cuda' else args.device}: {sum(line.get('same_as_greedy', False) for line in lines)}/{sum('same_as_greedy' in line for line in lines)} "
          f"runs give greedy's tokens; fixed-length runs with the host loop's rounds: "
          f"{sum(line.get('same_rounds_as_host_loop', False) for line in lines)}/{sum('same_rounds_as_host_loop' in line for line in lines)}"
          f"; the draft's greedy chain as on the HF backend: "
          f"{sum(line.get('draft_chain_same_as_hf', False) for line in lines)}/{sum('draft_chain_same_as_hf' in line for line in lines)}"
          f" -> {'OK' if ok else 'MISMATCH'}")


if __name__ == "__main__":
    main()
