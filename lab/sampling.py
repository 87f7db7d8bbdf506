"""Next-token distributions: temperature and the truncation rules of the literature, as torch references.

Every function maps logits [..., V] to logits (or probabilities) of the same shape; removed tokens get -inf.
`Sampling.warp` applies them in transformers' order: temperature, top-k, top-p, min-p, typical, eta.
- top-k, top-p: "The Curious Case of Neural Text Degeneration" (Holtzman et al., 2020)
- min-p: "Turning Up the Heat: Min-p Sampling for Creative and Coherent LLM Outputs" (Nguyen et al., 2024)
- typical: "Locally Typical Sampling" (Meister et al., 2023)
- eta: "Truncation Sampling as Language Model Desmoothing" (Hewitt et al., 2022)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import LabError

NEG_INF = float("-inf")


def top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, NEG_INF)


def top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches p (nucleus sampling)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cum = sorted_logits.softmax(-1).cumsum(-1)
    drop_sorted = (cum - sorted_logits.softmax(-1)) >= p  # mass before this token already reaches p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, NEG_INF)


def min_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep tokens whose probability is at least p times the top token's."""
    if p <= 0.0:
        return logits
    probs = logits.softmax(-1)
    keep = probs >= p * probs.max(-1, keepdim=True).values
    return logits.masked_fill(~keep, NEG_INF)


def typical(logits: torch.Tensor, mass: float) -> torch.Tensor:
    """Keep the tokens whose surprisal is closest to the entropy, up to the given mass."""
    if mass >= 1.0:
        return logits
    logp = logits.log_softmax(-1)
    p = logp.exp()
    entropy = -(p * logp.nan_to_num(neginf=0.0)).sum(-1, keepdim=True)
    shift = (-logp - entropy).abs()
    sorted_shift, order = torch.sort(shift, dim=-1)
    cum = p.gather(-1, order).cumsum(-1)
    drop_sorted = (cum - p.gather(-1, order)) >= mass
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, NEG_INF)


def eta(logits: torch.Tensor, eta_value: float) -> torch.Tensor:
    """Drop tokens below min(eta, sqrt(eta) * exp(-entropy)); the top token always stays."""
    if eta_value <= 0.0:
        return logits
    logp = logits.log_softmax(-1)
    p = logp.exp()
    entropy = -(p * logp.nan_to_num(neginf=0.0)).sum(-1, keepdim=True)
    eps = torch.minimum(torch.full_like(entropy, eta_value), math.sqrt(eta_value) * torch.exp(-entropy))
    keep = (p >= eps) | (p == p.max(-1, keepdim=True).values)
    return logits.masked_fill(~keep, NEG_INF)


@dataclass(frozen=True)
class Sampling:
    """How a next token is chosen: temperature 0 is greedy (argmax); otherwise sample after the warpers."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    typical: float = 1.0
    eta: float = 0.0

    def __post_init__(self):
        for name in ("temperature", "top_p", "min_p", "typical", "eta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise LabError(f"{name} must be a finite number, got {value!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int):
            raise LabError(f"top_k must be an integer (0: off), got {self.top_k!r}")
        if not self.temperature >= 0.0:
            raise LabError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0 or not 0.0 < self.typical <= 1.0:
            raise LabError("top_p and typical must be in (0, 1]")
        if self.top_k < 0 or not 0.0 <= self.min_p < 1.0 or self.eta < 0.0:
            raise LabError("top_k must be >= 0, min_p in [0, 1), eta >= 0")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def warp(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits after temperature and truncation (float32). Several rules apply one after the other, each to
        what the one before left, in transformers' order (`generate`'s logits processors): temperature, top-k,
        top-p, min-p, typical, eta. The order matters: top-p after top-k takes its mass from the k survivors."""
        logits = logits.float() / self.temperature
        logits = top_k(logits, self.top_k)
        logits = top_p(logits, self.top_p)
        logits = min_p(logits, self.min_p)
        logits = typical(logits, self.typical)
        return eta(logits, self.eta)

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """The distribution a token is drawn from; a one-hot argmax at temperature 0."""
        if self.greedy:
            return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
        return self.warp(logits).softmax(-1)


def draw(probs: torch.Tensor, rng: torch.Generator | None) -> torch.Tensor:
    """One sample per row of a probability table [..., V], from one random stream, on the table's device
    (no copy to the host when the stream lives on the same device)."""
    flat = probs.reshape(-1, probs.shape[-1]).float()
    if rng is not None and rng.device != flat.device:
        flat = flat.to(rng.device)
    out = torch.multinomial(flat, 1, generator=rng).squeeze(-1)
    return out.reshape(probs.shape[:-1]).to(probs.device)


def generator(device: torch.device | str, seed: int) -> torch.Generator:
    """A random stream on `device`: draws stay there (one seed, one reproducible stream per call)."""
    return torch.Generator(device=device).manual_seed(int(seed))
