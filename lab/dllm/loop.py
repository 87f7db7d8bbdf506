"""The one denoise -> commit loop (LLaDA's `generate.py` in spirit): forward, propose, pick, commit; per block.

A policy is a `pick(round) -> rows` rule: given one forward's proposals over the window, which masked positions
to commit now (a row it also puts in `round.fill` is committed with that token instead of its proposal: Learn2PD's
end-of-text padding). The loop does the rest: blocks, caches, Gumbel-noise temperature, confidence, the Step
(positions, tokens, confidences, a canvas snapshot, the predictions at every masked position the forward saw) and
the forward count. The lossless drafters (freedave, ssd-dllm) share `draft_and_verify`, which checks drafted
decisions against `decision` (what one-token-per-step decoding does next); deer and apd drive the Denoiser themselves.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from ..decoding import Decoding
from ..errors import LabError
from ..trace import Step
from . import rules
from .denoiser import CACHES, Denoiser
from .model import spec_of


@dataclass
class Round:
    """One forward's view of the canvas, for a policy to pick from."""

    window: list[int]  # output positions the forward predicted
    logits: torch.Tensor  # [w, V] on the device
    tokens: list[int]  # the proposal at each window position
    confidence: list[float]  # the policy's confidence in each
    live: list[int]  # rows of the window still masked
    block: list[int]  # rows of the current block still masked (what semi-AR decoding may commit)
    step: int  # steps taken in this block so far
    start: int
    end: int
    denoiser: Denoiser
    fill: dict[int, int] = field(default_factory=dict)  # row -> a token to commit there instead of the proposal
    order: str = "confidence"  # which rows `scheduled` takes first: the surest, the left-most, or `leftmost-N`

    def scheduled(self, steps: int) -> list[int]:
        """The rows LLaDA's schedule commits now: the block's share of `steps`, spread evenly, surest first."""
        size = self.end - self.start
        total = rules.block_steps(steps, size, self.denoiser.length)
        if self.step == 0:
            self.denoiser.plan = rules.transfer_counts(len(self.block), total)
        plan = self.denoiser.plan
        n = plan[self.step] if self.step < len(plan) - 1 else len(self.block)  # the last step: whatever is left
        return rules.rank(self.confidence, self.block, self.order)[:n]

    @property
    def progress(self) -> float:
        """Share of the canvas committed before this step."""
        return 1 - len(self.denoiser.masked()) / self.denoiser.length


def block_size_of(dec: Decoding, method: str, block_size: int = 0, fallback: int = 32) -> int:
    """block_size 0: the model's trained block size (block diffusion), else `fallback` (0: the whole canvas)."""
    return block_size or spec_of(dec.target, method).block_size or fallback or dec.max_new_tokens


def make_denoiser(dec: Decoding, method: str, block_size: int, cache: str, fallback: int = 32) -> Denoiser:
    """The block size as `block_size_of` says; cache "auto": prefix on block diffusion (exact there), none on
    global attention (the papers' default)."""
    spec = spec_of(dec.target, method)
    if cache == "auto":  # exact and cheap on block diffusion; the papers' full recompute on global attention
        cache = "prefix" if spec.attention == "block" else "none"
    if cache not in CACHES:
        raise LabError(f"cache={cache!r}: use auto or one of {', '.join(CACHES)}")
    size = block_size_of(dec, method, block_size, fallback)
    return Denoiser(dec.target, spec, dec.prompt, dec.max_new_tokens, size, cache, eos=frozenset(dec.eos))


def commit_step(den: Denoiser, window: list[int], tokens: list[int], conf: list[float], live: list[int],
                rows: list[int], forwards: int, fill: dict[int, int] | None = None, **info) -> Step:
    """Write rows into the canvas and describe it as a Step (predictions at every masked window position kept).
    `fill` (row -> token): rows committed with a token set by rule rather than proposed (confidence 1; their
    positions in info["filled"])."""
    fill = fill or {}
    committed = [fill.get(r, tokens[r]) for r in rows]
    for r, token in zip(rows, committed):
        den.canvas[window[r]] = token
    if fill:
        info = {"filled": [window[r] for r in rows if r in fill], **info}
    return Step(committed=committed, origin=["plain"] * len(rows), positions=[window[r] for r in rows],
                confidence=[1.0 if r in fill else round(conf[r], 6) for r in rows], canvas=den.snapshot(),
                forwards=forwards, info={"masked": [window[r] for r in live], "predicted": [tokens[r] for r in live],
                                         "predicted_confidence": [round(conf[r], 6) for r in live], **info})


def check_order(order: str) -> None:
    if rules.parse_order(order) is None:
        raise LabError(f"order={order!r}: use {', '.join(rules.ORDERS)} (N >= 1, 0 < T <= 1)")


def decision(den: Denoiser, window: list[int], logits: torch.Tensor, start: int, end: int, order: str = "confidence"):
    """One-token-per-step greedy decoding's view of these logits: the block's masked rows in the order it commits
    them (surest first, left to right, or the surest of the N left-most each time), with every row's token and
    confidence and the window's masked rows."""
    proposal = logits.argmax(-1)
    tokens, conf = rules.host(proposal, rules.confidence(logits, proposal, "probability"))
    live = [j for j, p in enumerate(window) if den.canvas[p] == den.mask]
    block = [j for j in live if start <= window[j] < end]
    return rules.rank(conf, block, order), tokens, conf, live


def denoise(dec: Decoding, pick: Callable[[Round], list[int]], *, method: str, block_size: int = 0,
            cache: str = "auto", confidence: str = "probability", fallback: int = 32, order: str = "confidence",
            fuse: Callable[[list[int], torch.Tensor, Denoiser], torch.Tensor] | None = None) -> Iterator[Step]:
    """Decode the canvas block by block; each forward commits the rows `pick` chooses. `fuse(window, logits,
    denoiser)` may rewrite the logits first (dInfer's credit)."""
    den = make_denoiser(dec, method, block_size, cache, fallback)
    backend = dec.target
    for start, end in den.blocks():
        step = 0
        while den.masked(start, end):
            before = backend.forwards
            window, logits = den.predict(start, end)
            if fuse is not None:
                logits = fuse(window, logits, den)
            proposal = rules.propose(logits, dec.sampling.temperature, dec.rng)
            tokens, conf = rules.host(proposal, rules.confidence(logits, proposal, confidence, dec.rng))  # one sync
            live = [j for j, p in enumerate(window) if den.canvas[p] == den.mask]
            block = [j for j in live if start <= window[j] < end]
            here = Round(window, logits, tokens, conf, live, block, step, start, end, den, order=order)
            rows = pick(here)
            if not rows or any(r not in live for r in rows):
                raise RuntimeError(f"{method}: a step must commit masked positions (got rows {rows})")
            yield commit_step(den, window, tokens, conf, live, rows, backend.forwards - before, fill=here.fill)
            step += 1


def draft_and_verify(dec: Decoding, method: str, block_size: int, cache: str,
                     verify: Callable[..., tuple], order: str = "confidence") -> Iterator[Step]:
    """The frame of the lossless dLLM drafters (freedave, ssd-dllm): greedy only; per block, one forward drafts,
    `verify(den, window, logits, start, end, ranked, tokens, conf)` checks drafted decisions against `decision` (in
    `order`: what the reference, llada steps=0 with that remasking order, commits first; `ranked` is its ranking) and
    returns (rows, tokens, confidences, next, info); `next` is (window, logits) of the forward on the last accepted
    canvas, which drafts the next round for free (None only when the accepted decisions fill the block or end the
    output: `Denoiser.ends`; the run stops there)."""
    if not dec.greedy:
        raise LabError(f"{method} reproduces greedy one-token-per-step decoding: use temperature 0")
    den = make_denoiser(dec, method, block_size, cache)
    backend = dec.target
    for start, end in den.blocks():
        before = backend.forwards
        window, logits = den.predict(start, end)
        while den.masked(start, end):
            ranked, tokens, conf, live = decision(den, window, logits, start, end, order)
            rows, committed, confidence, after, info = verify(den, window, logits, start, end, ranked, tokens, conf)
            step = commit_step(den, window, committed, confidence, live, rows, backend.forwards - before, **info)
            if after is not None:
                window, logits = after
            yield step
            before = backend.forwards
