"""The greedy head (kernels/head_argmax.py) on the GPU against what it replaces, at the default model's head
(49,152 x 576) and its trained draft's trimmed head (16,385 x 576), bfloat16 random weights: one call captured as a
CUDA graph, median GPU time of 200 replays (CUDA events), for plans of programs an SM and rows a block, beside the
separate kernels (add + RMSNorm, the head's product through cuBLAS, the float cast, then `commit_rows`' argmax and
probability, as a draft chain ran them). Prints a table last and writes JSON.

    python scripts/sweep_head_argmax.py [--out sweep-head-argmax.json]
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from lab.bench.gpu import replay_us
from lab.kernels.dllm_commit import commit_rows
from lab.kernels.head_argmax import head_argmax
from lab.kernels.rms_norm import add_rms_norm


def graph_us(fn, replays: int = 200) -> float:
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return replay_us(graph, replays)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="sweep-head-argmax.json")
    args = ap.parse_args()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    g = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    for n in (49152, 16385):
        weight = torch.randn(n, 576, device="cuda", generator=g, dtype=torch.bfloat16) / 8
        x, delta = (torch.randn(1, 576, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(2))
        norm = torch.rand(576, device="cuda", generator=g, dtype=torch.bfloat16) + 0.5
        live = torch.ones(1, dtype=torch.bool, device="cuda")

        def separate():
            _, normed = add_rms_norm(delta, x, norm, 1e-5)
            return commit_rows(F.linear(normed, weight).float(), live)

        want = separate()[0]
        rows.append({"head": n, "plan": "separate kernels", "us": round(graph_us(separate), 2), "same": True})
        for per_sm in (4, 8, 16):
            for block_n in (4, 8, 16):
                def fused():
                    return head_argmax(delta, x, norm, 1e-5, weight, None, block_n, per_sm * sms)

                same = bool(torch.equal(fused()[0], want))
                rows.append({"head": n, "plan": f"{per_sm} an SM, {block_n} rows a block", "us":
                             round(graph_us(fused), 2), "same": same})
    report = {"command": "python scripts/sweep_head_argmax.py", "device": torch.cuda.get_device_name(), "rows": rows}
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    for r in rows:
        print(f"{r['head']:>6}  {r['plan']:<28} {r['us']:8.2f} us  same argmax: {r['same']}")


if __name__ == "__main__":
    main()
