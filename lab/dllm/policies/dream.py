"""Dream 7B: Diffusion Large Language Models (Ye et al., 2025).

The idea: a diffusion LM initialised from an autoregressive one keeps its shifted logits (position i predicts
token i + 1), and decides which positions to unmask by a confidence measure: the top probability (maskgit_plus),
the top-2 margin (topk_margin) or the negative entropy (entropy), on a schedule that follows the masking noise
level t from 1 down to eps: at a step from t to s it unmasks a 1 - s/t share of the masked positions.
"""
from __future__ import annotations

from ...errors import LabError
from ...registry import method
from .. import rules
from ..loop import Round, denoise

ALGORITHMS = {"maskgit_plus": "probability", "topk_margin": "margin", "entropy": "entropy"}


@method("dream", family="diffusion", lossless=False,
        paper="Dream 7B: Diffusion Large Language Models (Ye et al., 2025)",
        departures="At least one token per step (Dream's int() of the 1 - s/t share can unmask none and spend a "
                   "forward "
                   "on nothing); optional semi-autoregressive blocks (Dream decodes the whole canvas at once, "
                   "block_size=0) with the steps shared over blocks; no alg_temp randomness in which positions unmask; "
                   "shifted logits are the model's property (lab.dllm.DLLM.shift), not the policy's.")
def dream(dec, *, steps: int = 0, alg: str = "entropy", block_size: int = 0, cache: str = "auto", eps: float = 1e-3):
    """Dream: unmask by entropy / margin / top probability on the noise schedule t -> s (1 - s/t of the masks)."""
    if alg not in ALGORITHMS:
        raise LabError(f"alg={alg!r}: use {', '.join(ALGORITHMS)}")
    if not 0 < eps < 1:
        raise LabError(f"eps={eps!r} must be in (0, 1)")

    def pick(r: Round) -> list[int]:
        total = rules.block_steps(steps, r.end - r.start, r.denoiser.length)
        i = min(r.step, total - 1)
        t, s = 1 - (1 - eps) * i / total, 1 - (1 - eps) * (i + 1) / total
        n = len(r.block) if i == total - 1 else max(1, int(len(r.block) * (1 - s / t)))
        return rules.rank(r.confidence, r.block)[:n]

    return denoise(dec, pick, method="dream", block_size=block_size, cache=cache, confidence=ALGORITHMS[alg],
                   fallback=0)
