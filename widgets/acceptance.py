"""Acceptance: accepted length per step, its histogram, and tokens per forward."""
from __future__ import annotations

import plotly.graph_objects as go

from lab.trace import Trace

from .figures import acceptance_figure


class Acceptance(go.FigureWidget):
    def __init__(self, trace: Trace, **kwargs):
        super().__init__(acceptance_figure(trace), **kwargs)

    def update_trace(self, trace: Trace) -> None:
        fresh = acceptance_figure(trace)
        with self.batch_update():
            for mine, new in zip(self.data, fresh.data):
                mine.x, mine.y = new.x, new.y
            self.layout.title = fresh.layout.title
