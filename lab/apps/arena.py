"""The arena: pick a model, methods and a prompt; watch each method's tokens, draft trees and acceptance live.

Runs happen on a worker thread with its own Lab (shared weights, own caches), so the UI stays live and two
browser sessions never share a cache. The worker only fills Traces; a periodic callback on the session's
thread redraws what changed, so every view updates while the steps arrive, not only at the end.
"""
from __future__ import annotations

import html
import json
import threading
import traceback
from importlib import resources

import pandas as pd
import panel as pn

from .. import registry
from ..errors import LabError
from ..trace import Trace
from ..widgets.figures import (
    acceptance_figure,
    draft_tree_figure,
    speculative_steps,
    token_stream_html,
)
from .diffusion import DiffusionTab
from .drafters import DraftersTab
from .labs import Labs
from .routes import RoutesTab

EXAMPLES = [json.loads(line) for line in
            resources.files("lab.data").joinpath("prompts.jsonl").read_text().splitlines() if line.strip()]
DEFAULT_METHODS = ["greedy", "pld", "sps"]


class Arena:
    """One browser session's arena; its models come from `labs` (shared by the server's sessions)."""

    def __init__(self, model: str = "default", labs: Labs | None = None):
        self.labs = labs or Labs([model])
        names = sorted(registry.load_all())
        served = ", ".join(self.labs.allowed) + (", a hub id or a local folder" if self.labs.allow_any else "")
        self.model = pn.widgets.TextInput(name=f"Model: {served}", value=model)
        self.methods = pn.widgets.MultiChoice(name="Methods", options=names,
                                              value=[m for m in DEFAULT_METHODS if m in names])
        self.example = pn.widgets.Select(name="Example prompt", options=[e["id"] for e in EXAMPLES],
                                         value="copy-list")
        self.prompt = pn.widgets.TextAreaInput(name="Prompt", value=self._example()["prompt"], height=140)
        self.chat = pn.widgets.Checkbox(name="wrap in the chat template", value=True)
        self.max_tokens = pn.widgets.IntSlider(name="Max new tokens", start=1, end=512, value=64)
        self.temperature = pn.widgets.FloatSlider(name="Temperature (0 = greedy)", start=0.0, end=2.0, step=0.05,
                                                  value=0.0)
        self.seed = pn.widgets.IntInput(name="Seed", value=0)
        self.run_button = pn.widgets.Button(name="Run", button_type="primary")
        self.cancel_button = pn.widgets.Button(name="Cancel", button_type="warning", disabled=True)
        self.status = pn.pane.HTML("Ready.", css_classes=["arena-status"])  # plain text, escaped
        self.streams = pn.Row(sizing_mode="stretch_width")
        self.tree_method = pn.widgets.Select(name="Method", options=[])
        self.tree_step = pn.widgets.IntSlider(name="Step", start=0, end=1, value=0, disabled=True)
        self.follow = pn.widgets.Checkbox(name="follow the latest step", value=True)
        self.tree = pn.pane.Plotly(draft_tree_figure(Trace("none")), sizing_mode="stretch_width")
        self.acceptance_method = pn.widgets.Select(name="Method", options=[])
        self.acceptance = pn.pane.Plotly(acceptance_figure(Trace("none")), sizing_mode="stretch_width")
        self.table = pn.pane.DataFrame(pd.DataFrame(), index=False, sizing_mode="stretch_width")

        self.traces: dict[str, Trace] = {}  # what is shown: a run's Traces once its model loaded
        self._shown: dict[str, Trace] | None = None
        self.error = ""
        self.message = "Ready."
        self.busy = False
        self._drawn: dict[str, int] = {}
        self._cancel = threading.Event()
        self._worker: threading.Thread | None = None

        self.example.param.watch(lambda e: setattr(self.prompt, "value", self._example()["prompt"]), "value")
        self.example.param.watch(lambda e: setattr(self.chat, "value", self._example()["chat"]), "value")
        self.run_button.on_click(self.start)
        self.cancel_button.on_click(lambda e: self._cancel.set())
        self.tree_method.param.watch(lambda e: self._draw_tree(force=True), "value")
        self.tree_step.param.watch(lambda e: self._draw_tree(force=True, user=True), "value_throttled")
        self.acceptance_method.param.watch(lambda e: self._draw_acceptance(), "value")

    def _example(self) -> dict:
        return next(e for e in EXAMPLES if e["id"] == self.example.value)

    # -- running (worker thread) -------------------------------------------------------------------
    def start(self, event=None) -> None:
        if self.busy:
            return
        methods = [m for m in self.methods.value if m in self.methods.options]  # a browser can send anything
        if not methods:
            self.message = "Choose at least one method."
            self.error = "no method"
            return self.refresh()
        self.error, self.busy = "", True
        self._cancel.clear()
        self.message = "Loading the model ..."
        self._worker = threading.Thread(target=self._work, args=({m: Trace(m) for m in methods}, self.settings()),
                                        daemon=True)
        self._worker.start()
        self.refresh()

    def settings(self) -> dict:
        """The run's settings, clamped to the sliders' ends (a browser can send any value)."""
        return dict(model=self.model.value.strip(), prompt=self.prompt.value, chat=self.chat.value,
                    max_new_tokens=min(int(self.max_tokens.value), self.max_tokens.end),
                    temperature=min(float(self.temperature.value), self.temperature.end), seed=int(self.seed.value))

    def _work(self, traces: dict[str, Trace], s: dict) -> None:
        try:
            lab = self.labs.get(s["model"]).fork()  # shared weights, caches of our own
            self.traces = traces  # shown from now on: a model that fails to load keeps the last result
            for method, trace in traces.items():
                if self._cancel.is_set():
                    break
                self.message = f"Running {method} ..."
                for _ in lab.stream(method, s["prompt"], chat=s["chat"], max_new_tokens=s["max_new_tokens"],
                                    temperature=s["temperature"], seed=s["seed"], trace=trace,
                                    cancel=self._cancel.is_set):
                    pass
            self.message = "Cancelled." if self._cancel.is_set() else "Done."
        except LabError as err:
            self.error = str(err)
            self.message = f"Error: {err}"
        except Exception as err:  # keep what finished; say what broke
            traceback.print_exc()
            self.error = f"{type(err).__name__}: {err}"
            self.message = f"Error: {self.error}"
        finally:
            self.busy = False

    # -- drawing (session thread) --------------------------------------------------------------------
    def refresh(self) -> None:
        """Redraw whatever changed since the last call."""
        self.run_button.disabled = self.busy
        self.cancel_button.disabled = not self.busy
        self.status.object = html.escape(self.message)  # error text quotes the model field: never markup
        traces = self.traces
        if traces is not self._shown:  # a run started on a loaded model: one pane per method
            self._shown, self._drawn = traces, {}
            self.streams.objects = [pn.pane.HTML(token_stream_html(t), sizing_mode="stretch_width",
                                                 css_classes=["token-stream-pane"]) for t in traces.values()]
            self.tree_method.options, self.acceptance_method.options = list(traces), list(traces)
        changed = False
        for pane, (method, trace) in zip(self.streams.objects, list(traces.items())):
            n = len(trace.steps)
            if self._drawn.get(method) != (n, trace.stop):
                self._drawn[method] = (n, trace.stop)
                pane.object = token_stream_html(trace)
                changed = True
        if changed:
            self._draw_tree()
            self._draw_acceptance()
            self._draw_table()

    def _draw_tree(self, force: bool = False, user: bool = False) -> None:
        trace = self.traces.get(self.tree_method.value)
        if trace is None:
            return
        steps = speculative_steps(trace)
        if user:
            self.follow.value = False
        if not steps:
            self.tree.object = draft_tree_figure(trace)
            return
        self.tree_step.disabled = len(steps) < 2
        self.tree_step.end = max(len(steps) - 1, 1)
        if self.follow.value and not user:
            self.tree_step.value = len(steps) - 1
        position = min(self.tree_step.value, len(steps) - 1)
        self.tree.object = draft_tree_figure(trace, steps[position])

    def _draw_acceptance(self) -> None:
        trace = self.traces.get(self.acceptance_method.value)
        if trace is not None:
            self.acceptance.object = acceptance_figure(trace)

    def _draw_table(self) -> None:
        rows = []
        for method, t in self.traces.items():
            m = t.metrics()
            rows.append({"method": method, "tokens": m["new_tokens"], "forwards": m["forwards"],
                         "tokens/forward": m["tokens_per_forward"], "tau": m["mean_accepted"],
                         "tokens/s": m["tokens_per_s"], "wall s": m["wall_s"], "stop": t.stop or "running"})
        self.table.object = pd.DataFrame(rows)

    # -- layout --------------------------------------------------------------------------------------
    def view(self) -> pn.viewable.Viewable:
        controls = pn.Column(
            "## decoding-lab arena", self.model, self.methods, self.example, self.prompt, self.chat,
            self.max_tokens, self.temperature, self.seed, pn.Row(self.run_button, self.cancel_button),
            self.status, width=340)
        tabs = pn.Tabs(
            ("Draft tree", pn.Column(pn.Row(self.tree_method, self.tree_step, self.follow), self.tree,
                                     sizing_mode="stretch_width")),
            ("Acceptance", pn.Column(self.acceptance_method, self.acceptance, sizing_mode="stretch_width")),
            ("Table", self.table), ("Drafters", DraftersTab(self).view()), ("Routes", RoutesTab(self).view()),
            ("Diffusion", DiffusionTab(self).view()),
            sizing_mode="stretch_width")
        main = pn.Column("### Tokens (green: accepted draft, blue: target after a draft, grey: target alone)",
                         self.streams, tabs, sizing_mode="stretch_width")
        layout = pn.Row(controls, main, sizing_mode="stretch_width")
        pn.state.add_periodic_callback(self.refresh, period=250)
        return layout


def create_app(model: str = "default", labs: Labs | None = None) -> pn.viewable.Viewable:
    """A fresh arena for one browser session."""
    return Arena(model, labs).view()
