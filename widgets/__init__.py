"""Views of Traces (installed as lab.widgets): ipywidgets for notebooks, the same figures for Panel.

Every view takes a Trace (or lab.interp data: a Flow, a Lens, a Rejection) and never calls a model. `figures` and
`flow_figures` hold the pure data -> figure/HTML functions that both the ipywidgets here and the Panel apps use.
"""
from .acceptance import Acceptance
from .analysis import (  # noqa: F401
           acceptance_scaling_figure,
           bench_figures,
           drafters_figure,
           position_acceptance_figure,
           speedup_contour_figure,
)
from .commitment_view import CommitmentView
from .dllm_figures import (  # noqa: F401
           canvas_html,
           commitment_figure,
           confidence_figure,
           predictions_figure,
           tradeoff_figure,
)
from .draft_tree import DraftTree
from .figures import acceptance_figure, draft_tree_figure, token_stream_html
from .flow_figures import edge_heads_figure, head_frequency_figure, lens_figure, route_figure
from .flow_routes import FlowRoutes
from .lens_view import LensView
from .overlap_figure import overlap_timeline_figure  # noqa: F401
from .token_stream import TokenStream

__all__ = ["TokenStream", "DraftTree", "Acceptance", "FlowRoutes", "LensView", "token_stream_html",
           "draft_tree_figure", "acceptance_figure", "route_figure", "edge_heads_figure", "lens_figure",
           "head_frequency_figure", "CommitmentView"]
