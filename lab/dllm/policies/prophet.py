"""Diffusion Language Models Know the Answer Before Decoding (Li et al., 2025; Prophet).

The idea: the answer often settles long before the last step. Watch the gap between the top-2 logits at the
masked positions; once its mean clears a threshold that falls as decoding progresses (strict early, lenient
late), stop refining and commit every remaining position at once ("all-in"). Until then, decode as the base
schedule does (LLaDA's low-confidence remasking).
"""
from __future__ import annotations

from ...registry import method
from .. import rules
from ..loop import Round, denoise


@method("prophet", family="diffusion", lossless=False,
        paper="Diffusion Language Models Know the Answer Before Decoding (Li et al., 2025)",
        departures="The all-in commit covers what the forward predicted: the whole canvas on a global-attention model, "
                   "only the current block on a block-diffusion one (later blocks have no predictions yet); the gap "
                   "is the mean top-2 logit gap over those positions, with thresholds gap_high / gap_mid / gap_low for "
                   "progress below 1/3, below 2/3 and beyond.")
def prophet(dec, *, steps: int = 0, block_size: int = 0, cache: str = "auto", gap_high: float = 7.5,
            gap_mid: float = 5.0, gap_low: float = 2.5):
    """Prophet: LLaDA's schedule until the top-2 logit gap says the answer is settled, then commit all at once."""
    def pick(r: Round) -> list[int]:
        progress = r.progress
        needed = gap_high if progress < 1 / 3 else gap_mid if progress < 2 / 3 else gap_low
        if float(rules.top2_gap(r.logits[r.live]).mean()) >= needed:
            return list(r.live)  # all in
        return r.scheduled(steps)

    return denoise(dec, pick, method="prophet", block_size=block_size, cache=cache, confidence="probability")
