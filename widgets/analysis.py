"""Analysis figures over many runs: benchmark results and Traces in, plotly figures out (no model is called).

- `bench_bar_figure`: a metric (speedup, tau, tokens per forward) per task category, one bar per method;
- `position_acceptance_figure`: the share of verification steps whose accepted path reaches depth i;
- `acceptance_scaling_figure`: accepted length against draft length and tree budget on log axes, with a
  log-linear fit per method, the form of the laws of "Scaling Laws for Speculative Decoding";
- `speedup_contour_figure`: expected speedup over acceptance rate and draft cost (draft latency per token over
  target latency), with measured points: the design space of "Decoding Speculative Decoding";
- `drafters_figure`: tokens per forward, tau and speedup over greedy for the runs of one prompt (the arena tab).
"""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from lab.metrics import (
    BASELINE,
    expected_speedup,
    group_metrics,
    reach_curve,
    run_record,
    step_shapes,
)
from lab.trace import Trace

METRICS = {"speedup": "speedup over greedy", "tau": "mean accepted length tau",
           "tokens_per_forward": "tokens per target forward"}


def _colour(i: int) -> str:
    return qualitative.Plotly[i % len(qualitative.Plotly)]


def bench_bar_figure(results: dict, metric: str = "speedup") -> go.Figure:
    """`metric` of every method per category (and overall), from `python -m lab bench spec` results."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}")
    summary, columns = results["summary"], [*results["categories"], "overall"]
    fig = go.Figure()
    methods = [m for m in summary if not (m == BASELINE and metric != "tokens_per_forward")]
    for i, m in enumerate(methods):
        ys = [summary[m].get(c, {}).get(metric) for c in columns]
        fig.add_trace(go.Bar(x=columns, y=ys, name=m, marker_color=_colour(i),
                             hovertemplate=f"{m}<br>%{{x}}: %{{y:.2f}}<extra></extra>"))
    if metric == "speedup":
        fig.add_hline(y=1.0, line_dash="dot", line_color="#555", annotation_text="greedy")
    fig.update_layout(barmode="group", title=f"{METRICS[metric]} per task ({results.get('model', '')}, "
                                             f"{results.get('max_new_tokens', '?')} new tokens)",
                      yaxis_title=METRICS[metric], height=420, width=1000, legend_title="method")
    return fig


def _curves(source) -> dict[str, list[float]]:
    """Per-position acceptance per method, from bench results or Traces (a dict name -> Trace, or a list)."""
    if isinstance(source, dict) and "summary" in source:
        return {m: s["overall"]["position_acceptance"] for m, s in source["summary"].items() if m != BASELINE}
    traces = source.items() if isinstance(source, dict) else [(t.method, t) for t in source]
    return {name: reach_curve(step_shapes(t)["accepted"]) for name, t in traces}


def position_acceptance_figure(source) -> go.Figure:
    """Share of verification steps whose accepted path reaches depth i, one curve per method."""
    fig = go.Figure()
    for i, (name, curve) in enumerate(_curves(source).items()):
        fig.add_trace(go.Scatter(x=list(range(1, len(curve) + 1)), y=curve, mode="lines+markers", name=name,
                                 line=dict(color=_colour(i)),
                                 hovertemplate=f"{name}: %{{y:.0%}} of steps reach depth %{{x}}<extra></extra>"))
    fig.update_layout(title="per-position acceptance: share of steps whose accepted path reaches depth i",
                      xaxis=dict(title="depth i", dtick=1), yaxis=dict(title="share of steps", range=[0, 1.02]),
                      height=400, width=1000)
    return fig


def _scaling_points(traces) -> list[dict]:
    points = []
    for t in traces:
        shapes = step_shapes(t)
        n = len(shapes["accepted"])
        if n:
            points.append({"method": t.method, "options": t.options, "depth": sum(shapes["depth"]) / n,
                           "size": sum(shapes["size"]) / n, "tau": sum(a + 1 for a in shapes["accepted"]) / n})
    return points


def acceptance_scaling_figure(traces: list[Trace]) -> go.Figure:
    """tau against mean draft depth and mean tree size (log2 axes), one point per run, log-linear fit per method.

    Run a sweep (one method at several lengths or budgets) to see the law; each Trace is one setting.
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("against draft length", "against tree budget"),
                        shared_yaxes=True)
    points = _scaling_points(traces)
    methods = list(dict.fromkeys(p["method"] for p in points))
    for i, m in enumerate(methods):
        mine = [p for p in points if p["method"] == m]
        for col, key in ((1, "depth"), (2, "size")):
            xs, ys = [p[key] for p in mine], [p["tau"] for p in mine]
            labels = [", ".join(f"{k}={v}" for k, v in p["options"].items()) for p in mine]
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=m, legendgroup=m, showlegend=col == 1,
                                     marker=dict(color=_colour(i), size=9), text=labels,
                                     hovertemplate=f"{m} %{{text}}<br>{key} %{{x:.1f}}: tau %{{y:.2f}}<extra></extra>"),
                          row=1, col=col)
            if max(xs) >= 1.5 * min(xs):  # a sweep along this axis: fit tau ~ a + b log2(x)
                b, a = np.polyfit(np.log2(xs), ys, 1)
                grid = np.geomspace(min(xs), max(xs), 30)
                fig.add_trace(go.Scatter(x=grid, y=a + b * np.log2(grid), mode="lines", legendgroup=m,
                                         showlegend=False, line=dict(color=_colour(i), dash="dot"),
                                         hovertemplate=f"{m}: tau = {a:.2f} + {b:.2f} log2(x)<extra></extra>"),
                              row=1, col=col)
    fig.update_xaxes(type="log", dtick=math.log10(2), title_text="mean draft depth (tokens)", row=1, col=1)
    fig.update_xaxes(type="log", dtick=math.log10(2), title_text="mean tree size (nodes)", row=1, col=2)
    fig.update_yaxes(title_text="mean accepted length tau", row=1, col=1)
    fig.update_layout(title="acceptance against draft length and budget (dotted: log-linear fit)", height=420,
                      width=1000)
    return fig


def best_speedup(alpha: float, cost: float, gamma: int | None = None, max_gamma: int = 10) -> float:
    """Expected speedup at a fixed draft length, or at the best one up to `max_gamma`."""
    gammas = [gamma] if gamma else range(1, max_gamma + 1)
    return max(expected_speedup(alpha, g, cost) for g in gammas)


def bench_points(results: dict) -> list[dict]:
    """(alpha, draft cost, measured speedup) of every method overall, from bench results."""
    out = []
    for m, s in results["summary"].items():
        o = s["overall"]
        if m != BASELINE and o.get("alpha") is not None and o.get("draft_cost") is not None:
            out.append({"name": m, "alpha": o["alpha"], "cost": o["draft_cost"], "gamma": o["gamma"],
                        "speedup": o["speedup"]})
    return out


def trace_points(traces: dict[str, Trace], greedy: Trace) -> list[dict]:
    """The same points from single runs on one prompt, against a greedy run of that prompt."""
    prompt = {"id": "prompt", "category": "prompt"}
    base = {"prompt": run_record(prompt, BASELINE, greedy)}
    out = []
    for name, t in traces.items():
        m = group_metrics([run_record(prompt, name, t)], base)
        if m["alpha"] is not None and m["draft_cost"] is not None:
            out.append({"name": name, "alpha": m["alpha"], "cost": m["draft_cost"], "gamma": m["gamma"],
                        "speedup": m["speedup"]})
    return out


def speedup_contour_figure(points: list[dict] = (), gamma: int | None = None, max_cost: float = 1.0) -> go.Figure:
    """Expected speedup over (acceptance rate alpha, draft cost c), at draft length `gamma` or the best one.

    Measured points (dicts with name, alpha, cost, speedup) sit on top: a point's colour is its measured
    speedup, the contour beneath it the speedup the i.i.d. model predicts at its coordinates.
    """
    alphas = np.linspace(0.0, 0.98, 50)
    costs = np.linspace(0.0, max(max_cost, *[p["cost"] for p in points]) if points else max_cost, 50)
    z = [[best_speedup(a, c, gamma) for a in alphas] for c in costs]
    top = max(3.0, max((p["speedup"] or 0 for p in points), default=0))
    fig = go.Figure(go.Contour(x=alphas, y=costs, z=z, colorscale="RdYlGn", zmin=0, zmax=top,
                               contours=dict(showlabels=True, start=0.5, end=top, size=0.25),
                               colorbar=dict(title="speedup"),
                               hovertemplate="alpha %{x:.2f}, c %{y:.2f}: %{z:.2f}x expected<extra></extra>"))
    if points:
        fig.add_trace(go.Scatter(
            x=[p["alpha"] for p in points], y=[p["cost"] for p in points], mode="markers+text",
            text=[p["name"] for p in points], textposition="top center", name="measured",
            customdata=[[p["speedup"] or 0, best_speedup(p["alpha"], p["cost"], gamma)] for p in points],
            marker=dict(size=13, color=[p["speedup"] or 0 for p in points], colorscale="RdYlGn", cmin=0, cmax=top,
                        line=dict(color="black", width=1.5)),
            hovertemplate="%{text}: %{customdata[0]:.2f}x measured, %{customdata[1]:.2f}x expected<extra></extra>"))
    which = f"draft length {gamma}" if gamma else "the best draft length (1-10)"
    fig.update_layout(title=f"expected speedup at {which}: acceptance rate vs draft cost",
                      xaxis_title="acceptance rate alpha",
                      yaxis_title="draft cost c (per draft token, in target forwards)",
                      height=480, width=1000, showlegend=False)
    return fig


def bench_figures(results: dict) -> dict[str, go.Figure]:
    """Every figure of a benchmark report, by name."""
    return {"speedup": bench_bar_figure(results, "speedup"), "tau": bench_bar_figure(results, "tau"),
            "positions": position_acceptance_figure(results),
            "latency": speedup_contour_figure(bench_points(results))}


def drafters_figure(traces: dict[str, Trace], greedy: Trace | None = None) -> go.Figure:
    """Tokens per forward, tau and speedup over greedy for finished runs of one prompt (unfinished ones skipped)."""
    done = {n: t for n, t in traces.items() if t.stop and t.stop != "cancelled"}
    fig = make_subplots(rows=1, cols=3, subplot_titles=("tokens per forward", "mean accepted length tau",
                                                        "speedup over greedy"))
    names = list(done)
    fig.add_trace(go.Bar(x=names, y=[t.tokens_per_forward for t in done.values()], marker_color=_colour(0),
                         name="tokens/forward"), row=1, col=1)
    fig.add_trace(go.Bar(x=names, y=[t.mean_accepted for t in done.values()], marker_color=_colour(1),
                         name="tau"), row=1, col=2)
    if greedy is not None and greedy.stop and greedy.new_tokens:
        rate = lambda t: t.new_tokens / max(t.wall_s, 1e-9)  # wall_s includes the prefill
        fig.add_trace(go.Bar(x=names, y=[rate(t) / rate(greedy) for t in done.values()], marker_color=_colour(2),
                             name="speedup"), row=1, col=3)
        fig.add_hline(y=1.0, line_dash="dot", line_color="#555", row=1, col=3)
    fig.update_layout(height=360, showlegend=False, margin=dict(l=40, r=20, t=60, b=80),
                      title=f"{len(done)} of {len(traces)} methods finished")
    return fig
