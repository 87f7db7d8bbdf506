"""Where a decode step of the fast backend spends its time on a GPU (random weights of a real shape).

    python scripts/profile_fast_step.py [--shape smollm2] [--tokens 128] [--out DIR]

Measures, per generated token: the captured graph's replay alone (device time), the backend's `decode` with the
argmax read back each step (device + host of the backend), and the lab's `greedy` through `Lab.generate` (all host
work of the loop); counts the kernels of one eager step; writes a cProfile of the lab's greedy loop.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time
from pathlib import Path

import torch

from lab.api import Lab
from lab.bench.gpu import load


def per_token(fn, n: int) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn(n)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="smollm2")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--out", default="/tmp/out")
    parser.add_argument("--no-gemv", action="store_true", help="a decode step's products through cuBLAS")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer, short = load(f"random:{args.shape}", torch.bfloat16)
    lab = Lab(model_obj=model, tokenizer=tokenizer, backend="fast")
    lab.target.w.gemv = lab.target.w.gemv and not args.no_gemv
    prompt = list(range(100, 160))
    def greedy(n):
        lab.generate("greedy", prompt, max_new_tokens=n)

    for _ in range(2):  # captures the graphs on the slab the timed calls reuse
        greedy(args.tokens)
    report = {"shape": short, "tokens": args.tokens, "gemv": lab.target.w.gemv,
              "lab_greedy_us": per_token(greedy, args.tokens)}
    report["prefill_ms"] = per_token(lambda n: lab.target.fork().prefill(prompt), 1) / 1000  # 60 tokens, eager

    backend = lab.target.fork()
    backend.prefill(prompt)
    for _ in range(4):
        backend.decode(5)
    graph = next(g for key, g in backend.slab.graphs.items() if key[0] != "burst" and key[1] == 1)  # one decode step

    def replays(n):
        for _ in range(n):
            graph.graph.replay()
    report["replay_us"] = per_token(replays, 200)

    def decodes(n):
        backend.rollback(len(prompt))
        token = 5
        for _ in range(n):
            token = int(backend.decode(token).argmax())
    report["backend_decode_us"] = per_token(decodes, args.tokens)

    eager = lab.target.fork()
    eager.graphs = False
    eager.prefill(prompt)
    eager.decode(5)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA,
                                            torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(4):
            eager.decode(5)
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    report["eager_kernels_per_step"] = len(kernels) / 4
    (out / "eager_kernels.txt").write_text(prof.key_averages().table(sort_by="cuda_time_total", row_limit=40))

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        replays(4)
        torch.cuda.synchronize()
    report["graph_kernels_per_step"] = len([e for e in prof.events()
                                            if e.device_type == torch.autograd.DeviceType.CUDA]) / 4
    (out / "graph_kernels.txt").write_text(prof.key_averages().table(sort_by="cuda_time_total", row_limit=40))

    profiler = cProfile.Profile()
    profiler.enable()
    greedy(args.tokens)
    profiler.disable()
    with open(out / "greedy_cprofile.txt", "w") as f:
        pstats.Stats(profiler, stream=f).sort_stats("tottime").print_stats(40)
    report["tok_s"] = {k: round(1e6 / v, 1) for k, v in report.items() if k.endswith("_us")}
    (out / "profile.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
