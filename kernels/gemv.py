"""A few tokens' matrix-vector products with the elementwise step before each fused in: y = W f(x) (+ b).

At batch one a small model's products are too small for a matrix-multiply library's tiles (cuBLAS: about 4 us for a
576 x 960 product that moves 1 MB), and the norm or activation before each is a kernel of its own. Here every
program loads one whole input row (K <= 2048), applies the prologue, and computes BLOCK_N outputs from its rows of
W (row-major, nn.Linear's layout) in one pass, accumulating in float32; the result is rounded once to the model's
dtype, as cuBLAS rounds its accumulator. M input rows run as M rows of programs, each row computed exactly as a
one-row call computes it (W's tile is read once per row, the repeats from the L2). Prologues (`prologue`):
- "none": y = W x;
- "norm": s = x + delta (rounded; written to `total` by program 0) or s = x, then y = W (RMSNorm(s) * norm_weight),
  rounded as `rms_norm.add_rms_norm` rounds (the residual add and the next norm of a decoder layer, Zhang & Sennrich,
  2019);
- "silu": x = [gate, up] (2 K), y = W (silu(gate) * up), rounded as `silu_mul` rounds (SwiGLU, Shazeer, 2020).
With `ids` [M], x is an embedding table and input row m is its row ids[m] (a model's first product takes the token
embeddings without a gather kernel of its own); the gathered rows are the residual stream, returned as the sum.
`kernels.head_argmax` shares the prologue (`load_input`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import triton_ready
from .rms_norm import rms_norm_reference
from .rounding import to_dtype
from .silu_mul import silu_mul_reference

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None

PROLOGUES = {"none": 0, "norm": 1, "silu": 2}
MAX_K = 2048  # the whole row in one program's registers; larger rows (8B shapes) run faster through cuBLAS


def gemv_reference(x, weight, bias=None, prologue="none", delta=None, norm_weight=None, eps=1e-6, ids=None):
    """(y [M, N], the residual sum s for prologue "norm" with a delta (or the gathered rows x[ids]), else None)."""
    total = None
    if ids is not None:
        x = total = x[ids]
    if prologue == "norm":
        if delta is not None:
            x = total = x + delta
        x = rms_norm_reference(x, norm_weight, eps)
    elif prologue == "silu":
        x = silu_mul_reference(x)
    return F.linear(x, weight, bias), total


if triton is not None:
    @triton.jit
    def load_input(x, delta, total, norm_weight, ids, eps, pid, m, dtype: tl.constexpr, K: tl.constexpr,
                   PROLOGUE: tl.constexpr, HAS_DELTA: tl.constexpr, HAS_IDS: tl.constexpr, BLOCK_K: tl.constexpr):
        """Input row m after its prologue, float32 [BLOCK_K] (zeros past K); program 0 writes the residual sum (or
        the gathered row) to `total`."""
        if HAS_IDS:
            x += tl.load(ids + m) * K
        else:
            x += m * (2 * K if PROLOGUE == 2 else K)
        delta += m * K
        total += m * K
        k = tl.arange(0, BLOCK_K)
        inside = k < K
        if PROLOGUE == 2:
            g = tl.load(x + k, mask=inside, other=0.0).to(tl.float32)
            u = tl.load(x + K + k, mask=inside, other=0.0).to(tl.float32)
            s = to_dtype(g / (1.0 + tl.exp(-g)), dtype).to(tl.float32)
            v = to_dtype(s * u, dtype).to(tl.float32)
        else:
            v = tl.load(x + k, mask=inside, other=0.0).to(tl.float32)
            if HAS_DELTA:
                v = to_dtype(v + tl.load(delta + k, mask=inside, other=0.0).to(tl.float32), dtype)
                if pid == 0:
                    tl.store(total + k, v, mask=inside)
                v = v.to(tl.float32)
            elif HAS_IDS:
                if pid == 0:
                    tl.store(total + k, v.to(dtype), mask=inside)
            if PROLOGUE == 1:
                scale = 1.0 / tl.sqrt_rn(tl.sum(v * v, 0) / K + eps)
                normed = to_dtype(v * scale, dtype).to(tl.float32)
                v = to_dtype(tl.load(norm_weight + k, mask=inside, other=0.0).to(tl.float32) * normed,
                             dtype).to(tl.float32)
        return v

    @triton.jit
    def _gemv(x, delta, total, norm_weight, ids, weight, bias, out, n, eps, K: tl.constexpr, PROLOGUE: tl.constexpr,
              HAS_DELTA: tl.constexpr, HAS_IDS: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr,
              BLOCK_K: tl.constexpr):
        pid, m = tl.program_id(0), tl.program_id(1)  # a block of outputs, an input row
        out += m * n
        dtype = out.dtype.element_ty
        v = load_input(x, delta, total, norm_weight, ids, eps, pid, m, dtype, K, PROLOGUE, HAS_DELTA, HAS_IDS,
                       BLOCK_K)
        k = tl.arange(0, BLOCK_K)
        rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        live = rows < n
        w = tl.load(weight + rows[:, None] * K + k[None, :], mask=live[:, None] & (k < K)[None, :], other=0.0)
        acc = tl.sum(w.to(tl.float32) * v[None, :], 1)
        if HAS_BIAS:
            acc += tl.load(bias + rows, mask=live, other=0.0).to(tl.float32)
        tl.store(out + rows, to_dtype(acc, dtype), mask=live)


def fits(k: int) -> bool:
    return k <= MAX_K


def gemv(x, weight, bias=None, prologue="none", delta=None, norm_weight=None, eps=1e-6, ids=None):
    """`gemv_reference`'s contract for M rows x [M, K] ([M, 2 K] for "silu"; with `ids` [M], rows of the table x);
    the Triton kernel on CUDA."""
    n, k = weight.shape
    if not triton_ready(x) or not fits(k) or not weight.is_contiguous() or (ids is not None and prologue == "silu"):
        return gemv_reference(x, weight, bias, prologue, delta, norm_weight, eps, ids)
    rows = x.shape[0] if ids is None else ids.shape[0]
    out = torch.empty(rows, n, dtype=x.dtype, device=x.device)
    total = torch.empty(rows, k, dtype=x.dtype, device=x.device) if delta is not None or ids is not None else None
    block_k = triton.next_power_of_2(k)
    block_n = max(1, 4096 // block_k)
    warps = 4 if block_k <= 2048 else min(16, block_k // 512)
    _gemv[(triton.cdiv(n, block_n), rows)](
        x.contiguous(), delta.contiguous() if delta is not None else x, total if total is not None else x,
        norm_weight if norm_weight is not None else x, ids if ids is not None else x, weight,
        bias if bias is not None else weight, out, n, eps, K=k, PROLOGUE=PROLOGUES[prologue],
        HAS_DELTA=delta is not None, HAS_IDS=ids is not None, HAS_BIAS=bias is not None, BLOCK_N=block_n,
        BLOCK_K=block_k, num_warps=warps)
    return out, total
