"""Fast-dLLM: Training-free Acceleration of Diffusion LLM by Enabling KV Cache and Parallel Decoding
(Wu et al., 2025).

The idea: commit, in one forward, every position whose confidence clears a threshold (or, by the factor rule, the
n surest positions while the n-th confidence c_n satisfies (n + 1)(1 - c_n) < factor), always at least the surest
one; and reuse keys and values across steps of a block: the prefix cache, or the dual cache of prefix and suffix.
"""
from __future__ import annotations

from ...errors import LabError
from ...registry import method
from .. import rules
from ..loop import Round, denoise


@method("fast-dllm", family="diffusion", lossless=False,
        paper="Fast-dLLM: Training-free Acceleration of Diffusion LLM by Enabling KV Cache and Parallel Decoding "
              "(Wu et al., 2025)",
        departures="none (on a block-diffusion model the prefix and dual caches are exact, as the clean context never "
                   "sees later blocks)")
def fast_dllm(dec, *, threshold: float = 0.9, factor: float = 0.0, block_size: int = 0, cache: str = "dual"):
    """Fast-dLLM: every position above a confidence threshold (or by the factor rule) per forward, with KV caches."""
    if not 0 <= threshold <= 1:
        raise LabError(f"threshold={threshold!r} must be in [0, 1]")

    def pick(r: Round) -> list[int]:
        if factor > 0:
            return rules.by_factor(r.confidence, r.block, factor)
        return rules.above_threshold(r.confidence, r.block, threshold)

    return denoise(dec, pick, method="fast-dllm", block_size=block_size, cache=cache, confidence="probability")
