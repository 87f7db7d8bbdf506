"""Large Language Diffusion Models (Nie et al., 2025; LLaDA).

The idea: a masked-diffusion LM decodes a canvas of masks in `steps` steps, committing an equal share of each
block's positions per step: the surest ones (low-confidence remasking: the rest stay masked) or random ones.
`steps=0` means one token per step, the reference that lossless dLLM policies reproduce.
"""
from __future__ import annotations

from ...errors import LabError
from ...registry import method
from .. import rules
from ..loop import Round, denoise

REMASKING = {"low_confidence": "probability", "random": "random"}


def schedule(dec, steps: int, block_size: int, blocks: int) -> int:
    """Steps per block: LLaDA splits its total evenly over the blocks (0: one token per step)."""
    if steps == 0:
        return block_size
    return max(1, -(-steps // blocks))


@method("llada", family="diffusion", lossless=False, paper="Large Language Diffusion Models (Nie et al., 2025)",
        departures="Steps need not divide evenly over the blocks (each block gets the ceiling of its share; "
                   "LLaDA asserts divisibility); no classifier-free guidance; the mask token is never proposed.")
def llada(dec, *, steps: int = 0, block_size: int = 32, remasking: str = "low_confidence", cache: str = "prefix"):
    """LLaDA: an even share of each block per step, surest (or random) positions first."""
    if remasking not in REMASKING:
        raise LabError(f"remasking={remasking!r}: use low_confidence or random")
    counts: dict[int, list[int]] = {}

    def pick(r: Round) -> list[int]:
        if r.start not in counts:  # the block's schedule, from its masked count at its first step
            size = r.end - r.start
            per_block = schedule(dec, steps, size, -(-dec.max_new_tokens // max(block_size, 1)))
            counts[r.start] = rules.transfer_counts(len(r.block), per_block)
        plan = counts[r.start]
        n = plan[r.step] if r.step < len(plan) - 1 else len(r.block)  # the last step commits whatever is left
        return rules.rank(r.confidence, r.block)[:n]

    return denoise(dec, pick, method="llada", block_size=block_size, cache=cache, confidence=REMASKING[remasking])
