"""Tree attention's launch plan on a GPU, as a model step runs it: 30 calls back to back in one CUDA graph (one per
layer, each on its own layer's cache, a strided view of a bigger static cache), for each (columns per tile, splits)
against the plan `tree_attention.plan` picks; each checked against the torch reference.

    python scripts/sweep_attention.py [--layers 30] [--out sweep.json]
    python scripts/sweep_attention.py --one-call [--only decode|verify] [--out sweep.json]

`--one-call`: the Llama-8B cases of `python -m lab bench gpu --kernels` (decode over 32,768 columns, verification of
64 tokens over 4,096), one call at a time as that bench times them (eager under do_bench, replayed as a graph, and
on a clean cold L2: `bench gpu`'s `cold_us`), over plans and launch configurations (warps, pipeline stages). (The
run committed as results/sweep-attention-one-call-2026-12-02.json also tried key tiles loaded [columns, D] and
transposed in registers: the same times, so that variant is gone;
results/sweep-attention-one-call-verify-2026-12-03.json tried 2 and 4 splits, merged in the kernel: slower than the
plan's 8.)

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


ONE_CALL = {  # (k, columns, heads, kv_heads, dim): (column tiles, wanted splits, warps, stages[, rows per block])
    (1, 32768, 32, 8, 128): dict(n=(32, 64, 128), splits=(16, 32, 64, 128), warps=(2, 4, 8), stages=(2, 3, 4, 5)),
    (64, 4096, 32, 8, 128): dict(n=(32, 64), splits=(2, 4, 8), warps=(4, 8), stages=(3, 4), m=(64, 128)),
}


def one_call(out: str | None, only: str | None = None) -> None:
    """Each setting of ONE_CALL's grid, timed as `bench gpu --kernels` times a kernel; prints a JSON line each.
    `only` "decode" or "verify": that case alone."""
    import functools
    import itertools

    from triton.testing import do_bench

    from lab.bench.gpu import attention_inputs, cold_us, graph_us

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    found = []
    for (k, columns, heads, kv_heads, dim), grid in ONE_CALL.items():
        if only and (k == 1) != (only == "decode"):
            continue
        g = torch.Generator(device="cuda").manual_seed(0)
        q, keys, values, mask = attention_inputs("cuda", g, heads, kv_heads, dim, k, columns)  # the bench's inputs
        visible = torch.tensor([columns - k], device="cuda")  # and its call: the committed prefix named
        nbytes = 2 * keys.numel() * keys.element_size()
        reference = functools.partial(ta.tree_attention_reference, q, keys, values, mask)
        want = reference().float()
        torch_us = 1000 * do_bench(reference, return_mode="median")
        default = ta.plan(k, columns, heads, kv_heads, sms, dim=dim)
        settings = [(None, None, None)]
        for m in grid.get("m", (default[0],)):
            for n, s, w, st in itertools.product(grid["n"], grid["splits"], grid["warps"], grid["stages"]):
                settings.append(((m, n), s, (w, st)))
        for block, splits, config in settings:
            fn = functools.partial(ta.tree_attention, q, keys, values, mask, visible=visible, block=block,
                                   splits=splits, config=config)
            try:
                ok = bool(torch.allclose(fn().float(), want, atol=2e-2, rtol=0))
                us = 1000 * do_bench(fn, return_mode="median")
            except Exception as e:  # out of resources: too many registers or too much shared memory
                print(json.dumps({"k": k, "block": block, "splits": splits, "config": config,
                                  "error": str(e)[:120]}), flush=True)
                continue
            row = {"k": k, "columns": columns, "heads": heads, "kv_heads": kv_heads,
                   "plan": list(ta.plan(k, columns, heads, kv_heads, sms, block=block, splits=splits, dim=dim)),
                   "config": config, "default": block is None, "us": round(us, 2), "graph_us": graph_us(fn),
                   "cold_us": cold_us(fn),
                   "torch_us": round(torch_us, 1), "bandwidth_frac": round(nbytes / (us * 1e-6) / 4.17e12, 3),
                   "agrees": ok}
            found.append(row)
            print(json.dumps(row), flush=True)
        mine = [r for r in found if r["k"] == k]
        for key in ("us", "graph_us", "cold_us"):
            best = min(mine, key=lambda r: r[key] or 1e9)
            print(f"# k={k} C={columns}: default {mine[0][key]} us; best by {key} {best['plan']} {best['config']} "
                  f"{best[key]} us (torch {torch_us:.1f})", flush=True)
        if out:
            with open(out, "w") as f:
                command = "python scripts/sweep_attention.py --one-call" + (f" --only {only}" if only else "")
                json.dump({"device": torch.cuda.get_device_name(), "command": command, "rows": found}, f, indent=0)


MASK_CASES = [(64, 4096, 32, 8, 128), (1, 32768, 32, 8, 128), (64, 32768, 32, 8, 128), (1, 4096, 9, 3, 64),
              (8, 4096, 9, 3, 64)]


def mask_reads(out: str | None) -> None:
    """Whether the kernel reads the mask of the committed prefix, one call at a time at the bench's attention cases
    (`bench gpu`'s inputs: a prefix every row sees, then a random tree): read, or skipped on the tiles below a
    `visible` count; "no mask" (every column visible, not the same output) bounds what skipping can gain. Prints one
    JSON line per variant. (The run committed as results/sweep-attention-mask-2026-12-03.json also tried the mask
    read once per query row and broadcast over the group's heads, and loads predicated off below the prefix: no
    faster in a graph, so those variants are gone.)"""
    import functools

    from triton.testing import do_bench

    from lab.bench.gpu import attention_inputs, cold_us, graph_us

    found = []
    for k, columns, heads, kv_heads, dim in MASK_CASES:
        g = torch.Generator(device="cuda").manual_seed(0)
        q, keys, values, mask = attention_inputs("cuda", g, heads, kv_heads, dim, k, columns)
        nbytes = 2 * keys.numel() * keys.element_size()
        want = ta.tree_attention_reference(q, keys, values, mask).float()
        torch_us = 1000 * do_bench(functools.partial(ta.tree_attention_reference, q, keys, values, mask),
                                   return_mode="median")
        for name, visible in (("mask read", None), ("prefix skipped", columns - k), ("no mask (bound)", columns)):
            shown = None if visible is None else torch.tensor([visible], device="cuda")
            fn = functools.partial(ta.tree_attention, q, keys, values, mask, visible=shown)
            ok = bool(torch.allclose(fn().float(), want, atol=2e-2, rtol=0))
            us = 1000 * do_bench(fn, return_mode="median")
            row = {"k": k, "columns": columns, "heads": heads, "kv_heads": kv_heads, "variant": name,
                   "us": round(us, 2), "graph_us": graph_us(fn), "cold_us": cold_us(fn), "torch_us": round(torch_us, 1),
                   "bandwidth_frac": round(nbytes / (us * 1e-6) / 4.17e12, 3), "agrees": ok}
            found.append(row)
            print(json.dumps(row), flush=True)
        del q, keys, values, mask
    if out:
        with open(out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "command": "python scripts/sweep_attention.py --mask",
                       "rows": found}, f, indent=0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--out", default=None)
    ap.add_argument("--one-call", action="store_true")
    ap.add_argument("--mask", action="store_true", help="how the mask is read (mask_reads)")
    ap.add_argument("--only", choices=["decode", "verify"], help="--one-call on one case")
    args = ap.parse_args()
    if args.one_call:
        return one_call(args.out, args.only)
    if args.mask:
        return mask_reads(args.out)
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
        default = ta.plan(k, columns, heads, kv_heads, sms, dim=dim)
        rows = []
        settings = [(None, None)] + [((default[0], n), s) for n in (16, 32, 64) for s in (1, 2, 4, 8, 16, 32, 64, 128)]
        seen = set()
        for block, splits in settings:
            plan = ta.plan(k, columns, heads, kv_heads, sms, block=block, splits=splits, dim=dim) if block else default
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
