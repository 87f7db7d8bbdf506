"""The arena's Diffusion tab: diffusion-LM commitment policies side by side, live, on the arena's prompt.

Each chosen policy decodes on its own stream of one worker thread (a fork of the dLLM's Lab each); the worker
steps the streams in turn, one denoiser round each, so the canvases fill in together and a policy that commits
more tokens per forward visibly finishes first. A periodic callback on the session's thread redraws each
policy's canvas (the lab's CommitmentView pieces: the canvas at its latest step, and the position x step map of
when each token was committed) and its tokens per forward. With no diffusion LM to load (dllm-default not shipped
yet) the tab says so in one line and names the models this server can load.
"""
from __future__ import annotations

import html
import threading
import traceback

import panel as pn

from .. import registry
from ..dllm import models as dllm_models
from ..bench.quality import parse_spec
from ..errors import LabError
from ..trace import Trace
from ..widgets.dllm_figures import canvas_html, commitment_figure

DEFAULT_POLICIES = ["llada", "fast-dllm", "freedave"]


def policies() -> list[str]:
    """The diffusion policies that decode on a dLLM itself (deer drafts for an autoregressive model instead; apd
    decodes on the dLLM and loads its autoregressive verifier, the default model, through the dLLM's Lab)."""
    return sorted(n for n, m in registry.load_all().items() if m.family == "diffusion" and "draft" not in m.options)


def diffusion_models(labs) -> list[str]:
    """The dLLMs this server can load: dllm-default once shipped, LLaDA / Dream ids and `train dllm` folders it
    was started with, and loaded models that are diffusion LMs."""
    names = []
    for name in labs.allowed:
        if name == dllm_models.DEFAULT:
            if dllm_models.is_adapter(dllm_models.SHIPPED):
                names.append(name)
        elif dllm_models.claims(name):
            names.append(name)
    names += [n for n, lab in labs.loaded().items() if getattr(getattr(lab, "model", None), "dllm", None) is not None]
    if dllm_models.is_adapter(dllm_models.SHIPPED) and labs.allow_any:
        names.append(dllm_models.DEFAULT)
    return list(dict.fromkeys(names))


def none_message(labs) -> str:
    """One line: why there is no diffusion LM to pick, what this server loads, and how to serve one."""
    why = ("dllm-default is not shipped yet (python -m lab train dllm makes it)"
           if not dllm_models.is_adapter(dllm_models.SHIPPED) else "this server was not started with one")
    return (f"No diffusion LM here: {why}. This server loads {', '.join(labs.allowed)}; serve one with "
            "python -m lab serve --model default --model dllm-default (or --model DIR, a folder from "
            "python -m lab train dllm).")


class DiffusionTab:
    """One browser session's Diffusion tab; reads the prompt and settings from its Arena."""

    def __init__(self, arena):
        self.arena = arena
        models = diffusion_models(arena.labs)
        self.model = pn.widgets.Select(name="Diffusion LM", options=models, value=models[0] if models else None,
                                       disabled=not models)
        names = policies()
        self.policies = pn.widgets.MultiChoice(name="Policies", options=names,
                                               value=[p for p in DEFAULT_POLICIES if p in names])
        self.extra = pn.widgets.TextInput(name="More settings (policy:key=value, comma-separated)",
                                          placeholder="ssd-dllm:block_size=16:drafts=16:order=leftmost-2@0.7:lookup=3, "
                                                      "fast-dllm:threshold=0.5")
        self.start_button = pn.widgets.Button(name="Run the policies", button_type="primary", disabled=not models)
        self.stop_button = pn.widgets.Button(name="Stop the policies", button_type="warning", disabled=True)
        if models:
            self.message = "Runs the chosen policies side by side on the arena's prompt."
        else:
            self.message = none_message(arena.labs)
        self.status = pn.pane.HTML(html.escape(self.message), css_classes=["diffusion-status"])  # escaped text
        self.panes = pn.Row(sizing_mode="stretch_width")

        self.traces: dict[str, Trace] = {}
        self.errors: dict[str, str] = {}
        self.busy = False
        self._shown: dict[str, Trace] | None = None
        self._drawn: dict[str, tuple] = {}
        self._cancel = threading.Event()
        self.start_button.on_click(self.start)
        self.stop_button.on_click(lambda e: self._cancel.set())

    # -- running (worker thread) -------------------------------------------------------------------
    def start(self, event=None) -> None:
        if self.busy or self.model.value not in self.model.options:  # a browser can send anything
            return
        try:
            chosen = self.runs()
        except LabError as err:
            self.message = f"Error: {err}"
            return self.refresh()
        if not chosen:
            self.message = "Choose at least one policy."
            return self.refresh()
        self.busy = True
        self._cancel.clear()
        self.message = "Loading the diffusion LM ..."
        threading.Thread(target=self._work, args=(chosen, dict(self.arena.settings(), model=self.model.value)),
                         daemon=True).start()
        self.refresh()

    def runs(self) -> list[tuple[str, str, dict]]:
        """(label, policy, options) of every run: the chosen policies with their defaults, then the extra settings."""
        out = [(p, p, {}) for p in self.policies.value if p in self.policies.options]  # a browser can send anything
        for spec in (x for x in self.extra.value.split(",") if x.strip()):
            name, options = parse_spec(spec)
            if name not in self.policies.options:
                raise LabError(f"unknown policy {name!r} in {spec.strip()!r}: use {', '.join(self.policies.options)}")
            options = registry.parse_options(registry.get(name), options)
            out.append((name + "".join(f" {k}={v}" for k, v in options.items()), name, options))
        return list({label: (label, p, o) for label, p, o in out}.values())

    def _work(self, chosen: list[tuple[str, str, dict]], s: dict) -> None:
        try:
            lab = self.arena.labs.get(s["model"]).fork()
            if getattr(lab.model, "dllm", None) is None:
                raise LabError(f"{s['model']} is not a diffusion LM")
            traces, self.errors = {label: Trace(p) for label, p, _ in chosen}, {}
            streams = {}
            for label, p, options in chosen:
                try:
                    streams[label] = lab.stream(p, s["prompt"], chat=s["chat"], max_new_tokens=s["max_new_tokens"],
                                                temperature=0.0, seed=s["seed"], trace=traces[label],
                                                cancel=self._cancel.is_set, **options)
                except LabError as err:
                    self.errors[label] = str(err)
            self.traces = traces  # shown from now on
            self.message = "Running " + ", ".join(streams) + " ..."
            while streams and not self._cancel.is_set():
                for p, stream in list(streams.items()):  # one denoiser round each, in turn
                    try:
                        next(stream)
                    except StopIteration:
                        del streams[p]
                    except Exception as err:  # one broken policy does not stop the others
                        if not isinstance(err, LabError):
                            traceback.print_exc()
                        self.errors[p] = f"{type(err).__name__}: {err}" if not isinstance(err, LabError) else str(err)
                        del streams[p]
            for stream in streams.values():
                stream.close()
            self.message = "Stopped." if self._cancel.is_set() else f"Done: {len(chosen)} runs."
        except LabError as err:
            self.message = f"Error: {err}"
        except Exception as err:
            traceback.print_exc()
            self.message = f"Error: {type(err).__name__}: {err}"
        finally:
            self.busy = False

    # -- drawing (session thread) --------------------------------------------------------------------
    @staticmethod
    def header(name: str, trace: Trace, error: str | None) -> str:
        state = html.escape(error) if error else trace.stop or "running"
        return (f'<div class="diffusion-header"><b>{html.escape(name)}</b>: {trace.new_tokens} tokens, '
                f'{trace.forwards} forwards, <span class="tokens-per-forward">'
                f'{trace.tokens_per_forward:.2f}</span> tokens/forward ({state})</div>')

    def refresh(self) -> None:
        """Redraw the policies whose traces moved since the last call."""
        self.start_button.disabled = self.busy or not self.model.options
        self.stop_button.disabled = not self.busy
        self.status.object = html.escape(self.message)
        traces = self.traces
        if traces is not self._shown:  # a new run: one column per policy
            self._shown, self._drawn = traces, {}
            self.panes.objects = [pn.Column(pn.pane.HTML("", sizing_mode="stretch_width"),
                                            pn.pane.HTML("", sizing_mode="stretch_width",
                                                         css_classes=["diffusion-canvas"]),
                                            pn.pane.Plotly(commitment_figure(t), sizing_mode="stretch_width"),
                                            sizing_mode="stretch_width", css_classes=["diffusion-policy"])
                                  for t in traces.values()]
        for column, (name, trace) in zip(self.panes.objects, list(traces.items())):
            state = (len(trace.steps), trace.stop, self.errors.get(name))
            if self._drawn.get(name) == state:
                continue
            self._drawn[name] = state
            head, canvas, figure = column.objects
            head.object = self.header(name, trace, self.errors.get(name))
            canvas.object = canvas_html(trace, len(trace.steps) - 1) if trace.steps else "<div>waiting</div>"
            figure.object = commitment_figure(trace)

    def view(self) -> pn.viewable.Viewable:
        pn.state.add_periodic_callback(self.refresh, period=300)
        return pn.Column(pn.Row(self.model, self.policies, self.extra, pn.Column(self.start_button, self.stop_button)),
                         self.status, self.panes, sizing_mode="stretch_width")
