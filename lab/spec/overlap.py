"""Draft while the target verifies: the pre-verify / post-verify pipeline of PEARL, shared with DuoDecoding.

Paper: "Parallel Speculative Decoding with Adaptive Draft Length" (Liu et al., 2024). Each round the target
forwards the root and the drafts still `pending` (one forward), while a draft thread drafts what comes after
them. With nothing pending this is PEARL's pre-verify (the target checks the first new draft token while the
draft keeps drafting); with drafts pending it is post-verify (the draft drafts on while the target verifies).
The target's last row also checks the first token of each newly drafted sequence: when all pending drafts and
one new first token are accepted, the rest of that sequence becomes the next round's pending chain. Drafting
thus never waits for the target, and the verified length adapts by itself: it keeps growing while drafts are
accepted. Verification is the shared exact one, so the output is lossless.

Two Runners never share a cache; torch releases the GIL inside its ops, so a Python thread really overlaps.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ..decoding import Decoding
from ..runner import Runner
from ..trace import Step
from .expand import Draft, draft_token
from .tree import Tree
from .verify import Verdict, verify_greedy, verify_stochastic

Propose = Callable[[list[int], int], list[list[Draft]]]  # (context, most tokens) -> sequences drafted after context


@dataclass
class Overlap:
    """When the draft thread and the target forward ran (seconds since the generation started)."""

    draft: tuple[float, float]
    target: tuple[float, float]

    @property
    def seconds(self) -> float:
        return max(0.0, min(self.draft[1], self.target[1]) - max(self.draft[0], self.target[0]))

    def to_dict(self) -> dict:
        return {"draft_s": [round(t, 6) for t in self.draft], "target_s": [round(t, 6) for t in self.target],
                "overlap_s": round(self.seconds, 6)}


def alongside(background: Callable, foreground: Callable, clock: float = 0.0):
    """Run `background` in a thread while `foreground` runs here; return both results and their Overlap."""
    box: dict = {}

    def work():
        start = time.perf_counter()
        try:
            box["value"] = background()
        except BaseException as err:  # re-raised in the caller's thread
            box["error"] = err
        box["span"] = (start - clock, time.perf_counter() - clock)

    thread = threading.Thread(target=work, name="draft", daemon=True)
    thread.start()
    start = time.perf_counter()
    try:
        value = foreground()
    finally:
        end = time.perf_counter()
        thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"], value, Overlap(box["span"], (start - clock, end - clock))


def draft_chain(dec: Decoding, runner: Runner, context: list[int], length: int) -> list[Draft]:
    """`length` tokens drafted one by one after `context` (the runner's cache follows the chain)."""
    logits = runner.sync(context)
    chain: list[Draft] = []
    for i in range(length):
        chain.append(draft_token(dec, logits))
        if i + 1 < length:
            logits = runner.decode(chain[-1][0])
    return chain


class Pace:
    """How many draft forwards fit in one target forward, measured (PEARL sets gamma to this ratio; DuoDecoding's
    hardware-aware draft budget is the same idea)."""

    def __init__(self, guess: int = 4):
        self.guess = guess
        self.target_s: float | None = None
        self.draft_s: float | None = None

    def record(self, overlap: Overlap, draft_forwards: int) -> None:
        target = overlap.target[1] - overlap.target[0]
        self.target_s = target if self.target_s is None else 0.7 * self.target_s + 0.3 * target
        if draft_forwards > 0:
            each = (overlap.draft[1] - overlap.draft[0]) / draft_forwards
            self.draft_s = each if self.draft_s is None else 0.7 * self.draft_s + 0.3 * each

    def fit(self, low: int, high: int) -> int:
        if not self.target_s or not self.draft_s:
            return max(low, min(high, self.guess))
        return max(low, min(high, round(self.target_s / self.draft_s)))


def _verify(dec: Decoding, tree: Tree, logits: torch.Tensor) -> Verdict:
    """Exact verification when the last rows are missing: the newest drafts' own rows are not computed yet, so
    their bonus is meaningless (padded rows; the caller ignores it when such a draft is accepted)."""
    missing = len(tree) + 1 - logits.shape[0]
    if dec.greedy:
        return verify_greedy(tree, torch.cat([logits, logits.new_zeros(missing, logits.shape[1])]))
    probs = dec.probs(logits)
    return verify_stochastic(tree, torch.cat([probs, probs.new_full((missing, probs.shape[1]), 1 / probs.shape[1])]),
                             dec.rng)


def pipeline(dec: Decoding, draft: Runner, propose: Propose, pace: Pace | None = None) -> Iterator[Step]:
    """Prefill (the draft prefills alongside), then overlapped rounds until the output is done."""
    clock = time.perf_counter()
    _, logits, overlap = alongside(lambda: draft.sync(dec.prompt), dec.prefill, clock)
    root = dec.choose(logits)
    yield Step(committed=[root], origin=["plain"], forwards=0, prefill=True, info={"overlap": overlap.to_dict()})
    pending: list[Draft] = []
    while not dec.done:
        room = dec.remaining - len(pending)  # tokens the draft may add after the pending ones
        context = dec.context + [t for t, _, _ in pending]
        before = draft.forwards
        rows = [root] + [t for t, _, _ in pending]
        if room > 0:
            sequences, logits, overlap = alongside(lambda: propose(context, room),
                                                   lambda: dec.target.forward(rows).logits, clock)
        else:
            start = time.perf_counter() - clock
            sequences, logits = [], dec.target.forward(rows).logits
            overlap = Overlap((start, start), (start, time.perf_counter() - clock))
        drafted = draft.forwards - before
        sequences = [seq[:room] for seq in sequences if seq]
        if pace is not None:
            pace.record(overlap, drafted)
        tree = Tree()
        for token, prob, q in pending:
            tree.add(token, len(tree) - 1, prob, q)
        firsts = [tree.add(seq[0][0], len(pending) - 1, seq[0][1], seq[0][2]) for seq in sequences]
        verdict = _verify(dec, tree, logits)
        dec.target.keep([0] + [i + 1 for i in verdict.accepted if i < len(pending)])
        chosen = next((j for j, node in enumerate(firsts) if node in verdict.accepted), None)
        committed = [tree.tokens[i] for i in verdict.accepted]
        origin = ["draft"] * len(committed)
        mode = "post-verify" if pending else "pre-verify"
        if chosen is None:
            committed.append(verdict.bonus)
            origin.append("bonus")
            root, pending, bonus = verdict.bonus, [], verdict.bonus
        else:
            root, pending, bonus = sequences[chosen][0][0], list(sequences[chosen][1:]), None
        yield Step(committed=committed, origin=origin, proposed=list(tree.tokens), parents=list(tree.parents),
                   draft_probs=[round(p, 4) for p in tree.draft_probs], accepted=list(verdict.accepted),
                   bonus=bonus, draft_forwards=drafted,
                   info={"mode": mode, "recovered": verdict.recovered and chosen is None,
                         "sequences": len(firsts), "chosen": chosen, "drafted_ahead": sum(len(s) for s in sequences),
                         "carried": len(pending), "overlap": overlap.to_dict()})
