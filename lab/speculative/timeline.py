"""When the target and the draft really ran, per round: the measured side of PEARL's overlap (Liu et al., 2024).

A `Timeline` records spans on lanes ("target", "draft") for each round of a pipelined speculative loop. A span on
a CUDA device is a pair of `torch.cuda.Event(enable_timing=True)` recorded on the stream the work was queued on,
so it says when the GPU ran it, not when the host launched it; a span on the CPU is a pair of host
`perf_counter` readings. Nothing is synchronised while recording: `resolve()` (at the end of a generation, or
when asked) waits for the events once and fills each round's dict in place with milliseconds from the round's
start. A CUDA lane and a CPU lane (DuoDecoding's CPU draft beside a GPU target) share the origin taken at the
round's start, when the target's stream has just been read back by the verifier and is idle.
"""
from __future__ import annotations

import time
from contextlib import contextmanager

import torch


class Mark:
    """One instant: an event recorded on the current CUDA stream, or the host clock."""

    __slots__ = ("event", "host")

    def __init__(self, device: torch.device):
        self.event = None
        if device.type == "cuda":
            self.event = torch.cuda.Event(enable_timing=True)
            self.event.record(torch.cuda.current_stream(device))
        self.host = time.perf_counter()


class Round:
    """One round's marks; `resolve()` fills `spans`, a plain dict (what a Step's info holds, JSON-serialisable):
    lane -> [[start_ms, end_ms], ...], `clocks` (lane -> "cuda" or "cpu"), `overlap_ms` (time the target and some
    draft forward both ran) and `draft_ms` (time some draft forward ran)."""

    def __init__(self, device: torch.device):
        self.spans: dict = {}
        self.origin = Mark(device)
        self.marks: dict[str, list[tuple[Mark, Mark]]] = {}
        self.resolved = False

    def ms(self, mark: Mark) -> float:
        if mark.event is not None and self.origin.event is not None:
            return self.origin.event.elapsed_time(mark.event)
        return (mark.host - self.origin.host) * 1e3

    def resolve(self) -> None:
        lanes = {lane: [[round(self.ms(a), 4), round(self.ms(b), 4)] for a, b in spans]
                 for lane, spans in self.marks.items()}
        self.spans.update(lanes)
        self.spans["clocks"] = {lane: "cuda" if spans[0][0].event is not None else "cpu"
                          for lane, spans in self.marks.items() if spans}
        draft = merged(lanes.get("draft", []))
        self.spans["draft_ms"] = round(sum(b - a for a, b in draft), 4)
        self.spans["overlap_ms"] = round(sum(max(0.0, min(b, d) - max(a, c)) for a, b in draft
                                       for c, d in merged(lanes.get("target", []))), 4)
        self.resolved = True


def merged(spans: list[list[float]]) -> list[list[float]]:
    """Spans sorted and overlapping ones joined (a lane's busy time)."""
    out: list[list[float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


class Timeline:
    """Rounds of spans on lanes; `round()` opens one, `span(lane, device)` times work in it, `resolve()` reads it."""

    def __init__(self):
        self.rounds: list[Round] = []

    def round(self, device: torch.device) -> dict:
        """Opens a round (its origin is now, on `device`'s current stream); returns the dict it resolves into."""
        self.rounds.append(Round(torch.device(device)))
        return self.rounds[-1].spans

    @contextmanager
    def span(self, lane: str, device: torch.device):
        """Times the work queued inside on `device` (its current stream) in the open round's `lane`."""
        if not self.rounds:
            yield
            return
        spans = self.rounds[-1].marks.setdefault(lane, [])
        start = Mark(torch.device(device))
        try:
            yield
        finally:
            spans.append((start, Mark(torch.device(device))))

    def resolve(self) -> list[dict]:
        """Every round's spans in milliseconds (waits once for the recorded events)."""
        todo = [r for r in self.rounds if not r.resolved]
        for r in todo:
            for a, b in (pair for spans in r.marks.values() for pair in spans):
                for mark in (a, b):
                    if mark.event is not None:
                        mark.event.synchronize()
            r.resolve()
        return [r.spans for r in self.rounds]


class Clocked:
    """A draft backend whose every forward (forward, decode, sync, prefill: one model call each) is a span of the
    timeline's "draft" lane; everything else goes to the backend itself."""

    def __init__(self, runner, timeline: Timeline):
        self.__dict__["_runner"], self.__dict__["_timeline"] = runner, timeline

    @property
    def bare(self):
        """The backend itself, its forwards untimed (work timed as a whole on a lane of its own)."""
        return self._runner

    def __getattr__(self, name):
        value = getattr(self._runner, name)
        if name in ("forward", "decode", "greedy_run", "sync", "prefill"):
            def timed(*args, **kwargs):
                with self._timeline.span("draft", self._runner.device):
                    return value(*args, **kwargs)
            return timed
        return value

    def __setattr__(self, name, value):
        setattr(self._runner, name, value)
