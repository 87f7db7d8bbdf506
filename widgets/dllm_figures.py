"""A diffusion Trace -> figures: when each position was committed, the canvas at a step, the confidence at each
position over the steps, and what the model predicted at the masked positions (pure data -> figure / HTML)."""
from __future__ import annotations

import html

import plotly.express as px
import plotly.graph_objects as go

from lab.trace import Trace

MASKED = "▒"


def canvas_length(trace: Trace) -> int:
    sizes = [len(s.canvas) for s in trace.steps if s.canvas is not None]
    positions = [p + 1 for s in trace.steps for p in [*s.positions, *s.info.get("masked", [])]]
    return max(sizes + positions + [len(trace.tokens)], default=0)


def commit_steps(trace: Trace) -> list[int | None]:
    """For each canvas position, the step that committed it (None: never, e.g. cut after EOS)."""
    out: list[int | None] = [None] * canvas_length(trace)
    for n, step in enumerate(trace.steps):
        for p in step.positions:
            if out[p] is None:
                out[p] = n
    return out


def grids(trace: Trace) -> dict[str, list[list]]:
    """[step][position] grids: commit (the commit step once committed, else None), token text, predicted
    confidence at masked positions (None elsewhere) and the predicted token's text."""
    length = canvas_length(trace)
    when, text, conf, guess = [], [], [], []
    committed: dict[int, tuple[int, int]] = {}
    for n, step in enumerate(trace.steps):
        for p, t in zip(step.positions, step.committed):
            committed.setdefault(p, (n, t))
        info = step.info or {}
        predicted = dict(zip(info.get("masked", []),
                             zip(info.get("predicted", []), info.get("predicted_confidence", []))))
        when.append([committed[p][0] if p in committed else None for p in range(length)])
        text.append([trace.token_text(committed[p][1]) if p in committed else MASKED for p in range(length)])
        conf.append([predicted[p][1] if p in predicted else None for p in range(length)])
        guess.append([trace.token_text(predicted[p][0]) if p in predicted else "" for p in range(length)])
    return {"when": when, "text": text, "confidence": conf, "predicted": guess}


def _label(text: str) -> str:
    return text.replace("\n", "⏎").replace(" ", "␣") if text.strip() == "" else text.replace("\n", "⏎")


def commitment_figure(trace: Trace, step: int | None = None) -> go.Figure:
    """Position x step heatmap: a cell is coloured from the step its position was committed on (blank while
    masked), so the canvas filling in reads top to bottom; a line marks `step`."""
    g = grids(trace)
    fig = go.Figure(go.Heatmap(z=g["when"], text=[[_label(t) for t in row] for row in g["text"]],
                               colorscale="Viridis", colorbar=dict(title="committed<br>at step"),
                               hovertemplate="position %{x}, step %{y}: %{text}<br>"
                                             "committed at step %{z}<extra></extra>"))
    if step is not None:
        fig.add_hline(y=step, line=dict(color="red", width=2))
    fig.update_layout(title=f"{trace.method}: when each position was committed ({trace.forwards} forwards, "
                            f"{trace.new_tokens} tokens)", xaxis_title="position", yaxis=dict(title="step",
                      autorange="reversed"), height=min(700, 160 + 14 * max(len(trace.steps), 1)),
                      margin=dict(l=50, r=20, t=50, b=40))
    return fig


def predictions_figure(trace: Trace, step: int | None = None) -> go.Figure:
    """What the model predicted at every masked position at every step (text), coloured by its confidence."""
    g = grids(trace)
    fig = go.Figure(go.Heatmap(z=g["confidence"], text=[[_label(t) for t in row] for row in g["predicted"]],
                               texttemplate="%{text}" if len(g["when"]) * canvas_length(trace) <= 1200 else None,
                               colorscale="Blues", colorbar=dict(title="confidence"),
                               hovertemplate="position %{x}, step %{y}: predicted %{text} (%{z:.3f})<extra></extra>"))
    if step is not None:
        fig.add_hline(y=step, line=dict(color="red", width=2))
    fig.update_layout(title="predictions at the masked positions", xaxis_title="position",
                      yaxis=dict(title="step", autorange="reversed"),
                      height=min(700, 160 + 14 * max(len(trace.steps), 1)), margin=dict(l=50, r=20, t=50, b=40))
    return fig


def confidence_figure(trace: Trace, positions: list[int] | None = None) -> go.Figure:
    """Confidence per position over the steps while it was masked, ending with a marker where it was committed."""
    g = grids(trace)
    when = commit_steps(trace)
    positions = positions if positions is not None else list(range(min(len(when), 64)))
    fig = go.Figure()
    for p in positions:
        xs = [n for n, row in enumerate(g["confidence"]) if row[p] is not None]
        ys = [g["confidence"][n][p] for n in xs]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=f"position {p}", line=dict(width=1),
                                 hovertemplate=f"position {p}, step %{{x}}: %{{y:.3f}}<extra></extra>"))
    done = [(when[p], p) for p in positions if when[p] is not None]
    conf = {p: c for s in trace.steps for p, c in zip(s.positions, s.confidence)}
    fig.add_trace(go.Scatter(x=[n for n, _ in done], y=[conf.get(p) for _, p in done], mode="markers",
                             marker=dict(color="black", size=6), name="committed",
                             text=[f"position {p}" for _, p in done],
                             hovertemplate="%{text} committed at step %{x} (%{y:.3f})<extra></extra>"))
    fig.update_layout(title="confidence per position until it is committed", xaxis_title="step",
                      yaxis_title="confidence", height=320, showlegend=False, margin=dict(l=50, r=20, t=50, b=40))
    return fig


def canvas_html(trace: Trace, step: int) -> str:
    """The canvas after `step`: committed tokens (this step's highlighted), masks as blocks."""
    g = grids(trace)
    if not g["text"]:
        return "<div>no steps</div>"
    step = max(0, min(step, len(g["text"]) - 1))
    spans = []
    for p, (piece, when) in enumerate(zip(g["text"][step], g["when"][step])):
        colour = "#f5d76e" if when == step else "#e8e8e8" if when is not None else "#ffffff"
        spans.append(f'<span title="position {p}" style="background:{colour};border-radius:3px;padding:0 1px;'
                     f'white-space:pre-wrap">{html.escape(piece)}</span>')
    done = sum(w is not None for w in g["when"][step])
    return (f'<div class="dllm-canvas" style="font-family:ui-monospace,monospace;font-size:13px;line-height:1.7">'
            f'<div style="color:#666">step {step}: {done} of {len(g["when"][step])} positions committed</div>'
            f'{"".join(spans)}</div>')


def tradeoff_figure(rows: list[dict], baseline: float | None = None, score: str = "task score") -> go.Figure:
    """Quality against parallelism (ParallelBench-style): one line per policy through its settings.

    `rows`: {"method", "setting", "score", "tokens_per_forward"}; `baseline`: the score of one-token-per-step
    decoding, drawn as a horizontal line (a policy worth using sits right of 1 and close to it)."""
    fig = go.Figure()
    for name in sorted({r["method"] for r in rows}):
        mine = sorted((r for r in rows if r["method"] == name), key=lambda r: r["tokens_per_forward"])
        fig.add_trace(go.Scatter(x=[r["tokens_per_forward"] for r in mine], y=[r["score"] for r in mine],
                                 mode="lines+markers", name=name, text=[str(r.get("setting", "")) for r in mine],
                                 hovertemplate=f"{name} %{{text}}<br>%{{x:.2f}} tokens/forward, "
                                               f"{score} %{{y:.3f}}<extra></extra>"))
    if baseline is not None:
        fig.add_hline(y=baseline, line=dict(color="grey", dash="dot"), annotation_text="one token per step")
    fig.update_layout(title=f"{score} against tokens per forward", xaxis_title="tokens per forward",
                      yaxis_title=score, height=max(420, 90 + 21 * len(fig.data)),  # room for every legend entry
                      margin=dict(l=50, r=20, t=50, b=40),
                      colorway=px.colors.qualitative.Dark24)  # a colour per policy (the default ten repeat)
    return fig
