"""Metrics of runs: the numbers the speculative-decoding literature reports, from Traces and run records.

tau (the mean accepted length: accepted draft tokens + 1 per verification step), tokens per target forward,
per-position acceptance, alpha and the draft cost c (the axes of "Decoding Speculative Decoding"), speedup over
a baseline run of the same prompts. Benchmarks, widgets and apps all compute them here.
"""
from __future__ import annotations

import statistics

from .trace import Trace
from .tree import depths

BASELINE = "greedy"


def step_shapes(trace: Trace) -> dict[str, list[int]]:
    """Per verification step: accepted draft tokens, draft depth, draft size (nodes)."""
    steps = [s for s in trace.steps if s.proposed]
    return {"accepted": [len(s.accepted) for s in steps], "depth": [max(depths(s.parents)) for s in steps],
            "size": [len(s.proposed) for s in steps]}


def run_record(prompt: dict, method: str, trace: Trace | None, error: str | None = None) -> dict:
    """What the benchmark keeps of one run (the trace itself is dropped)."""
    row = {"id": prompt["id"], "category": prompt["category"], "method": method}
    if error is not None:
        return {**row, "error": error}
    return {**row, "new_tokens": trace.new_tokens, "forwards": trace.forwards, "draft_forwards": trace.draft_forwards,
            "wall_s": round(trace.wall_s, 5), "prefill_s": round(trace.prefill_s, 5), "stop": trace.stop,
            "tokens": list(trace.tokens), **step_shapes(trace)}


def reach_curve(accepted: list[int]) -> list[float]:
    """Share of verification steps whose accepted path reaches depth i, for i = 1 .. the longest accepted."""
    if not accepted:
        return []
    return [sum(a >= i for a in accepted) / len(accepted) for i in range(1, max(accepted) + 1)]


def expected_speedup(alpha: float, gamma: float, cost: float) -> float:
    """Speedup of a gamma-token draft per step with i.i.d. acceptance alpha and draft cost c per token
    ("Fast Inference from Transformers via Speculative Decoding", eq. for the walltime improvement)."""
    tokens = gamma + 1 if alpha >= 1 else (1 - alpha ** (gamma + 1)) / (1 - alpha)
    return tokens / (gamma * cost + 1)


def solve_alpha(tau: float, gamma: float) -> float:
    """The i.i.d. acceptance rate alpha whose expected accepted length with gamma drafts is tau."""
    if gamma <= 0 or tau <= 1:
        return 0.0
    if tau >= gamma + 1:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if expected_speedup(mid, gamma, 0.0) < tau:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(float(x), digits)


def group_metrics(rows: list[dict], greedy: dict[str, dict]) -> dict:
    """Metrics of one method over some prompts; `greedy` maps prompt id -> greedy's record of that prompt."""
    ok = [r for r in rows if "error" not in r]
    out = {"prompts": len(ok), "errors": len(rows) - len(ok), "new_tokens": sum(r["new_tokens"] for r in ok),
           "forwards": sum(r["forwards"] for r in ok)}
    accepted = [a for r in ok for a in r["accepted"]]
    depth = [d for r in ok for d in r["depth"]]
    steps = len(accepted)
    tau = sum(a + 1 for a in accepted) / steps if steps else None
    gamma = sum(depth) / steps if steps else 0.0
    out.update(steps=steps, tau=_r(tau), tokens_per_forward=_r(out["new_tokens"] / max(out["forwards"], 1)),
               position_acceptance=[_r(x) for x in reach_curve(accepted)], gamma=_r(gamma),
               tree_size=_r(sum(s for r in ok for s in r["size"]) / steps if steps else 0.0),
               alpha=_r(solve_alpha(tau, gamma)) if tau else None)
    pairs = [(r, greedy[r["id"]]) for r in ok if r["id"] in greedy and "error" not in greedy[r["id"]]]
    speedup = cost = median = None
    if pairs:
        rate = lambda rs: sum(r["new_tokens"] for r in rs) / max(sum(r["wall_s"] for r in rs), 1e-9)
        decoding = lambda rs: sum(r["wall_s"] - r["prefill_s"] for r in rs)  # Trace.wall_s includes the prefill
        mine, base = [m for m, _ in pairs], [g for _, g in pairs]
        speedup = rate(mine) / max(rate(base), 1e-12)
        # per prompt: one slow run on either side (a first-use compile, a stall) moves the median less
        median = statistics.median(rate([m]) / max(rate([g]), 1e-12) for m, g in pairs)
        forward_s = decoding(base) / max(sum(g["forwards"] for g in base), 1)
        drafted = sum(sum(m["depth"]) for m in mine)
        if drafted and forward_s > 0:
            overhead = decoding(mine) - sum(m["forwards"] for m in mine) * forward_s
            cost = max(0.0, overhead) / (drafted * forward_s)
    exact = [r["exact"] for r in ok if r.get("exact") is not None]
    out.update(speedup=_r(speedup), speedup_median=_r(median), draft_cost=_r(cost),
               exact_match=_r(sum(exact) / len(exact)) if exact else None)
    return out


def summarize(runs: list[dict]) -> dict:
    """{method: {category: metrics, ..., "overall": metrics}} over the records of `run_bench`."""
    greedy = {r["id"]: r for r in runs if r["method"] == BASELINE}
    methods = list(dict.fromkeys(r["method"] for r in runs))
    categories = list(dict.fromkeys(r["category"] for r in runs))
    out = {}
    for m in methods:
        mine = [r for r in runs if r["method"] == m]
        out[m] = {c: group_metrics([r for r in mine if r["category"] == c], greedy) for c in categories}
        out[m]["overall"] = group_metrics(mine, greedy)
    return out


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens two sequences share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
