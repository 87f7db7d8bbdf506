"""BASS: Batched Attention-optimized Speculative Sampling (Qian et al., 2024).

The idea: speculative sampling for a whole batch at once, although every sequence accepts a different number
of draft tokens. The rows share one target forward and one draft forward per depth over a ragged cache (the
HF backend's per-row slots play the part of BASS-PAD's padded K/V/P tensors), and the draft length follows
BASS's heuristic: grow by `increment` while drafts are fully accepted, otherwise shrink by
ceil(length / 10) (one more after consecutive misses) but never below the accepted count.

Departures: the paper keeps one draft length for the batch, set by the best row (`shared_length=True`);
by default each row adapts its own length, so a row whose drafts fail stops drafting far ahead while the
others go on. Limits are CPU-sized (chains of at most `max_length`, 10). Called on one prompt it runs as a
batch of one, so the single-prompt tests exercise the batch code; `generate_batch("bass", prompts)` runs
the prompts together.
"""
from __future__ import annotations

import math

from ...batch import batch_of_one
from ...registry import batched, method
from ...tree import Tree
from ..chains import ChainDrafter
from ..loop import speculate_rows
from ..verify import Verdict


class DraftLength:
    """BASS's draft-length heuristic, fed with (drafted, accepted) after each verification."""

    def __init__(self, length: int = 4, limit: int = 10, increment: int = 2, modulo: int = 10):
        self.length, self.limit, self.increment, self.modulo = length, limit, increment, modulo
        self.missed = 0  # 1 after a shortened round: consecutive misses shrink faster

    def update(self, drafted: int, accepted: int) -> None:
        if accepted >= drafted:
            self.length = min(self.length + self.increment, self.limit)
            self.missed = 0
        else:
            shorter = self.length - math.ceil(self.length / self.modulo) - self.missed
            self.length = max(1, accepted, shorter)
            self.missed = 1


class Bass(ChainDrafter):
    """Chains of per-row (or, as in the paper, batch-wide) adaptive length from a batched draft model."""

    def __init__(self, runner, length: int, max_length: int, shared_length: bool):
        super().__init__(runner)
        self.length, self.max_length, self.shared = length, max_length, shared_length
        self.schedules: list[DraftLength] | None = None

    def propose_rows(self, batch, roots: list[int]) -> list[Tree]:
        if self.schedules is None:
            self.schedules = [DraftLength(self.length, self.max_length) for _ in ([0] if self.shared else roots)]
        lengths = [self.schedules[0].length] * len(roots) if self.shared else [s.length for s in self.schedules]
        return self.draft(batch, lengths)[0]

    def accepted_rows(self, batch, trees: list[Tree], verdicts: list[Verdict], logits) -> None:
        outcomes = [(len(t), len(v.accepted)) for t, v in zip(trees, verdicts)]
        if self.shared:  # the paper: did any row take the whole draft? never below the best row's count
            drafted = max(d for d, _ in outcomes)
            if drafted:
                self.schedules[0].update(drafted, max(a for _, a in outcomes))
            return
        for schedule, (drafted, accepted) in zip(self.schedules, outcomes):
            if drafted:
                schedule.update(drafted, accepted)

    def select(self, kept: list[int]) -> None:
        super().select(kept)
        if self.schedules is not None and not self.shared:
            self.schedules = [self.schedules[b] for b in kept]


@method("bass", family="speculative", lossless=True, training_free=True,
        paper="BASS: Batched Attention-optimized Speculative Sampling",
        departures="each row adapts its own draft length by default (the paper: one length for the batch, "
                   "shared_length=True); chains of at most 10 tokens; the default draft is the lab's trained FastDraft on the default model (four layers of its shape, not a separate small model) and the target's first half of layers, untrained, on other models")
@batch_of_one
@batched("bass")
def bass(batch, *, draft: str = "default", length: int = 4, max_length: int = 10, shared_length: bool = False):
    """Batched speculative sampling, ragged acceptance, BASS's adaptive draft length per row (draft: 'layers:N')."""
    yield from speculate_rows(batch, Bass(batch.lab.draft(draft), length, max_length,
                                           shared_length))
