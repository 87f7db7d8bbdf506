"""The arena's Routes tab: the information-flow route behind a prediction of the arena's prompt, or behind a
speculative run's first rejected draft, with its logit lens.

"Information Flow Routes: Automatically Interpreting Language Models at Scale" (Ferrando & Voita, 2024). As in the
Drafters tab, the work runs on a worker thread with its own Lab (shared weights, own caches) and a periodic
callback draws what it left. Prompts are capped (`MAX_TOKENS`): a Flow holds O(layers x tokens^2 x heads) floats.
Clicking an edge's marker shows its per-head importances.
"""
from __future__ import annotations

import html
import threading
import traceback

import panel as pn
import plotly.graph_objects as go

from .. import interp
from ..errors import LabError
from ..widgets.flow_figures import edge_heads_figure, lens_figure, route_figure

MAX_TOKENS = 384
PROMPT = "the arena's prompt"


def empty(text: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    return fig.update_layout(height=160, xaxis_visible=False, yaxis_visible=False)


class RoutesTab:
    """One browser session's Routes tab; reads the model, prompt and finished runs from its Arena."""

    def __init__(self, arena):
        self.arena = arena
        self.source = pn.widgets.Select(name="Explain", options=[PROMPT], value=PROMPT)
        self.tau = pn.widgets.FloatSlider(name="tau", start=0.01, end=0.5, step=0.01, value=interp.TAU)
        self.position = pn.widgets.IntInput(name="Predict after token (-1: the last)", value=-1)
        self.final_norm = pn.widgets.Checkbox(name="logit lens through the final norm", value=True)
        self.start_button = pn.widgets.Button(name="Draw the route", button_type="primary")
        self.status = pn.pane.HTML("Draws the route to one prediction of the prompt, or to a run's first rejected "
                                   "draft.", css_classes=["routes-status"])  # plain text, escaped
        self.route = pn.pane.Plotly(empty("no route yet"), sizing_mode="stretch_width")
        self.details = pn.pane.Plotly(empty("click an edge's marker for its heads"), sizing_mode="stretch_width")
        self.lens = pn.pane.Plotly(empty("no lens yet"), sizing_mode="stretch_width", min_width=720)
        self.message = self.status.object
        self.busy = False
        self.result: tuple | None = None  # (route, event, lens) left by the worker
        self._drawn = None
        self.start_button.on_click(self.start)
        self.route.param.watch(self._on_click, "click_data")

    # -- running (worker thread) -------------------------------------------------------------------
    def start(self, event=None) -> None:
        if self.busy:
            return
        self.busy = True
        self.message = "Loading the model ..."
        threading.Thread(target=self._work, args=(self.settings(),), daemon=True).start()
        self.refresh()

    def settings(self) -> dict:
        s = self.arena.settings()
        source = self.source.value if self.source.value in self.source.options else PROMPT  # a browser can send any
        trace = self.arena.traces.get(source.split(":")[0]) if source != PROMPT else None
        return dict(model=trace.model if trace is not None else s["model"], prompt=s["prompt"], chat=s["chat"],
                    trace=trace,
                    tau=min(max(float(self.tau.value), self.tau.start), self.tau.end),
                    position=int(self.position.value), final_norm=bool(self.final_norm.value))

    def _work(self, s: dict) -> None:
        try:
            lab = self.arena.labs.get(s["model"]).fork()
            self.message = "Computing the route ..."
            if s["trace"] is not None:
                event = interp.rejection(lab, s["trace"], tau=s["tau"])
                if event is None:
                    raise LabError("this run rejected no draft token: nothing to explain")
                flow, route, track = event.flow, event.route, (event.target, event.draft)
            else:
                ids = lab.encode(s["prompt"], s["chat"])
                if len(ids) > MAX_TOKENS:
                    raise LabError(f"the prompt has {len(ids)} tokens; routes here take at most {MAX_TOKENS}")
                flow = interp.flow(lab, ids)
                event, route = None, flow.route(s["position"], s["tau"])
                track = (route.predicted,)
            lens = interp.logit_lens(lab, flow, list(range(max(0, route.position - 7), route.position + 1)),
                                     final_norm=s["final_norm"], track=track)
            self.result = (route, event, lens)
            self.message = f"Route of {route.size} edges over {len(route.nodes)} streams."
        except LabError as err:
            self.message = f"Error: {err}"
        except Exception as err:  # say what broke, keep the last route
            traceback.print_exc()
            self.message = f"Error: {type(err).__name__}: {err}"
        finally:
            self.busy = False

    # -- drawing (session thread) --------------------------------------------------------------------
    def refresh(self) -> None:
        """Offer the finished runs that rejected a draft; draw a new result once."""
        self.start_button.disabled = self.busy
        self.status.object = html.escape(self.message)
        runs = [f"{name}: first rejected draft" for name, t in self.arena.traces.items()
                if t.stop and interp.first_rejection(t) is not None]
        if [PROMPT, *runs] != list(self.source.options):
            self.source.options = [PROMPT, *runs]
        if self.result is not None and self.result is not self._drawn:
            self._drawn = route, event, lens = self.result
            self.route.object = route_figure(route, event)
            self.lens.object = lens_figure(lens)
            self.details.object = empty("click an edge's marker for its heads")

    def _on_click(self, event) -> None:
        points = (event.new or {}).get("points") or []
        if self._drawn is None or not points or "customdata" not in points[0]:
            return
        route, rejection, _ = self._drawn
        index = int(points[0]["customdata"])
        if 0 <= index < len(route.edges):
            self.details.object = edge_heads_figure(route, index, rejection)

    def view(self) -> pn.viewable.Viewable:
        pn.state.add_periodic_callback(self.refresh, period=300)
        return pn.Column(pn.Row(self.source, self.tau, self.position, self.final_norm, self.start_button),
                         self.status, self.route, self.details, self.lens, sizing_mode="stretch_width")
