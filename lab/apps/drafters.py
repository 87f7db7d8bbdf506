"""The arena's Drafters tab: race the speculative methods on the arena's prompt, one bar chart filling up.

Greedy runs first (the baseline of the speedups), then each chosen speculative method (all of them when none is
chosen), on a worker thread with its own Lab, as in the arena. A periodic callback redraws tokens per forward,
tau and speedup over greedy each time another method finishes. A method that fails is reported in the table and
the race goes on.
"""
from __future__ import annotations

import html
import threading
import traceback

import pandas as pd
import panel as pn

from ..bench.spec import BASELINE, speculative_methods
from ..errors import LabError
from ..trace import Trace
from ..widgets.analysis import drafters_figure


class DraftersTab:
    """One browser session's Drafters tab; reads the prompt and settings from its Arena."""

    def __init__(self, arena):
        self.arena = arena
        self.methods = pn.widgets.MultiChoice(name="Speculative methods (none chosen: all)",
                                              options=speculative_methods(), value=[])
        self.start_button = pn.widgets.Button(name="Start the drafters", button_type="primary")
        self.stop_button = pn.widgets.Button(name="Stop the drafters", button_type="warning", disabled=True)
        self.status = pn.pane.HTML("Runs greedy, then every speculative method, on the arena's prompt.",
                                   css_classes=["drafters-status"])  # plain text, escaped
        self.chart = pn.pane.Plotly(drafters_figure({}), sizing_mode="stretch_width")
        self.table = pn.pane.DataFrame(pd.DataFrame(), index=False, sizing_mode="stretch_width")

        self.greedy: Trace | None = None
        self.traces: dict[str, Trace] = {}
        self.errors: dict[str, str] = {}
        self.message = self.status.object
        self.busy, self.current = False, ""
        self._drawn = None
        self._cancel = threading.Event()
        self.start_button.on_click(self.start)
        self.stop_button.on_click(lambda e: self._cancel.set())

    # -- running (worker thread) -------------------------------------------------------------------
    def start(self, event=None) -> None:
        if self.busy:
            return
        methods = [m for m in self.methods.value if m in self.methods.options] or list(self.methods.options)
        if not methods:
            self.message = "No speculative method is registered."
            return self.refresh()
        self.busy = True
        self._cancel.clear()
        self.message = "Loading the model ..."
        threading.Thread(target=self._work, args=(methods, self.arena.settings()), daemon=True).start()
        self.refresh()

    def _run(self, lab, name: str, trace: Trace, s: dict) -> None:
        self.message, self.current = f"Running {name} ...", name
        for _ in lab.stream(name, s["prompt"], chat=s["chat"], max_new_tokens=s["max_new_tokens"],
                            temperature=s["temperature"], seed=s["seed"], trace=trace, cancel=self._cancel.is_set):
            pass

    def _work(self, methods: list[str], s: dict) -> None:
        try:
            lab = self.arena.labs.get(s["model"]).fork()
            self.greedy, self.traces, self.errors = Trace(BASELINE), {m: Trace(m) for m in methods}, {}  # shown now
            self._drawn = None
            self._run(lab, BASELINE, self.greedy, s)
            for name in methods:
                if self._cancel.is_set():
                    break
                try:
                    self._run(lab, name, self.traces[name], s)
                except Exception as err:  # one broken method does not stop the race
                    if not isinstance(err, LabError):
                        traceback.print_exc()
                    self.errors[name] = f"{type(err).__name__}: {err}"
            finished = sum(bool(t.stop) for t in self.traces.values())
            self.message = "Stopped." if self._cancel.is_set() else f"Finished: {finished} methods."
        except Exception as err:
            self.errors[BASELINE] = f"{type(err).__name__}: {err}"
            self.message = f"Error: {self.errors[BASELINE]}"
        finally:
            self.busy, self.current = False, ""

    # -- drawing (session thread) --------------------------------------------------------------------
    def refresh(self) -> None:
        """Redraw the chart and the table when a run finished or failed since the last call."""
        self.start_button.disabled = self.busy
        self.stop_button.disabled = not self.busy
        self.status.object = html.escape(self.message)
        traces = dict(self.traces)
        state = (self.greedy.stop if self.greedy else None, tuple((n, t.stop) for n, t in traces.items()),
                 tuple(self.errors))
        if state == self._drawn:
            return
        self._drawn = state
        self.chart.object = drafters_figure({n: t for n, t in traces.items() if n not in self.errors}, self.greedy)
        self.table.object = pd.DataFrame([self._row(n, t) for n, t in traces.items()])

    def _row(self, name: str, t: Trace) -> dict:
        base = self.greedy
        rate = lambda x: x.new_tokens / max(x.wall_s, 1e-9)  # wall_s includes the prefill
        speedup = rate(t) / rate(base) if t.stop and base is not None and base.stop and base.new_tokens else None
        return {"method": name, "tokens": t.new_tokens, "forwards": t.forwards,
                "tokens/forward": round(t.tokens_per_forward, 2), "tau": round(t.mean_accepted, 2),
                "speedup": None if speedup is None else round(speedup, 2),
                "same as greedy": (t.tokens == base.tokens) if t.stop and base is not None and base.stop else None,
                "status": self.errors.get(name) or t.stop or ("running" if name == self.current else "waiting")}

    def view(self) -> pn.viewable.Viewable:
        pn.state.add_periodic_callback(self.refresh, period=300)
        return pn.Column(pn.Row(self.methods, pn.Column(self.start_button, self.stop_button)), self.status,
                         self.chart, self.table, sizing_mode="stretch_width")
