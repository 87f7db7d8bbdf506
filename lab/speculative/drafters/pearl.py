"""PEARL: the draft keeps drafting while the target verifies, so neither waits for the other.

Paper: "Parallel Speculative Decoding with Adaptive Draft Length" (Liu et al., 2024).
The one idea: pre-verify and post-verify. In plain speculative decoding the target idles while the draft
drafts, and the draft idles while the target verifies (mutual waiting). PEARL runs them at the same time:
- pre-verify: while the draft drafts gamma tokens, the target already forwards the last committed token, and
  its output checks the first draft token (a rejection costs no extra target forward);
- post-verify: while the target verifies the pending drafts, the draft drafts the next gamma tokens as if all
  were accepted; if they were (and the first new one checks out against the target's last row), the new drafts
  become the pending chain, so the accepted length grows without limit while the draft is right.
The draft length therefore adapts by itself. Here the draft runs in a real thread beside the target forward
(lab/speculative/overlap.py, shared with DuoDecoding), and on a GPU on a CUDA stream of its own, so the device
runs both at once; each Step's info records the mode, the host time spans and their overlap, the device timeline
of the round (info["timeline"]: when the target forward and each draft forward ran), and how many tokens the
draft drafted ahead. `parallel=False` runs the draft before the target forward instead (the mutual waiting PEARL
removes; same tokens), to compare.

Departures: the paper runs the two models as two processes on two GPUs; here one Python thread per round
(torch releases the GIL inside its ops) and, on a GPU, a second CUDA stream on the same GPU. Its gamma is the
measured target/draft speed ratio; here gamma is `length` (default 4, reproducible), and `length=0` measures the
ratio as the paper does (from the device timeline).
"""
from __future__ import annotations

from ...errors import LabError
from ...registry import method
from ..loop import speculate
from ..overlap import AheadDrafter, Pace, draft_chain


class ParallelChain(AheadDrafter):
    """Drafts one chain of gamma tokens after whatever context the pipeline hands it (in the draft thread)."""

    def __init__(self, dec, runner, length: int, max_length: int = 8, parallel: bool = True):
        super().__init__(runner, Pace(guess=4), parallel)
        self.dec, self.length, self.max_length = dec, length, max_length

    @property
    def gamma(self) -> int:
        """PEARL's gamma: fixed, or (length 0) as many draft forwards as fit in one target forward."""
        return self.length if self.length > 0 else self.pace.fit(1, self.max_length)

    def draft(self, context: list[int], room: int):
        return [draft_chain(self.dec, self.runner, context, min(self.gamma, room))]


@method("pearl", family="speculative", lossless=True, training_free=True,
        paper="Parallel Speculative Decoding with Adaptive Draft Length",
        departures="the draft runs in a Python thread beside the target forward, on a second CUDA stream of the "
                   "same GPU (the paper: two processes on two GPUs); gamma is fixed (length=4) by default, length=0 measures the speed ratio as the paper "
                   "does; the default draft is the lab's trained FastDraft on the default model (four layers of its shape, not a separate small model) and the target's first half of layers, untrained, on other models")
def pearl(dec, *, draft: str = "default", length: int = 4, parallel: bool = True):
    """PEARL: draft and verify at the same time (pre-/post-verify, a draft thread and stream); adaptive draft
    length. `parallel=False`: the draft runs before each target forward instead (to compare)."""
    if length < 0:
        raise LabError(f"pearl: length must be >= 0 (0 measures the speed ratio), got {length}")
    if not isinstance(parallel, bool):
        raise LabError(f"pearl: parallel must be true or false, got {parallel!r}")
    yield from speculate(dec, ParallelChain(dec, dec.lab.draft(draft), length, parallel=parallel))
