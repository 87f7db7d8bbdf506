"""Rounding float32 to the model's dtype inside a kernel the way torch does: to nearest, ties to even.

The fused kernels reproduce torch's per-op roundings so that the fast backend's fused forward computes what its
reference computes. On a GPU `x.to(tl.bfloat16)` rounds to nearest; Triton's CPU interpreter truncates instead, so
bfloat16 is rounded here by hand (add half an ulp plus the tie bit, clear the low 16 bits), the same on both.
"""
from __future__ import annotations

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None

if triton is not None:
    @triton.jit
    def to_dtype(x, dtype: tl.constexpr):
        """float32 x rounded to `dtype` (to nearest, ties to even)."""
        if dtype == tl.bfloat16:
            bits = x.to(tl.uint32, bitcast=True)
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
            return bits.to(tl.float32, bitcast=True).to(tl.bfloat16)
        else:
            return x.to(dtype)
