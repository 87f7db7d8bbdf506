"""Sampling with truncation: top-k, top-p (nucleus), min-p, locally typical and eta sampling.

The paper is "The Curious Case of Neural Text Degeneration" (Holtzman et al., 2020); the other rules
are cited in lab/sampling.py. With no options this is plain sampling from softmax(logits / T). With several
rules at once they apply one after the other in transformers' order (temperature, top-k, top-p, min-p, typical,
eta), so `lab.generate("sample", ...)` and transformers' `generate(do_sample=True, ...)` draw from the same
distribution.
"""
from __future__ import annotations

from dataclasses import replace

from ..errors import LabError
from ..registry import method
from .greedy import autoregressive


@method("sample", family="autoregressive", lossless=False,
        paper="The Curious Case of Neural Text Degeneration",
        departures="none; several truncation rules apply in transformers' order (temperature, top-k, top-p, "
                   "min-p, typical, eta)")
def sample(dec, *, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0, typical: float = 1.0, eta: float = 0.0):
    """Temperature sampling with optional top-k, top-p, min-p, typical and eta truncation."""
    if dec.greedy and (top_k or top_p < 1 or min_p or typical < 1 or eta):
        raise LabError("truncation options need a temperature > 0 (temperature 0 is greedy)")
    dec.sampling = replace(dec.sampling, top_k=top_k, top_p=top_p, min_p=min_p, typical=typical, eta=eta)
    yield from autoregressive(dec)
