"""Views of Traces (installed as lab.widgets): ipywidgets for notebooks, the same figures for Panel.

Every view takes a Trace and never calls a model. `figures` holds the pure Trace -> figure/HTML functions
that both the ipywidgets here and the Panel apps use.
"""
from .acceptance import Acceptance
from .analysis import (  # noqa: F401
           acceptance_scaling_figure,
           bench_figures,
           drafters_figure,
           position_acceptance_figure,
           speedup_contour_figure,
)
from .draft_tree import DraftTree
from .figures import acceptance_figure, draft_tree_figure, token_stream_html
from .token_stream import TokenStream

__all__ = ["TokenStream", "DraftTree", "Acceptance", "token_stream_html", "draft_tree_figure",
           "acceptance_figure"]
