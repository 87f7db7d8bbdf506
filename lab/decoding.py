"""What a method sees while it runs: the target runner, the sampling rule, one random stream, the output.

A method is a generator over `Decoding`: it proposes, scores through `dec.target` and yields a `Step`
to commit tokens. `drive` applies the step (cutting it at EOS and at the token budget), times it, and
hands it on, so every method gets the same stopping rules, Trace and streaming.
"""
from __future__ import annotations

import time
from typing import Callable, Iterator

import torch

from .runner import Runner
from .sampling import Sampling, draw
from .trace import Step, Trace


class Decoding:
    """The state of one generation, shared by the method and the driver."""

    def __init__(self, target: Runner, prompt: list[int], sampling: Sampling, rng: torch.Generator | None,
                 max_new_tokens: int, eos: set[int], tokenizer=None, model=None):
        self.target = target
        self.prompt = list(prompt)
        self.sampling = sampling
        self.rng = rng
        self.max_new_tokens = max_new_tokens
        self.eos = set(eos)
        self.tokenizer = tokenizer
        self.model = model  # the Lab that runs this decoding (to build drafters from its model)
        self.tokens: list[int] = []
        self.stopped = ""
        self.prefill_s = 0.0

    @property
    def context(self) -> list[int]:
        """Prompt plus the tokens committed so far."""
        return self.prompt + self.tokens

    @property
    def remaining(self) -> int:
        return self.max_new_tokens - len(self.tokens)

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
        return float(torch.rand((), generator=self.rng))


def drive(dec: Decoding, steps: Iterator[Step], trace: Trace, decode_piece: Callable[[list[int], int], str],
          cancel: Callable[[], bool] | None = None, token_text: Callable[[int], str] = str) -> Iterator[Step]:
    """Run a method's steps: commit each (cut at EOS / budget), time it, record it, yield it."""
    last = time.perf_counter()
    for step in steps:
        now = time.perf_counter()
        step.wall_s = now - last
        taken = 0
        for token in step.committed:
            if len(dec.tokens) >= dec.max_new_tokens:
                break
            dec.tokens.append(int(token))
            taken += 1
            if token in dec.eos:
                dec.stopped = "eos"
                break
        step.committed = [int(t) for t in step.committed[:taken]]
        step.origin = list(step.origin[:taken])
        if not dec.stopped and len(dec.tokens) >= dec.max_new_tokens:
            dec.stopped = "length"
        trace.steps.append(step)
        n = len(dec.tokens)
        trace.tokens = list(dec.tokens)
        trace.pieces.extend(decode_piece(dec.tokens, i) for i in range(n - taken, n))
        for token in [*step.proposed, *step.committed, *([step.bonus] if step.bonus is not None else [])]:
            if str(token) not in trace.vocab:
                trace.vocab[str(token)] = token_text(token)
        if dec.prompt and str(dec.prompt[-1]) not in trace.vocab:
            trace.vocab[str(dec.prompt[-1])] = token_text(dec.prompt[-1])
        trace.wall_s = sum(s.wall_s for s in trace.steps)  # the method's time, not the consumer's
        trace.prefill_s = dec.prefill_s
        yield step
        if cancel is not None and cancel() and not dec.stopped:
            dec.stopped = "cancelled"
        if dec.stopped:
            break
        last = time.perf_counter()
    if hasattr(steps, "close"):
        steps.close()
    trace.stop = dec.stopped or "done"
