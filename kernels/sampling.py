"""Temperature and min-p sampling without a sort, one program per row.

"Turning Up the Heat: Min-p Sampling for Creative and Coherent LLM Outputs" (Nguyen et al., 2024) keeps the tokens
whose probability is at least min_p times the top one's: in logits, l >= l_max + T log(min_p), so one pass finds
the maximum and a second draws with an exponential race, argmax over kept tokens of l / T - log E (E ~ Exp(1) given
per row), which samples softmax(l / T) restricted to the kept tokens without normalising or sorting.
"""
from __future__ import annotations

import math

import torch

from . import triton_ready

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None


def sample_min_p_reference(logits: torch.Tensor, temperature: float, min_p: float, noise: torch.Tensor) -> torch.Tensor:
    """logits [B, V], noise [B, V] Exp(1): one token per row from softmax(logits / T) after min-p (0: off)."""
    scaled = logits.float() / temperature
    keep = scaled >= scaled.max(-1, keepdim=True).values + (math.log(min_p) if min_p > 0 else -math.inf)
    return torch.where(keep, scaled - noise.log(), float("-inf")).argmax(-1)


if triton is not None:
    @triton.jit
    def _sample(logits, noise, out, vocab: tl.constexpr, inv_t, log_min_p, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        top = -float("inf")
        for start in range(0, vocab, BLOCK):
            v = start + tl.arange(0, BLOCK)
            x = tl.load(logits + row * vocab + v, mask=v < vocab, other=-float("inf")).to(tl.float32) * inv_t
            top = tl.maximum(top, tl.max(x, 0))
        best_value = -float("inf")
        best_token = 0
        for start in range(0, vocab, BLOCK):
            v = start + tl.arange(0, BLOCK)
            inside = v < vocab
            x = tl.load(logits + row * vocab + v, mask=inside, other=-float("inf")).to(tl.float32) * inv_t
            e = tl.load(noise + row * vocab + v, mask=inside, other=1.0)
            score = tl.where(inside & (x >= top + log_min_p), x - tl.log(e), -float("inf"))
            value = tl.max(score, 0)
            token = start + tl.argmax(score, 0)
            better = value > best_value
            best_token = tl.where(better, token, best_token)
            best_value = tl.where(better, value, best_value)
        tl.store(out + row, best_token)


def sample_min_p(logits: torch.Tensor, temperature: float, min_p: float, noise: torch.Tensor) -> torch.Tensor:
    """`sample_min_p_reference`'s contract; the Triton kernel on CUDA, else the reference."""
    if not temperature > 0:
        raise ValueError("sampling needs a temperature > 0 (temperature 0 is argmax)")
    if not triton_ready(logits, noise):
        return sample_min_p_reference(logits, temperature, min_p, noise)
    rows, vocab = logits.shape
    out = torch.empty(rows, dtype=torch.long, device=logits.device)
    _sample[(rows,)](logits.contiguous(), noise.contiguous(), out, vocab, 1.0 / temperature,
                     math.log(min_p) if min_p > 0 else -float("inf"), BLOCK=2048)
    return out
