"""How long the information-flow route of one prompt takes ("Information Flow Routes", Ferrando & Voita, 2024).

    python -m lab bench routes [--model default] [--tokens 200] [--tau 0.04] [--repeats 3] [--unchunked]
                               [--threads N] [--out results/routes_cpu.json]

A prompt of exactly `--tokens` tokens (the suite's prompts, joined) is timed, median of `--repeats` after one
warm-up, as: `flow` (one forward on a fork with the parts captured, the self-check, the model's predictions),
`route` (top-down extraction at tau, importances computed only where the route goes), their sum (the headline:
the issue asks for under 10 s on the CPU), and `complete` (every importance of every layer and position, what a
tool drawing the whole graph computes). `--unchunked` also times, once, the whole graph with every part of a
layer formed at once ([T, T, heads, hidden] floats per layer), the way the reference tool (llm-transparency-tool)
forms its contributions: the same numbers (checked), re-implemented here, not the tool itself.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import date
from importlib import resources
from pathlib import Path

import torch

from ..api import Lab
from ..interp import flow


def prompt_ids(lab: Lab, tokens: int) -> list[int]:
    """Exactly `tokens` token ids: the suite's prompts joined by blank lines, cut."""
    rows = [json.loads(x) for x in resources.files("lab.data").joinpath("prompts.jsonl").read_text().splitlines() if x]
    ids: list[int] = []
    for row in rows:
        ids += lab.encode(row["prompt"] + "\n\n")
        if len(ids) >= tokens:
            return ids[:tokens]
    raise SystemExit(f"the suite has only {len(ids)} tokens of prompts; ask for fewer --tokens")


def unchunked(f) -> float:
    """Every attention importance, each layer's parts formed at once; returns the largest difference from `f`'s."""
    worst = 0.0
    for layer, parts in enumerate(f.parts.layers):
        z = parts.attention.permute(1, 2, 0)[..., None] * parts.head_values[None]  # [T, T, H, D]
        y = parts.middle[:, None, None, :]
        close = (y.abs().sum(-1) - (y - z).abs().sum(-1)).clamp_min(0)
        del z
        rest = [(parts.middle.abs().sum(-1) - (parts.middle - parts.residual).abs().sum(-1)).clamp_min(0)]
        if parts.attention_bias is not None:
            rest.append((parts.middle.abs().sum(-1) - (parts.middle - parts.attention_bias).abs().sum(-1)).clamp_min(0))
        heads = close / (close.sum((1, 2)) + sum(rest))[:, None, None]
        worst = max(worst, float((heads.cpu() - f.attention(layer, list(range(len(f)))).heads).abs().max()))
    return worst


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m lab bench routes")
    ap.add_argument("--model", default="default")
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--tau", type=float, default=0.04)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--unchunked", action="store_true")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--out", default="results/routes_cpu.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    lab = Lab(args.model)
    ids = prompt_ids(lab, args.tokens)
    load = os.getloadavg()[0]
    flow(lab, ids[:16]).route(tau=args.tau)  # warm-up
    flow_s, f = timed(lambda: flow(lab, ids), args.repeats)
    route_s, route = timed(lambda: flow(lab, ids).route(tau=args.tau), args.repeats)
    route_s -= flow_s  # the extraction alone (each repeat on a fresh Flow, so nothing is cached)
    complete_s, _ = timed(lambda: flow(lab, ids).complete(), args.repeats)
    complete_s -= flow_s
    result = {"benchmark": "routes", "model": args.model, "tokens": len(ids), "tau": args.tau,
              "layers": f.layers, "heads": f.heads, "device": str(lab.target.device),
              "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "load_average_at_start": round(load, 2), "torch": torch.__version__, "date": date.today().isoformat(),
              "flow_s": round(flow_s, 3), "route_s": round(route_s, 3), "flow_plus_route_s": round(flow_s + route_s, 3),
              "complete_graph_s": round(complete_s, 3), "route_edges": route.size, "route_nodes": len(route.nodes),
              "self_check_error": f.parts.error, "repeats": args.repeats,
              "command": "python -m lab bench routes " + " ".join(argv or [])}
    if args.unchunked:
        f = flow(lab, ids)
        start = time.perf_counter()
        f.complete()
        chunked = time.perf_counter() - start
        start = time.perf_counter()
        result["unchunked_max_difference"] = unchunked(f)
        result["unchunked_complete_graph_s"] = round(time.perf_counter() - start, 3)
        result["chunked_complete_graph_once_s"] = round(chunked, 3)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"{len(ids)} tokens, {f.layers} layers x {f.heads} heads, tau {args.tau}: flow {flow_s:.2f} s + route "
          f"{route_s:.2f} s = {flow_s + route_s:.2f} s ({route.size} edges); whole graph {complete_s:.2f} s more"
          + (f"; unchunked whole graph {result['unchunked_complete_graph_s']:.2f} s" if args.unchunked else "")
          + f" -> {args.out}")
    return result


if __name__ == "__main__":
    main()
