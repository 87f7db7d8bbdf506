"""LensView: the logit lens of some positions (top token and probability per layer), and tracked tokens' ranks.

Takes a lab.interp Lens (computed by lab.interp.logit_lens); never calls a model.
"""
from __future__ import annotations

import plotly.graph_objects as go

from lab.interp import Lens

from .flow_figures import lens_figure


class LensView(go.FigureWidget):
    def __init__(self, lens: Lens, **kwargs):
        super().__init__(lens_figure(lens), **kwargs)
