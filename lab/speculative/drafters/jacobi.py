"""Jacobi decoding: greedy decoding solved as a fixed point, all window positions updated at once.

Paper: "Accelerating Transformer Inference for Translation via Parallel Decoding" (Santilli et al., 2023).
The one idea: the next n tokens y_1..y_n of greedy decoding are the solution of the n equations
y_i = argmax p(. | context, y_1..y_{i-1}). Guess them all, run the target once over the guesses, and
replace every guess by the target's output at its position (a Jacobi iteration). Each iteration fixes at
least one more token, and the tokens that already agree with the target's argmax given a correct prefix
are final: the verifier's longest-correct-prefix rule is exactly the fixed-point test.

How it departs from the paper:
- The paper iterates on a fixed block until the whole block stops changing, then moves to the next block.
  Here the window slides: the converged prefix (plus the target's own next token) is committed after every
  forward and the window is topped up at its far end, so no forward is spent only confirming convergence.
  The output is the same greedy sequence.
- Fresh positions start as random context tokens (as Lookahead decoding initialises its window), not PAD.
- At temperature > 0 the guesses stay the argmax and are verified as fixed candidates (q = None), which
  keeps the sampled output exact; `sjd` is the variant whose guesses are sampled.
"""
from __future__ import annotations

import torch

from ...decoding import Decoding
from ...registry import method
from ..jacobi_window import JacobiWindow
from ..loop import speculate


def argmax_guess(dec: Decoding, logits: torch.Tensor) -> tuple[int, None]:
    """Jacobi's update: the target's most likely token at this position, a fixed candidate."""
    return int(logits.argmax(-1)), None


@method("jacobi", family="speculative", lossless=True, training_free=True,
        paper="Accelerating Transformer Inference for Translation via Parallel Decoding",
        departures="the window slides (the converged prefix is committed after every forward) instead of iterating "
                   "a fixed block to convergence; fresh positions start as random context tokens, not PAD; at T > "
                   "0 the guesses stay argmax and are verified as fixed candidates (sjd samples them)")
def jacobi(dec, *, window: int = 8):
    """Jacobi iteration: guess the next `window` tokens, replace each by the target's output, keep the fixed prefix."""
    yield from speculate(dec, JacobiWindow(window, argmax_guess))
