"""dInfer: An Efficient Inference Framework for Diffusion Language Models (Ma et al., 2025).

The idea: three commit rules for a block. `threshold`: every position at least `threshold` sure (always the
surest). `hierarchy`: in every run of adjacent masked positions, commit its surest one if it clears
`low_threshold`, plus anything above `threshold` (so commits spread out instead of clumping, and neighbours,
which depend on each other most, are not decided together). `credit`: a position whose top token keeps winning
across steps earns credit (an exponential moving sum of p_top ** boost_gamma, decayed by decay_beta), and the
logits get credit_alpha * log(1 + credit) added before the threshold rule.
"""
from __future__ import annotations

import torch

from ...errors import LabError
from ...registry import method
from .. import rules
from ..loop import Round, denoise

DECODERS = ("threshold", "hierarchy", "credit")


def runs(positions: list[int]) -> list[list[int]]:
    """Indices into `positions` (sorted), grouped into runs of adjacent positions."""
    out: list[list[int]] = []
    for i, p in enumerate(positions):
        if out and positions[out[-1][-1]] == p - 1:
            out[-1].append(i)
        else:
            out.append([i])
    return out


@method("dinfer", family="diffusion", lossless=False,
        paper="dInfer: An Efficient Inference Framework for Diffusion Language Models (Ma et al., 2025)",
        departures="The decoders only (threshold, hierarchy, credit); dInfer's vicinity KV refresh, soft iterations "
                   "and "
                   "system work (CUDA graphs, loop unrolling, parallelism) are not reproduced; caches are the loop's.")
def dinfer(dec, *, decoder: str = "hierarchy", threshold: float = 0.9, low_threshold: float = 0.4,
           credit_alpha: float = 0.7, boost_gamma: float = 0.2, decay_beta: float = 0.8, block_size: int = 0,
           cache: str = "dual"):
    """dInfer's decoders: threshold, hierarchy (the surest of every masked run) or credit (stable tokens earn it)."""
    if decoder not in DECODERS:
        raise LabError(f"decoder={decoder!r}: use {', '.join(DECODERS)}")
    credit: dict[int, torch.Tensor] = {}  # position -> credit per token, while it is masked

    def fuse(window: list[int], logits: torch.Tensor, den) -> torch.Tensor:
        probs = torch.softmax(logits.float(), -1)
        top, index = probs.max(-1)
        fused = logits.clone()
        for j, p in enumerate(window):
            if den.canvas[p] != den.mask:
                credit.pop(p, None)
                continue
            mat = credit[p] * decay_beta if p in credit else torch.zeros_like(probs[j])
            mat[index[j]] += top[j] ** boost_gamma
            credit[p] = mat
            fused[j] = logits[j] + credit_alpha * torch.log1p(mat)
        return fused

    def pick(r: Round) -> list[int]:
        if decoder != "hierarchy":
            return rules.above_threshold(r.confidence, r.block, threshold)
        conf = r.confidence
        chosen = {j for j in r.block if conf[j] > threshold}
        for run in runs([r.window[j] for j in r.block]):
            best = max((r.block[i] for i in run), key=lambda j: conf[j])
            if conf[best] > low_threshold:
                chosen.add(best)
        chosen.add(rules.rank(r.confidence, r.block)[0])  # always the surest
        return sorted(chosen)

    return denoise(dec, pick, method="dinfer", block_size=block_size, cache=cache, confidence="probability",
                   fuse=fuse if decoder == "credit" else None)
