"""DraftTree: the draft tree a step proposed, the accepted path highlighted, a slider over steps."""
from __future__ import annotations

import ipywidgets as W
import plotly.graph_objects as go

from lab.trace import Trace

from .figures import draft_tree_figure, speculative_steps


class DraftTree(W.VBox):
    def __init__(self, trace: Trace, **kwargs):
        self.trace = trace
        self.steps = speculative_steps(trace) or [0]
        self.slider = W.SelectionSlider(options=self.steps, value=self.steps[0], description="step",
                                        continuous_update=False, layout=W.Layout(width="95%"))
        self.figure = go.FigureWidget(draft_tree_figure(trace, self.steps[0] if speculative_steps(trace) else None))
        self.slider.observe(self._on_step, names="value")
        super().__init__([self.slider, self.figure], **kwargs)

    def _on_step(self, change) -> None:
        self.show(change["new"])

    def show(self, index: int) -> None:
        """Redraw for the step at `index` (an index into trace.steps)."""
        fresh = draft_tree_figure(self.trace, index)
        with self.figure.batch_update():
            self.figure.data = []
            self.figure.add_traces(fresh.data)
            self.figure.layout = fresh.layout
