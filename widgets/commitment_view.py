"""CommitmentView: how a diffusion LM filled its canvas, step by step (a slider that plays)."""
from __future__ import annotations

import ipywidgets as W
import plotly.graph_objects as go

from lab.trace import Trace

from .dllm_figures import canvas_html, commitment_figure, confidence_figure, predictions_figure


class CommitmentView(W.VBox):
    """The canvas at a step (slider / play), when each position was committed, the predictions at the masked
    positions over the steps, and the confidence per position."""

    def __init__(self, trace: Trace, **kwargs):
        self.trace = trace
        last = max(len(trace.steps) - 1, 0)
        self.slider = W.IntSlider(value=last, min=0, max=last, description="step", continuous_update=True,
                                  layout=W.Layout(width="80%"))
        self.play = W.Play(value=last, min=0, max=last, interval=300, description="play")
        W.jslink((self.play, "value"), (self.slider, "value"))
        self.canvas = W.HTML(canvas_html(trace, last))
        self.commitment = go.FigureWidget(commitment_figure(trace, last))
        self.predictions = go.FigureWidget(predictions_figure(trace, last))
        self.confidence = go.FigureWidget(confidence_figure(trace))
        tabs = W.Tab([self.commitment, self.predictions, self.confidence])
        for i, title in enumerate(("when committed", "predictions", "confidence")):
            tabs.set_title(i, title)
        self.slider.observe(self._on_step, names="value")
        super().__init__([W.HBox([self.play, self.slider]), self.canvas, tabs], **kwargs)

    def _on_step(self, change) -> None:
        self.show(change["new"])

    def show(self, step: int) -> None:
        """Move every view to `step` (an index into trace.steps)."""
        self.canvas.value = canvas_html(self.trace, step)
        for figure in (self.commitment, self.predictions):
            with figure.batch_update():
                figure.layout.shapes[0].y0 = figure.layout.shapes[0].y1 = step
