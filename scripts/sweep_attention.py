"""Tree attention's launch plan on a GPU, as a model step runs it: 30 calls back to back in one CUDA graph (one per
layer, each on its own layer's cache, a strided view of a bigger static cache), for each (columns per tile, splits)
against the plan `tree_attention.plan` picks; each checked against the torch reference.

    python scripts/sweep_attention.py [--layers 30] [--out sweep.json]

Shapes: the default model's heads (H=9, KVH=3, D=64) at k = 1 (decode, a draft burst) over the graphs' column
buckets (256 ... 4096), k = 8 (a chain's verification) and 64 (a tree); Llama-8B's (H=32, KVH=8, D=128) at k = 1
over 4096 and 32768 columns and k = 64 over 4096. Prints one JSON line per setting (microseconds a call) and, per
shape, the best.
"""
from __future__ import annotations

import argparse
import json

import torch

from lab.kernels import tree_attention as ta

SHAPES = [(1, c, 9, 3, 64) for c in (256, 512, 1024, 2048, 4096)] + [(8, c, 9, 3, 64) for c in (256, 1024, 4096)] + \
         [(64, c, 9, 3, 64) for c in (256, 4096)] + \
         [(1, 4096, 32, 8, 128), (1, 32768, 32, 8, 128), (64, 4096, 32, 8, 128)]


def in_graph_us(calls, repeats: int = 10) -> float:
    """Microseconds a call of `calls` (a list of thunks) captured back to back in one graph, median of replays."""
    from triton.testing import do_bench

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for fn in calls:
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for fn in calls:
            fn()
    return 1000 * do_bench(graph.replay, rep=repeats * 10, return_mode="median") / len(calls)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    g = torch.Generator(device="cuda").manual_seed(0)
    found = []
    for k, columns, heads, kv_heads, dim in SHAPES:
        layers = args.layers if columns <= 4096 else 4  # 32k columns of 8B heads: 1 GB of cache a layer pair
        capacity = columns + 128
        keys = torch.randn(layers, kv_heads, capacity, dim, device="cuda", dtype=torch.bfloat16, generator=g)
        values = torch.randn_like(keys)
        q = torch.randn(layers, heads, k, dim, device="cuda", dtype=torch.bfloat16, generator=g)
        mask = torch.ones(k, columns, dtype=torch.bool, device="cuda")
        mask[:, columns - k:] = torch.ones(k, k, dtype=torch.bool, device="cuda").tril()
        want = ta.tree_attention_reference(q[0], keys[0, :, :columns], values[0, :, :columns], mask).float()
        default = ta.plan(k, columns, heads, kv_heads, sms)
        rows = []
        settings = [(None, None)] + [((default[0], n), s) for n in (16, 32, 64) for s in (1, 2, 4, 8, 16, 32, 64, 128)]
        seen = set()
        for block, splits in settings:
            plan = ta.plan(k, columns, heads, kv_heads, sms, block=block, splits=splits) if block else default
            if plan in seen and block is not None:
                continue
            seen.add(plan)
            got = ta.tree_attention(q[0], keys[0, :, :columns], values[0, :, :columns], mask, block=block,
                                    splits=splits).float()
            ok = bool(torch.allclose(got, want, atol=2e-2, rtol=0))
            calls = [lambda i=i: ta.tree_attention(q[i], keys[i, :, :columns], values[i, :, :columns], mask,
                                                   block=block, splits=splits) for i in range(layers)]
            us = in_graph_us(calls)
            row = {"k": k, "columns": columns, "heads": heads, "kv_heads": kv_heads, "plan": list(plan),
                   "default": block is None, "us": round(us, 2), "agrees": ok}
            rows.append(row)
            print(json.dumps(row), flush=True)
        best = min(rows, key=lambda r: r["us"])
        base = rows[0]
        print(f"# k={k} C={columns} H={heads}: plan {base['plan']} {base['us']} us; best {best['plan']} "
              f"{best['us']} us", flush=True)
        found += rows
        del keys, values, q
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "command": "python scripts/sweep_attention.py",
                       "rows": found}, f, indent=0)


if __name__ == "__main__":
    main()
