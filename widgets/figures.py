"""Trace -> HTML and plotly figures: the token stream, a step's draft tree, the acceptance statistics."""
from __future__ import annotations

import html

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lab.trace import Trace
from lab.tree import depths

COLOURS = {"plain": "#e8e8e8", "draft": "#9be29b", "bonus": "#9cc8f5"}
LEGEND = {"plain": "target alone", "draft": "accepted draft", "bonus": "target after a draft"}
REJECTED, ACCEPTED, BONUS, ROOT = "#c8c8c8", "#2ca02c", "#1f77b4", "#555555"


def _show(text: str) -> str:
    """Make whitespace visible in a token label."""
    return text.replace("\n", "⏎").replace(" ", "␣") if text.strip() == "" else text.replace("\n", "⏎")


def token_stream_html(trace: Trace, title: str | None = None) -> str:
    """The generated text as coloured spans: one span per token, coloured by where it came from."""
    spans, i = [], 0
    for n, step in enumerate(trace.steps):
        for origin in step.origin:
            if i >= len(trace.pieces):
                break
            piece = html.escape(trace.pieces[i]).replace("\n", "⏎<br>")
            spans.append(f'<span class="tok tok-{origin}" title="step {n}: {LEGEND.get(origin, origin)}" '
                         f'style="background:{COLOURS.get(origin, "#fff")};border-radius:3px;padding:0 1px;'
                         f'margin:0 0 2px 0;white-space:pre-wrap">{piece}</span>')
            i += 1
    legend = " ".join(f'<span style="background:{c};padding:0 6px;border-radius:3px">{LEGEND[o]}</span>'
                      for o, c in COLOURS.items())
    head = f"<b>{html.escape(title or trace.method)}</b> " if title is not False else ""
    stats = (f"{trace.new_tokens} tokens · {trace.forwards} forwards · "
             f"{trace.tokens_per_forward:.2f} tokens/forward" + (f" · {trace.stop}" if trace.stop else ""))
    return (f'<div class="token-stream" style="font-family:ui-monospace,monospace;font-size:13px;line-height:1.7">'
            f'<div style="margin-bottom:4px">{head}<span style="color:#666">{stats}</span></div>'
            f'<div class="token-text">{"".join(spans)}</div>'
            f'<div style="margin-top:4px;font-size:11px">{legend}</div></div>')


def speculative_steps(trace: Trace) -> list[int]:
    """Indices of the steps that proposed a draft."""
    return [i for i, s in enumerate(trace.steps) if s.proposed]


def step_root(trace: Trace, index: int) -> int | None:
    """The token the draft of step `index` hangs from: the last one committed before it."""
    committed = [t for s in trace.steps[:index] for t in s.committed]
    if committed:
        return committed[-1]
    return trace.prompt[-1] if trace.prompt else None


def tree_layout(parents: list[int]) -> tuple[list[float], list[float]]:
    """x = depth, y = leaf order (leaves stacked, parents centred on their children); root is node -1."""
    children: dict[int, list[int]] = {}
    for i, p in enumerate(parents):
        children.setdefault(p, []).append(i)
    ys: dict[int, float] = {}
    next_leaf = [0.0]

    def place(node: int) -> float:
        kids = children.get(node, [])
        if not kids:
            ys[node] = next_leaf[0]
            next_leaf[0] += 1
        else:
            ys[node] = sum(place(k) for k in kids) / len(kids)
        return ys[node]

    place(-1)
    d = depths(parents)
    return [0.0] + [float(x) for x in d], [-ys[-1]] + [-ys[i] for i in range(len(parents))]


def draft_tree_figure(trace: Trace, index: int | None = None) -> go.Figure:
    """The draft tree of one step (default: the one with the longest accepted path), accepted path highlighted."""
    spec = speculative_steps(trace)
    fig = go.Figure()
    if not spec:
        fig.add_annotation(text="no draft proposed in this run", showarrow=False, x=0.5, y=0.5,
                           xref="paper", yref="paper")
        fig.update_layout(height=220, xaxis_visible=False, yaxis_visible=False, margin=dict(l=10, r=10, t=30, b=10))
        return fig
    index = max(spec, key=lambda i: len(trace.steps[i].accepted)) if index is None else index
    step = trace.steps[index]
    xs, ys = tree_layout(step.parents)
    accepted = set(step.accepted)
    ex, ey, ax, ay = [], [], [], []
    for i, p in enumerate(step.parents):
        tx, ty = (ax, ay) if i in accepted else (ex, ey)
        tx += [xs[p + 1], xs[i + 1], None]
        ty += [ys[p + 1], ys[i + 1], None]
    fig.add_trace(go.Scatter(x=ex, y=ey, mode="lines", line=dict(color=REJECTED, width=1), hoverinfo="skip",
                             name="proposed"))
    fig.add_trace(go.Scatter(x=ax, y=ay, mode="lines", line=dict(color=ACCEPTED, width=3), hoverinfo="skip",
                             name="accepted"))
    root = step_root(trace, index)
    labels = [_show(trace.token_text(root)) if root is not None else "root"]
    labels += [_show(trace.token_text(t)) for t in step.proposed]
    colours = [ROOT] + [ACCEPTED if i in accepted else REJECTED for i in range(len(step.proposed))]
    probs = [""] + [f"p_draft={p:.3f}" for p in (step.draft_probs or [1.0] * len(step.proposed))]
    big = len(step.proposed) > 60
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers" if big else "markers+text", text=labels,
                             textposition="top center", marker=dict(size=7 if big else 11, color=colours),
                             customdata=probs, hovertemplate="%{text}<br>%{customdata}<extra></extra>",
                             name="tokens"))
    if step.bonus is not None:  # the target's own token after the accepted path
        last = step.accepted[-1] + 1 if step.accepted else 0
        bx, by = xs[last] + 1, ys[last] - 0.45  # below any drafted sibling at that depth
        fig.add_trace(go.Scatter(x=[xs[last], bx], y=[ys[last], by], mode="lines+markers+text",
                                 line=dict(color=BONUS, dash="dot"), marker=dict(size=[0, 12], color=BONUS),
                                 text=["", _show(trace.token_text(step.bonus))], textposition="top center",
                                 name="bonus", hovertemplate="bonus %{text}<extra></extra>"))
    rows = max(ys) - min(ys) + 1  # one row per leaf: the height grows with the tree's width, not its size
    fig.update_layout(title=f"{trace.method} · step {index}: {len(step.proposed)} proposed, "
                            f"{len(step.accepted)} accepted", height=int(min(900, max(260, 140 + 26 * rows))),
                      showlegend=False, xaxis=dict(title="depth", dtick=1, zeroline=False),
                      yaxis=dict(visible=False, range=[min(ys) - 0.8, max(ys) + 0.8]),  # room for the labels
                      margin=dict(l=20, r=20, t=50, b=30), plot_bgcolor="white")
    return fig


def acceptance_figure(trace: Trace) -> go.Figure:
    """Accepted length per step, its histogram, and tokens per forward as the run goes on."""
    spec = [s for s in trace.steps if s.proposed]
    fig = make_subplots(rows=1, cols=3, subplot_titles=("accepted per step", "histogram of accepted length",
                                                        "tokens per forward (running)"))
    lengths = [len(s.accepted) for s in spec]
    fig.add_trace(go.Bar(x=list(range(len(lengths))), y=lengths, marker_color=ACCEPTED, name="accepted",
                         hovertemplate="step %{x}: %{y} accepted<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Bar(x=[s for s in range(max(lengths, default=0) + 1)],
                         y=[lengths.count(k) for k in range(max(lengths, default=0) + 1)],
                         marker_color=BONUS, name="count"), row=1, col=2)
    tokens = forwards = 0
    xs, ys = [], []
    for s in trace.steps:
        tokens += len(s.committed)
        forwards += s.forwards
        if forwards:
            xs.append(tokens)
            ys.append(tokens / forwards)
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="#d62728"), name="tokens/forward"),
                  row=1, col=3)
    fig.update_xaxes(title_text="verification step", row=1, col=1)
    fig.update_xaxes(title_text="accepted draft tokens", row=1, col=2)
    fig.update_xaxes(title_text="tokens generated", row=1, col=3)
    fig.update_layout(height=300, showlegend=False, margin=dict(l=40, r=20, t=60, b=40),
                      title=f"{trace.method}: tau = {trace.mean_accepted:.2f}, "
                            f"{trace.tokens_per_forward:.2f} tokens/forward")
    return fig
