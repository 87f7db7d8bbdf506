"""Rotary position embedding with the KV-cache write, in one pass over a layer's fused query-key-value product
(Su et al., 2021, "RoFormer": rotate-half form, as Llama-family models use it).

`rope_and_cache(qkv, cos, sin, positions, slots, keys, values, heads, kv_heads)` reads qkv [k, (H + 2 KVH) D], returns
the rotated queries [H, k, D] and writes the rotated keys and the values of token i into cache column slots[i] of
keys / values [KVH, capacity, D] (one layer of a static cache). One program per (token, head). Rounding follows the
torch reference: x cos and rotate_half(x) sin are each rounded to the model's dtype, then their sum.
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


def rotate_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def split_qkv(qkv: torch.Tensor, heads: int, kv_heads: int, dim: int) -> tuple[torch.Tensor, ...]:
    """A fused projection's output [k, (heads + 2 kv_heads) D] as queries [heads, k, D], keys and values
    [kv_heads, k, D] (views)."""
    k = qkv.shape[0]
    q = qkv[:, :heads * dim].view(k, heads, dim).transpose(0, 1)
    key = qkv[:, heads * dim:(heads + kv_heads) * dim].view(k, kv_heads, dim).transpose(0, 1)
    value = qkv[:, (heads + kv_heads) * dim:].view(k, kv_heads, dim).transpose(0, 1)
    return q, key, value


def rope_and_cache_reference(qkv, cos, sin, positions, slots, keys, values, heads: int, kv_heads: int) -> torch.Tensor:
    c, s = cos[positions][None], sin[positions][None]
    q, key, value = split_qkv(qkv, heads, kv_heads, keys.shape[-1])
    keys.index_copy_(1, slots, rotate_reference(key, c, s))
    values.index_copy_(1, slots, value)
    return rotate_reference(q, c, s)


if triton is not None:
    @triton.jit
    def _rotate(row, cos, sin, D: tl.constexpr, dtype: tl.constexpr):
        d = tl.arange(0, D)
        partner = tl.where(d < D // 2, d + D // 2, d - D // 2)
        x = tl.load(row + d).to(tl.float32)
        other = tl.load(row + partner).to(tl.float32)
        other = tl.where(d < D // 2, -other, other)
        a = to_dtype(x * cos, dtype).to(tl.float32)
        b = to_dtype(other * sin, dtype).to(tl.float32)
        return to_dtype(a + b, dtype)

    @triton.jit
    def _rope_and_cache(qkv, cos, sin, positions, slots, q_out, keys, values, tokens, heads, kv_heads,
                        head_stride, column_stride, D: tl.constexpr):
        t, h = tl.program_id(0), tl.program_id(1)
        d = tl.arange(0, D)
        width = (heads + 2 * kv_heads) * D
        position = tl.load(positions + t)
        c = tl.load(cos + position * D + d).to(tl.float32)
        s = tl.load(sin + position * D + d).to(tl.float32)
        dtype = q_out.dtype.element_ty
        if h < heads:
            tl.store(q_out + (h * tokens + t) * D + d, _rotate(qkv + t * width + h * D, c, s, D, dtype))
        else:
            j = h - heads
            slot = tl.load(slots + t)
            column = j * head_stride + slot * column_stride + d
            tl.store(keys + column, _rotate(qkv + t * width + (heads + j) * D, c, s, D, dtype))
            tl.store(values + column, tl.load(qkv + t * width + (heads + kv_heads + j) * D + d))


def rope_and_cache(qkv, cos, sin, positions, slots, keys, values, heads: int, kv_heads: int) -> torch.Tensor:
    """Rotated queries [H, k, D]; rotated keys and values written to keys/values[:, slots]. Triton on CUDA."""
    dim = keys.shape[-1]
    if not triton_ready(qkv) or keys.stride(-1) != 1 or values.stride() != keys.stride() or dim & (dim - 1):
        return rope_and_cache_reference(qkv, cos, sin, positions, slots, keys, values, heads, kv_heads)
    qkv = qkv.contiguous()
    k = qkv.shape[0]
    q = torch.empty(heads, k, dim, dtype=qkv.dtype, device=qkv.device)
    _rope_and_cache[(k, heads + kv_heads)](qkv, cos, sin, positions, slots, q, keys, values, k, heads, kv_heads,
                                           keys.stride(0), keys.stride(1), D=dim)
    return q
