"""Large Language Diffusion Models (Nie et al., 2025; LLaDA).

The idea: a masked-diffusion LM decodes a canvas of masks in `steps` steps, committing an equal share of each
block's positions per step: the surest ones (low-confidence remasking: the rest stay masked) or random ones.
`steps=0` means one token per step, the reference that lossless dLLM policies reproduce. `remasking=left_to_right`
(the lab's addition) commits the block's left-most masked positions first, with the same confidences recorded;
`leftmost=N` (the lab's too) commits the surest of the block's N left-most masked positions, a middle way, and
`sure=T` with it the left-most one whenever its confidence is at least T (left to right where the model is sure).
"""
from __future__ import annotations

from ...errors import LabError
from ...registry import method
from ..loop import denoise

REMASKING = {"low_confidence": "probability", "random": "random", "left_to_right": "probability"}


@method("llada", family="diffusion", lossless=False, paper="Large Language Diffusion Models (Nie et al., 2025)",
        departures="Steps need not divide evenly over the blocks (each block gets the ceiling of its share; LLaDA "
                   "asserts divisibility); no classifier-free guidance; the mask token is never proposed; block_size=0"
                   " takes a block-diffusion model's trained block size (else 32); remasking=left_to_right (the left-"
                   "most masked positions of the block first: the order of the autoregressive model a block dLLM was "
                   "converted from) and leftmost=N (the surest of the block's N left-most masked positions; with "
                   "sure=T the left-most one whenever its confidence is at least T) are the lab's, not LLaDA's.")
def llada(dec, *, steps: int = 0, block_size: int = 0, remasking: str = "low_confidence", cache: str = "auto",
          leftmost: int = 0, sure: float = 0.0):
    """LLaDA: an even share of each block per step, surest (or random) positions first; steps=0: one per step
    (leftmost=N: the surest among the block's N left-most masked positions; 0: among all of them; sure=T: with
    leftmost, the left-most one whenever its confidence is at least T; 0: never)."""
    if remasking not in REMASKING:
        raise LabError(f"remasking={remasking!r}: use {', '.join(REMASKING)}")
    if leftmost < 0 or (leftmost and remasking != "low_confidence"):
        raise LabError("leftmost=N (N >= 1) narrows low-confidence remasking: use it with remasking=low_confidence")
    if sure and not (leftmost and 0 < sure <= 1):
        raise LabError("sure=T (0 < T <= 1) takes the left-most of leftmost=N's positions: use it with leftmost=N")
    order = "left-to-right" if remasking == "left_to_right" else "confidence"
    if leftmost:
        order = f"leftmost-{leftmost}" + (f"@{sure}" if sure else "")
    return denoise(dec, lambda r: r.scheduled(steps), method="llada", block_size=block_size, cache=cache,
                   confidence=REMASKING[remasking], order=order)
