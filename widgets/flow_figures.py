"""Routes, lenses and decoding events -> plotly figures (pure functions: lab.interp data in, figures out).

The route of "Information Flow Routes" (Ferrando & Voita, 2024) is drawn on a layers x tokens grid: a column per
position the route reaches, the stream entering layer l at height l and the stream after its attention at
l + 0.5. Attention edges run between columns, FFN blocks (small squares) and residual edges run up a column.
A decoding event (lab.interp.Rejection) colours the parts that write into the predicting position by which token
they argued for, and marks where an early-exit draft read the stream. Both the ipywidgets and the arena use these.
"""
from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lab.interp import HeadFrequency, Lens, Rejection, Route

COLOURS = {"attention": "#1f77b4", "ffn": "#ff7f0e", "residual": "#b0b0b0"}
FOR_TARGET, FOR_DRAFT = "#2ca02c", "#d62728"
WIDTHS = ((0.1, 1.2), (0.2, 2.2), (0.4, 3.5), (1.01, 5.5))  # weight below -> line width


def _show(text: str) -> str:
    return text.replace("\n", "⏎").replace(" ", "␣") if text.strip() == "" else text.replace("\n", "⏎")


def node_place(node: str) -> tuple[int, float]:
    """(position, height) of a route node: x{l}_{i} at height l, a{l}_{i} at l + 0.5."""
    layer, position = node[1:].split("_")
    return int(position), int(layer) + (0.5 if node[0] == "a" else 0.0)


def route_columns(route: Route) -> list[int]:
    """The positions the route reaches, in order (the predicting one always)."""
    return sorted({route.position} | {e.src_token for e in route.edges} | {e.dst_token for e in route.edges})


def edge_key(e) -> str:
    return f"{e.src}>{e.dst}:{e.kind}"


def route_figure(route: Route, event: Rejection | None = None, title: str | None = None) -> go.Figure:
    """The route on a layers x tokens grid; edges wider with importance; with `event`, the parts writing into the
    predicting position green (for the target's token) or red (for the draft's)."""
    columns = route_columns(route)
    x_of = {p: n for n, p in enumerate(columns)}
    fig = go.Figure()
    groups: dict[tuple[str, float], tuple[list, list]] = {}
    mids_x, mids_y, mids_text, mids_index, mids_colour = [], [], [], [], []
    for n, e in enumerate(route.edges):
        (sp, sh), (dp, dh) = node_place(e.src), node_place(e.dst)
        shift = 0.18 if e.kind == "ffn" else 0.0
        xs, ys = [x_of[sp] + shift, x_of[dp] + shift, None], [sh, dh, None]
        colour = COLOURS[e.kind]
        if event is not None and edge_key(e) in event.contrast:
            colour = FOR_TARGET if event.contrast[edge_key(e)] > 0 else FOR_DRAFT
        width = next(w for bound, w in WIDTHS if e.weight < bound)
        bucket = groups.setdefault((colour, width), ([], []))
        bucket[0].extend(xs)
        bucket[1].extend(ys)
        if e.kind != "residual":
            mids_x.append((x_of[sp] + x_of[dp]) / 2 + shift)
            mids_y.append((sh + dh) / 2)
            mids_index.append(n)
            mids_colour.append(colour)
            heads = ""
            if e.heads:
                best = sorted(range(len(e.heads)), key=lambda h: -e.heads[h])[:3]
                heads = "<br>top heads: " + ", ".join(f"H{h} {e.heads[h]:.2f}" for h in best)
            extra = f"<br>logit target - draft: {event.contrast[edge_key(e)]:+.3f}" if (
                event is not None and edge_key(e) in event.contrast) else ""
            mids_text.append(f"{e.kind} L{e.layer}: {e.src_token} → {e.dst_token}, weight {e.weight:.3f}"
                             f"{heads}{extra}")
    for (colour, width), (xs, ys) in groups.items():
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=colour, width=width), hoverinfo="skip",
                                 showlegend=False, opacity=0.5 if colour == COLOURS["residual"] else 1.0))
    nodes = route.nodes
    places = [node_place(n) for n in nodes]
    fig.add_trace(go.Scatter(x=[x_of[p] for p, _ in places], y=[h for _, h in places], mode="markers",
                             marker=dict(size=3, color="#777"), text=nodes, name="streams",
                             hovertemplate="%{text}<extra></extra>"))
    fig.add_trace(go.Scatter(x=mids_x, y=mids_y, mode="markers", name="edges",
                             marker=dict(size=8, symbol=["square" if route.edges[i].kind == "ffn" else "circle"
                                                         for i in mids_index], color=mids_colour),
                             customdata=mids_index, text=mids_text, hovertemplate="%{text}<extra></extra>"))
    top = x_of[route.position]
    label = "" if route.predicted is None else f" → predicted {route.predicted}"
    fig.add_trace(go.Scatter(x=[top], y=[route.top], mode="markers", marker=dict(size=14, symbol="star",
                             color="#9467bd"), name="prediction", hovertemplate=f"prediction{label}<extra></extra>"))
    if event is not None and event.exit_layer is not None:
        fig.add_trace(go.Scatter(x=[top], y=[event.exit_layer], mode="markers+text", text=["draft exit"],
                                 textposition="middle left", marker=dict(size=13, symbol="diamond", color=FOR_DRAFT),
                                 name="draft exit", hovertemplate=f"the draft read the stream after layer "
                                                                  f"{event.exit_layer}<extra></extra>"))
    if title is None:
        title = f"route to the prediction after {_show(route.pieces[route.position])!r} (tau={route.tau:g}, " \
                f"{route.size} edges)"
        if event is not None:
            title = f"{event.method} step {event.step}: target {_show(event.target_piece)!r} vs rejected draft " \
                    f"{_show(event.draft_piece)!r} · {route.size} edges (green: for the target, red: for the draft)"
    fig.update_layout(
        title=title, height=max(420, 16 * route.layers + 120), showlegend=False, plot_bgcolor="white",
        xaxis=dict(tickmode="array", tickvals=list(range(len(columns))),
                   ticktext=[f"{p}:{_show(route.pieces[p])}" for p in columns], tickangle=-45, zeroline=False),
        yaxis=dict(title="layer", range=[-0.5, route.layers + 0.5], dtick=2, zeroline=False),
        margin=dict(l=50, r=20, t=60, b=90))
    return fig


def edge_heads_figure(route: Route, index: int, event: Rejection | None = None) -> go.Figure:
    """Per-head importances of one attention edge (with `event`: each head's push toward target or draft)."""
    e = route.edges[index]
    titles = ("importance through each head", "each head at this position: logit target - draft")
    fig = make_subplots(rows=1, cols=2 if event is not None else 1, subplot_titles=titles[:2 if event else 1])
    heads = e.heads or []
    fig.add_trace(go.Bar(x=[f"H{h}" for h in range(len(heads))], y=heads, marker_color=COLOURS[e.kind],
                         name="importance"), row=1, col=1)
    if event is not None:
        push = event.heads[e.layer].tolist()
        fig.add_trace(go.Bar(x=[f"H{h}" for h in range(len(push))], y=push, name="push",
                             marker_color=[FOR_TARGET if v > 0 else FOR_DRAFT for v in push]), row=1, col=2)
    what = f"{e.kind} edge L{e.layer}: token {e.src_token} → {e.dst_token}, weight {e.weight:.3f}"
    if e.kind == "ffn":
        what += " (an FFN block: no heads)"
    fig.update_layout(title=what, height=280, showlegend=False, margin=dict(l=40, r=20, t=60, b=30))
    return fig


def lens_figure(lens: Lens) -> go.Figure:
    """The logit lens: top token (text) and its probability (colour) per layer and position; with tracked tokens,
    their rank across layers beside it."""
    tracked = bool(lens.ranks)
    fig = make_subplots(rows=1, cols=2 if tracked else 1, column_widths=[0.7, 0.3] if tracked else None,
                        shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=("top token per layer" + (" (final norm)" if lens.final_norm else
                                                                 " (no final norm)"),
                                        "rank of the tracked tokens")[:2 if tracked else 1])
    xs = [f"{p}:{_show(lens.pieces[p])}" for p in lens.positions]
    fig.add_trace(go.Heatmap(z=lens.probability, x=xs, y=list(range(lens.stages)), zmin=0, zmax=1,
                             text=[[_show(t) for t in row] for row in lens.top_pieces], texttemplate="%{text}",
                             colorscale="Blues",
                             colorbar=dict(title="p", orientation="h", x=0.35, y=-0.22, len=0.5, thickness=12),
                             hovertemplate="layer %{y}, %{x}: %{text} (p=%{z:.3f})<extra></extra>"), row=1, col=1)
    for token, ranks in lens.ranks.items():  # log10(rank + 1) on a linear axis (a log axis fails to autorange
        # when Panel updates a plot that had none)
        fig.add_trace(go.Scatter(x=[math.log10(row[-1] + 1) for row in ranks], y=list(range(lens.stages)),
                                 customdata=[row[-1] for row in ranks], mode="lines+markers", name=f"token {token}",
                                 hovertemplate="layer %{y}: rank %{customdata}<extra></extra>"), row=1, col=2)
    if tracked:
        top = max(row[-1] for ranks in lens.ranks.values() for row in ranks) + 1
        decades = list(range(0, int(math.log10(top)) + 2))
        fig.update_xaxes(tickvals=decades, ticktext=[str(10 ** d) for d in decades], title_text="rank + 1 (last position)",
                         row=1, col=2)
    fig.update_yaxes(title_text="layer (0: embeddings)", row=1, col=1)
    # legend and colour bar inside the figure's own margins: automargins can leave a narrow pane no plot area
    fig.update_layout(height=max(460, 18 * lens.stages + 160), margin=dict(l=50, r=20, t=60, b=150, autoexpand=False),
                      legend=dict(x=0.99, y=0.01, xanchor="right", yanchor="bottom", bgcolor="rgba(255,255,255,0.7)"))
    return fig


def head_frequency_figure(stats: HeadFrequency, at_prediction: bool = False) -> go.Figure:
    """How often each head (and FFN block) was important, over the routes of a prompt set (anywhere on the route,
    or with `at_prediction` in the predicting position's own stream)."""
    heads, ffn = (stats.heads_at_prediction, stats.ffn_at_prediction) if at_prediction else (stats.heads, stats.ffn)
    where = "at the predicting position" if at_prediction else "anywhere on the route"
    fig = make_subplots(rows=1, cols=2, column_widths=[0.85, 0.15], shared_yaxes=True,
                        subplot_titles=(f"heads important {where} ({stats.prompts} prompts, tau={stats.tau:g})",
                                        "FFN"))
    fig.add_trace(go.Heatmap(z=heads.tolist(), zmin=0, zmax=1, colorscale="Viridis",
                             hovertemplate="layer %{y} head %{x}: %{z:.0%}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Heatmap(z=[[v] for v in ffn.tolist()], zmin=0, zmax=1, colorscale="Viridis",
                             showscale=False, hovertemplate="layer %{y} FFN: %{z:.0%}<extra></extra>"), row=1, col=2)
    fig.update_xaxes(title_text="head", dtick=1, row=1, col=1)
    fig.update_yaxes(title_text="layer", row=1, col=1)
    fig.update_layout(height=max(360, 14 * heads.shape[0] + 120), margin=dict(l=50, r=20, t=60, b=40))
    return fig
