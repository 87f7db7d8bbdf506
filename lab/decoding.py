"""What a method sees while it runs: the target backend, the sampling rule, one random stream, the output.

A method is a generator over `Decoding`: it proposes, scores through `dec.target` and yields a `Step` to
commit (position, token) pairs. `drive` applies each step by position (cutting it at EOS and at the token
budget), times it and hands it on, so every method gets the same stopping rules, Trace and streaming.
"""
from __future__ import annotations

import time
from typing import Callable, Iterator

import torch

from .backends import Backend
from .sampling import Sampling, draw
from .trace import Step, Trace


class Decoding:
    """The state of one generation, shared by the method and the driver.

    `tokens` is the output so far, contiguous from position 0; `canvas` holds positions committed beyond it
    (a diffusion method commits out of order), which join `tokens` once every position before them is there.
    """

    def __init__(self, target: Backend, prompt: list[int], sampling: Sampling, rng: torch.Generator | None,
                 max_new_tokens: int, eos: set[int], tokenizer=None, lab=None):
        self.target = target
        self.prompt = list(prompt)
        self.sampling = sampling
        self.rng = rng
        self.max_new_tokens = max_new_tokens
        self.eos = set(eos)
        self.tokenizer = tokenizer
        self.lab = lab  # the Lab that runs this decoding (drafts and forks come from it)
        self.tokens: list[int] = []
        self.canvas: dict[int, int] = {}
        self.stopped = ""
        self.prefill_s = 0.0

    @property
    def context(self) -> list[int]:
        """Prompt plus the contiguous output so far."""
        return self.prompt + self.tokens

    @property
    def remaining(self) -> int:
        return self.max_new_tokens - len(self.tokens) - len(self.canvas)

    @property
    def done(self) -> bool:
        return bool(self.stopped)

    @property
    def greedy(self) -> bool:
        return self.sampling.greedy

    def prefill(self) -> torch.Tensor:
        """Run the prompt through the target; return the logits of the first new token."""
        start = time.perf_counter()
        logits = self.target.prefill(self.prompt)
        self.prefill_s = time.perf_counter() - start
        return logits

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """The target distribution for these logits under the sampling rule (one-hot at temperature 0)."""
        return self.sampling.probs(logits)

    def choose(self, logits: torch.Tensor) -> int:
        """The next token: argmax at temperature 0, else a draw from the warped distribution."""
        if self.sampling.greedy:
            return int(logits.argmax(-1))
        return int(draw(self.sampling.probs(logits), self.rng))

    def uniform(self) -> float:
        """One uniform number from the run's random stream."""
        return float(torch.rand((), generator=self.rng, device=self.rng.device if self.rng is not None else "cpu"))

    def commit(self, step: Step) -> int:
        """Apply a step's (position, token) pairs; cut it to what was taken. Returns how many tokens joined
        the contiguous output. Positions default to appending after everything committed so far."""
        start = len(self.tokens)
        positions = list(step.positions) or list(range(start + len(self.canvas),
                                                       start + len(self.canvas) + len(step.committed)))
        if len(positions) != len(step.committed):
            raise ValueError(f"a step commits {len(step.committed)} tokens at {len(positions)} positions")
        taken = []
        for i, (position, token) in enumerate(zip(positions, step.committed)):
            if self.stopped:
                break
            if position < len(self.tokens) or position in self.canvas or position < 0:
                raise ValueError(f"position {position} is committed twice")
            if position >= self.max_new_tokens:
                continue
            self.canvas[position] = int(token)
            taken.append(i)
            while len(self.tokens) in self.canvas:
                self.tokens.append(self.canvas.pop(len(self.tokens)))
                if self.tokens[-1] in self.eos:
                    self.stopped = "eos"
                    self.canvas.clear()  # nothing after the end of the text counts
                    break
        if not self.stopped and len(self.tokens) >= self.max_new_tokens:
            self.stopped = "length"
        taken = [i for i in taken if positions[i] < len(self.tokens) or positions[i] in self.canvas]
        pick = lambda values: [values[i] for i in taken] if values else []  # noqa: E731
        step.committed, step.origin = [int(t) for t in pick(step.committed)], pick(step.origin)
        step.confidence, step.positions = pick(step.confidence), pick(positions)
        return len(self.tokens) - start


class Call:
    """What a method sees of the Lab during one call (`dec.lab`): the Lab's settings and tokenizer, and draft
    backends forked for this call, so that calls running at the same time never share a cache."""

    def __init__(self, lab):
        self._lab = lab
        self._drafts: dict[str, Backend] = {}

    def draft(self, spec: str) -> Backend:
        if spec not in self._drafts:
            self._drafts[spec] = self._lab.draft(spec).fork()
        return self._drafts[spec]

    def __getattr__(self, name):
        return getattr(self._lab, name)


def drive(dec: Decoding, steps: Iterator[Step], trace: Trace, decode_piece: Callable[[list[int], int], str],
          cancel: Callable[[], bool] | None = None, token_text: Callable[[int], str] = str) -> Iterator[Step]:
    """Run a method's steps: commit each by position (cut at EOS / budget), time it, record it, yield it."""
    last = time.perf_counter()
    try:
        for step in steps:
            step.wall_s = time.perf_counter() - last
            n = len(dec.tokens)
            added = dec.commit(step)
            trace.steps.append(step)
            trace.tokens = list(dec.tokens)
            trace.pieces.extend(decode_piece(dec.tokens, i) for i in range(n, n + added))
            shown = [*step.proposed, *step.committed, *([step.bonus] if step.bonus is not None else [])]
            if dec.prompt:
                shown.append(dec.prompt[-1])
            for token in shown:
                if str(token) not in trace.vocab:
                    trace.vocab[str(token)] = token_text(token)
            trace.wall_s += step.wall_s  # the method's time, not the consumer's
            trace.prefill_s = dec.prefill_s
            yield step
            if cancel is not None and cancel() and not dec.stopped:
                dec.stopped = "cancelled"
            if dec.stopped:
                break
            last = time.perf_counter()
    finally:
        if hasattr(steps, "close"):
            steps.close()
        trace.stop = dec.stopped or "done"
