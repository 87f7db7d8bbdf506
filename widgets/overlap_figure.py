"""PEARL's pipeline as it ran: a Gantt-style timeline of each round's target forward and draft forwards.

Paper: "Parallel Speculative Decoding with Adaptive Draft Length" (Liu et al., 2024): the draft drafts while the
target verifies. Reads what `scripts/overlap_timeline.py` writes (or the rounds of Steps' info["timeline"]):
one row per round and lane (target, draft), bars from start to end in ms from the round's start, one panel per
variant (beside the target, serialized ...), so overlap shows as bars side by side rather than end to end.
"""
from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

LANES = {"target": "#1f77b4", "draft": "#ff7f0e"}


def _bars(fig: go.Figure, rounds: list[dict], row: int, legend: bool) -> None:
    for lane, colour in LANES.items():
        starts, lengths, names = [], [], []
        for i, r in enumerate(rounds):
            for a, b in r.get(lane, []):
                starts.append(a)
                lengths.append(max(b - a, 1e-3))
                names.append(f"round {i + 1} {lane}")
        clock = next((r["clocks"].get(lane) for r in rounds if lane in r.get("clocks", {})), "")
        fig.add_trace(go.Bar(base=starts, x=lengths, y=names, orientation="h", marker_color=colour,
                             name=f"{lane} ({clock})" if clock else lane, legendgroup=lane, showlegend=legend,
                             hovertemplate="%{y}: starts at %{base:.3f} ms, lasts %{x:.3f} ms<extra></extra>"), row=row, col=1)


def overlap_timeline_figure(data: dict, prompt: int = 0, rounds: int = 8,
                            variants: list[str] | None = None) -> go.Figure:
    """Target and draft lanes of the first `rounds` rounds of prompt `prompt`, one panel per variant, from
    overlap_timeline.json (`data`), or from {"variants": {name: {"runs": [{"rounds": [...]}]}}} built from Steps."""
    found = {k: v for k, v in data["variants"].items() if "runs" in v and len(v["runs"]) > prompt}
    names = [v for v in (variants or list(found)) if v in found]
    if not names:
        raise ValueError(f"no variant has a run of prompt {prompt}: {sorted(data['variants'])}")
    titles = []
    for n in names:
        run = found[n]["runs"][prompt]
        frac = run.get("overlap_fraction")
        extra = f", {run['ms_per_token']:.2f} ms/token" if "ms_per_token" in run else ""
        titles.append(f"{n}: overlap {frac:.0%} of draft time{extra}" if frac is not None else n)
    fig = make_subplots(rows=len(names), cols=1, subplot_titles=titles, vertical_spacing=0.08)
    for i, n in enumerate(names):
        _bars(fig, found[n]["runs"][prompt]["rounds"][:rounds], i + 1, i == 0)
        fig.update_yaxes(autorange="reversed", row=i + 1, col=1)
        fig.update_xaxes(title_text="ms from the round's start", row=i + 1, col=1)
    fig.update_layout(barmode="overlay", height=max(320, 30 * 2 * min(rounds, 12) * len(names)), width=1000,
                      title=f"target and draft forwards per round ({data.get('device', '')}, {data.get('model', '')})",
                      legend_title="lane (clock)")
    return fig
