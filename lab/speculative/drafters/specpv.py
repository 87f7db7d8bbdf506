"""SpecPV: Improving Self-Speculative Decoding for Long-Context Generation via Partial Verification.

The one idea: in a long context the cost of a step is reading the KV cache, and most of it matters little, so
the model can run cheaply on a partial KV: the first `sink` tokens (attention sinks) plus a recent `window`.
Here the full model drafts with that partial view of its own cache (`visible=`): the draft's entries are written
into the target's cache and rolled back before the real verification, which always sees the whole cache.

Departure from the paper: SpecPV verifies drafts against the partial KV and only periodically runs a full
verification, which trades exactness for speed (its "minor degradation"). This lab keeps the method lossless:
the partial-KV pass is the draft and every verification is full. On the CPU and short prompts the draft costs
about a full forward (the saving is in KV reads on long contexts); acceptance shows how much the hidden middle
of the context mattered, and each Step's info says how many cached tokens the draft could not see.
"""
from __future__ import annotations

import torch

from ...decoding import Decoding
from ...errors import LabError
from ...registry import method
from ...tree import Tree
from ..drafter import Drafter
from ..loop import speculate
from ..self_draft import draft_chain


def partial_view(length: int, sink: int, window: int) -> torch.Tensor:
    """Bool [length]: the first `sink` and the last `window` cached tokens are visible, the middle is not."""
    visible = torch.zeros(length, dtype=torch.bool)
    visible[:sink] = True
    if window > 0:
        visible[max(0, length - window):] = True
    return visible


class PartialKV(Drafter):
    """Chains drafted by the full model attending to sinks + a recent window of the target's own cache."""

    def __init__(self, sink: int, window: int, length: int):
        if sink < 0 or window < 1 or length < 1:
            raise LabError("specpv needs sink >= 0, window >= 1 and length >= 1")
        self.sink, self.window, self.length = sink, window, length
        self.forwards = 0
        self.info: dict = {}

    def propose(self, dec: Decoding, root: int) -> Tree:
        target = dec.target
        base = target.length

        def step(token: int) -> torch.Tensor:
            self.forwards += 1
            return target.forward([token], visible=partial_view(target.length, self.sink, self.window)).logits[-1]

        try:
            tree = draft_chain(dec, step, root, min(self.length, dec.remaining))
        finally:
            target.rollback(base)  # drop the draft's entries: they were computed without the middle
        self.info = {"cached": base, "hidden_from_draft": int((~partial_view(base, self.sink, self.window)).sum())}
        return tree


@method("specpv", family="speculative", lossless=True, training_free=True,
        paper="SpecPV: Improving Self-Speculative Decoding for Long-Context Generation via Partial Verification",
        departures="the partial KV (sinks + recent window) is used only for drafting and every verification is "
                   "full, so it stays lossless (the paper verifies against the partial KV, with a periodic full "
                   "verification)")
def specpv(dec, *, sink: int = 4, window: int = 32, length: int = 4):
    """Self-speculation on a partial KV cache (sink tokens + recent window); every verification is full."""
    yield from speculate(dec, PartialKV(sink, window, length))
