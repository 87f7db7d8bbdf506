"""Accelerating Diffusion LLM Inference via Local Determinism Propagation (Kong et al., 2025; LocalLeap).

The idea: many positions have settled long before a conservative schedule commits them ("delayed decoding"), and
certainty spreads locally. Positions at least `anchor` sure are anchors; within `radius` positions of an anchor
a relaxed bar (`relaxed`) suffices, since reliability decays with distance from an anchor; anchors and their sure
enough neighbours are committed together. With no anchor, the surest position alone (greedy decoding).
"""
from __future__ import annotations

from ...errors import LabError
from ...registry import method
from .. import rules
from ..loop import Round, denoise


@method("localleap", family="diffusion", lossless=False,
        paper="Accelerating Diffusion LLM Inference via Local Determinism Propagation (Kong et al., 2025)",
        departures="Written from the paper's description (its code was not at hand): anchors at confidence >= anchor "
                   "(0.9, the paper's analysis), neighbours within `radius` positions of an anchor committed at "
                   "confidence >= relaxed; the defaults radius=2, relaxed=0.6 are the lab's, not tuned values "
                   "from the paper.")
def localleap(dec, *, anchor: float = 0.9, relaxed: float = 0.6, radius: int = 2, block_size: int = 0,
              cache: str = "auto"):
    """LocalLeap: commit anchors (very sure) and their nearby, fairly sure neighbours together."""
    if not 0 <= relaxed <= anchor <= 1:
        raise LabError(f"need 0 <= relaxed <= anchor <= 1, got relaxed={relaxed}, anchor={anchor}")

    def pick(r: Round) -> list[int]:
        conf = r.confidence
        anchors = [j for j in r.block if conf[j] >= anchor]
        if not anchors:
            return rules.rank(conf, r.block)[:1]
        near = {r.window[a] for a in anchors}
        return [j for j in r.block if conf[j] >= anchor
                or (conf[j] >= relaxed and any(abs(r.window[j] - p) <= radius for p in near))]

    return denoise(dec, pick, method="localleap", block_size=block_size, cache=cache, confidence="probability")
