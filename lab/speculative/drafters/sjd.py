"""Speculative Jacobi decoding: Jacobi iteration with sampled guesses and probabilistic acceptance.

Paper: "Accelerating Auto-regressive Text-to-Image Generation with Training-free Speculative Jacobi
Decoding" (Teng et al., 2024). The one idea: Jacobi decoding only helps greedy decoding, because a sampled
token rarely equals the guess. SJD makes each guess a draw from the target's own distribution at that
position in the previous iteration and remembers that distribution as the guess's q. Verification is then
speculative sampling: guess x is accepted with probability min(1, p(x) / q(x)), where p is the target's
distribution now that the prefix is known; the first rejected position is resampled from the residual
norm(max(p - q, 0)); the rest of the window is redrawn from the distributions this forward produced.
At temperature 0 every q is one-hot and SJD is exactly Jacobi decoding.

Why it is exact: each guess was drawn before the forward that verifies it, from a distribution fixed by the
past (the previous iteration), so it is an ordinary draft token with its draft distribution q.

Choices made here (where the paper is silent or image-specific):
- A rejected position is resampled from the residual norm(max(p - q, 0)), speculative sampling's rule,
  which is what keeps the output distribution exact; the rest of the window is redrawn as in the paper.
- Positions with no previous distribution (the far end of the window, the first step) hold random context
  tokens verified as fixed candidates (q = None); the paper's spatial initialisations are for images.
- The window slides (commit the accepted prefix after every forward), as in `jacobi`.
"""
from __future__ import annotations

from typing import Iterator

import torch

from ...decoding import Decoding
from ...registry import method
from ...sampling import draw
from ...trace import Step
from ..jacobi_window import JacobiWindow
from ..loop import speculate


def sampled_guess(dec: Decoding, logits: torch.Tensor) -> tuple[int, torch.Tensor | None]:
    """SJD's update: draw the next guess from the target's distribution here and keep it as the guess's q."""
    if dec.greedy:  # one-hot q: the draw is the argmax, and greedy verification needs no q
        return int(logits.argmax(-1)), None
    q = dec.probs(logits)
    return int(draw(q, dec.rng)), q


@method("sjd", family="speculative", lossless=True, training_free=True,
        paper="Accelerating Auto-regressive Text-to-Image Generation with Training-free Speculative Jacobi Decoding",
        departures="text, not images: positions without a previous distribution start as random context tokens "
                   "verified as fixed candidates; a rejected position is resampled from the residual; the window "
                   "slides")
def sjd(dec, *, window: int = 8) -> Iterator[Step]:
    """Speculative Jacobi decoding: sampled Jacobi guesses, accepted with min(1, p/q), residual on rejection."""
    drafter = JacobiWindow(window, sampled_guess)
    for step in speculate(dec, drafter):
        if step.proposed:  # say whether this step resampled a drawn guess from the residual p - q
            step.info["residual"] = drafter.rejected_drawn
        yield step
