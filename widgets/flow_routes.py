"""FlowRoutes: a prompt's information-flow route, a tau slider, click an edge for its heads, a decoding event.

"Information Flow Routes: Automatically Interpreting Language Models at Scale" (Ferrando & Voita, 2024). The
widget takes a lab.interp Flow (the parts and importances of one forward, no model) and re-extracts the route
through lab.interp as the threshold or the position moves. With a Rejection (lab.interp.rejection) it shows the
step's first rejected position, the parts that argued for the target's token or the draft's, and the draft's exit.
"""
from __future__ import annotations

import ipywidgets as W
import plotly.graph_objects as go

from lab.interp import TAU, Flow, Rejection

from .flow_figures import edge_heads_figure, route_figure


class FlowRoutes(W.VBox):
    def __init__(self, flow: Flow, position: int = -1, tau: float = TAU, event: Rejection | None = None, **kwargs):
        self.flow, self.event = flow, event
        if event is not None:
            position = event.position
        self.tau = W.FloatLogSlider(value=tau, base=10, min=-2, max=-0.3, step=0.05, description="tau",
                                    continuous_update=False, readout_format=".3f")
        options = [(f"{p}: {flow.pieces[p]!r}", p) for p in range(len(flow))]
        self.position = W.Dropdown(options=options, value=flow.position(position), description="predict after",
                                   disabled=event is not None, layout=W.Layout(width="320px"))
        self.renormalize = W.Checkbox(value=False, description="renormalise")
        self.route = flow.route(self.position.value, tau)
        self.figure = go.FigureWidget(route_figure(self.route, event))
        self.details = go.FigureWidget(go.Figure(layout=dict(height=60, title="click an edge's marker for its heads",
                                                             xaxis_visible=False, yaxis_visible=False)))
        self._listen()
        for control in (self.tau, self.position, self.renormalize):
            control.observe(lambda change: self.redraw(), names="value")
        super().__init__([W.HBox([self.position, self.tau, self.renormalize]), self.figure, self.details], **kwargs)

    def _listen(self) -> None:
        edges = next(trace for trace in self.figure.data if trace.name == "edges")
        edges.on_click(lambda trace, points, state: points.point_inds and self.show_edge(
            int(trace.customdata[points.point_inds[0]])))

    def redraw(self) -> None:
        """Extract the route again (lab.interp) at the current tau / position and redraw it."""
        self.route = self.flow.route(self.position.value, self.tau.value, renormalize=self.renormalize.value)
        fresh = route_figure(self.route, self.event)
        with self.figure.batch_update():
            self.figure.data = []
            self.figure.add_traces(fresh.data)
            self.figure.layout = fresh.layout
        self._listen()

    def show_edge(self, index: int) -> None:
        """Show one edge's per-head importances (and, with an event, each head's push) below the route."""
        fresh = edge_heads_figure(self.route, index, self.event)
        with self.details.batch_update():
            self.details.data = []
            self.details.add_traces(fresh.data)
            self.details.layout = fresh.layout
