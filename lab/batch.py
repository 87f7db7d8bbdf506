"""Decode several prompts together: one backend holding B rows, one Decoding and one Trace per prompt.

A batched method is a generator over `Rows`, registered with `@batched(name)`: each round it yields
{prompt index: Step} for the rows it advanced. `generate_batch` commits every row's Step with the single-prompt
rules (`Decoding.commit`), so each prompt gets an ordinary Trace and Result; a row that is done leaves the
backend (`retire`) and stops costing. A single prompt is a batch of one (`Rows.of_one`), so the one speculative
loop serves both.
"""
from __future__ import annotations

import functools
import random
import time
from typing import Callable, Iterator

import torch

from . import registry
from .backends import Backend
from .decoding import Call, Decoding, drive
from .errors import LabError
from .sampling import Sampling, generator
from .trace import Step, Trace


class Rows:
    """The rows of a batch (one Decoding per prompt, sharing the sampling rule) and the backend holding them.

    `live` lists, in the backend's row order, the prompt index of every row still decoding.
    """

    def __init__(self, rows: list[Decoding], target: Backend, lab=None, batched: bool = True):
        self.rows = rows
        self.target = target
        self.lab = lab  # drafters build their draft backends from it
        self.batched = batched  # a batched method runs it (its Steps say the batch size)
        self.live = list(range(len(rows)))

    @classmethod
    def of_one(cls, dec: Decoding, batched: bool = False) -> "Rows":
        return cls([dec], dec.target, dec.lab, batched)

    @property
    def single(self) -> bool:
        return len(self.rows) == 1

    def live_rows(self) -> list[Decoding]:
        return [self.rows[i] for i in self.live]

    def prefill(self) -> torch.Tensor:
        """Run every prompt (one forward); return the logits of each row's first new token [B, V]."""
        start = time.perf_counter()
        if self.single:
            logits = self.target.prefill(self.rows[0].prompt)[None]
        else:
            logits = self.target.prefill_rows([dec.prompt for dec in self.live_rows()])
        for dec in self.live_rows():
            dec.prefill_s = time.perf_counter() - start
        return logits

    def retire(self) -> list[int]:
        """Drop the rows that are done from the backend; return the kept positions (in the old row order)."""
        kept = [b for b, i in enumerate(self.live) if not self.rows[i].done]
        if len(kept) < len(self.live):
            if kept:
                self.target.select(kept)
            self.live = [self.live[b] for b in kept]
        return kept


def batch_of_one(fn: Callable) -> Callable:
    """The single-prompt face of a batched method: run `fn` on a batch that holds only `dec`."""

    @functools.wraps(fn)
    def single(dec: Decoding, **options) -> Iterator[Step]:
        for steps in fn(Rows.of_one(dec, batched=True), **options):
            if 0 in steps:
                yield steps[0]

    return single


def run_batch(lab, batch: Rows, rounds: Iterator[dict[int, Step]], traces: list[Trace]) -> None:
    """Commit each round's Steps row by row with `drive`'s rules; a Step's wall time is its round's."""
    last = time.perf_counter()
    try:
        for steps in rounds:
            wall = time.perf_counter() - last
            for i, step in steps.items():
                dec, trace = batch.rows[i], traces[i]
                if dec.done:
                    continue
                for _ in drive(dec, iter([step]), trace, lab._piece, None, lab.token_text):
                    pass
                step.wall_s = wall
                trace.wall_s = sum(s.wall_s for s in trace.steps)
            if all(dec.done for dec in batch.rows):
                break
            last = time.perf_counter()
    finally:
        if hasattr(rounds, "close"):
            rounds.close()
        for dec, trace in zip(batch.rows, traces):
            trace.stop = dec.stopped or "done"
            trace.text = lab.decode(trace.tokens)


def batched_method(method: str) -> Callable:
    """The batched implementation of a registered method, or a clear error listing those that have one."""
    registry.get(method)
    if method not in registry.BATCHED:
        raise LabError(f"method {method!r} has no batched implementation; batched methods: "
                       f"{', '.join(sorted(registry.BATCHED))} (or run the prompts one by one)")
    return registry.BATCHED[method]


def generate_batch(lab, method: str, prompts: list, *, max_new_tokens: int = 128, temperature: float = 0.0,
                   seed: int | None = None, rng: torch.Generator | None = None, chat: bool | list[bool] = False,
                   special: bool = False, sampling: Sampling | None = None, **opts) -> list[Trace]:
    """Run a batched method on several prompts at once; one Trace per prompt, in order. `chat` may be one
    flag or one per prompt."""
    fn = batched_method(method)
    options = registry.parse_options(registry.get(method), opts)
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)) or not prompts:
        raise LabError("generate_batch needs a non-empty list of prompts (texts or token-id lists)")
    chats = list(chat) if isinstance(chat, (list, tuple)) else [chat] * len(prompts)
    if len(chats) != len(prompts):
        raise LabError(f"chat: give one flag or one per prompt ({len(prompts)}), not {len(chats)}")
    sampling = sampling or Sampling(temperature=temperature)
    lab.check_budget(max_new_tokens)
    encoded = [lab.encode(p, c, special) for p, c in zip(prompts, chats)]
    for n, ids in enumerate(encoded):
        lab.check_context(ids, max_new_tokens, f"prompt {n}")
    if rng is None:
        rng = generator(lab.target.device, seed if seed is not None else random.randrange(2**63))
    target, call = lab.target.for_rows(), Call(lab)
    rows, traces = [], []
    for prompt, ids in zip(prompts, encoded):
        trace = Trace(method, model=lab.name, options=dict(options), temperature=sampling.temperature,
                      prompt=ids, prompt_text=prompt if isinstance(prompt, str) else lab.decode(ids))
        rows.append(Decoding(target, ids, sampling, rng, max_new_tokens, lab.eos, lab.tokenizer, call))
        traces.append(trace)
    batch = Rows(rows, target, call)
    run_batch(lab, batch, fn(batch, **options), traces)
    return traces
