"""RMSNorm with the residual add before it, in one pass: the two elementwise steps between a decoder layer's matrix
products (Zhang & Sennrich, 2019, "Root Mean Square Layer Normalization"; the fusion is gpt-fast's and vLLM's).

`add_rms_norm(delta, residual, weight, eps)` returns (residual + delta, RMSNorm of it); with `residual=None` only
the norm. One program per row. Rounding follows the fast backend's torch reference (and transformers'): the sum is
rounded to the model's dtype, the norm is computed in float32, rounded, then scaled by the weight and rounded again.
"""
from __future__ import annotations

import torch

from . import triton_ready
from .rounding import to_dtype

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm as transformers computes it (in float32, then back to x's dtype, then times the weight)."""
    dtype = x.dtype
    f = x.float()
    f = f * torch.rsqrt(f.pow(2).mean(-1, keepdim=True) + eps)
    return weight * f.to(dtype)


def add_rms_norm_reference(delta: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor,
                           eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    x = delta if residual is None else residual + delta
    return x, rms_norm_reference(x, weight, eps)


if triton is not None:
    @triton.jit
    def _add_rms_norm(delta, residual, weight, out_sum, out_norm, hidden, eps, HAS_RESIDUAL: tl.constexpr,
                      BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        inside = cols < hidden
        x = tl.load(delta + row * hidden + cols, mask=inside, other=0.0)
        if HAS_RESIDUAL:
            r = tl.load(residual + row * hidden + cols, mask=inside, other=0.0)
            x = to_dtype(r.to(tl.float32) + x.to(tl.float32), out_sum.dtype.element_ty)
            tl.store(out_sum + row * hidden + cols, x, mask=inside)
        f = x.to(tl.float32)
        scale = 1.0 / tl.sqrt_rn(tl.sum(f * f, 0) / hidden + eps)
        normed = to_dtype(f * scale, out_norm.dtype.element_ty).to(tl.float32)
        w = tl.load(weight + cols, mask=inside, other=0.0).to(tl.float32)
        tl.store(out_norm + row * hidden + cols, to_dtype(w * normed, out_norm.dtype.element_ty), mask=inside)


def add_rms_norm(delta: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor,
                 eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(residual + delta, RMSNorm(residual + delta) * weight) for rows [k, hidden]; the Triton kernel on CUDA."""
    if not triton_ready(delta) or delta.dim() != 2 or weight.dtype != delta.dtype:
        return add_rms_norm_reference(delta, residual, weight, eps)
    delta = delta.contiguous()
    rows, hidden = delta.shape
    total = torch.empty_like(delta) if residual is not None else delta
    normed = torch.empty_like(delta)
    _add_rms_norm[(rows,)](delta, delta if residual is None else residual.contiguous(), weight, total, normed, hidden,
                           eps, HAS_RESIDUAL=residual is not None, BLOCK=triton.next_power_of_2(hidden))
    return total, normed
