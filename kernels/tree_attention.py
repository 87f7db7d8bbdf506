"""Attention of k new tokens over one layer's static KV cache under a bool mask: decode (k = 1) and tree verification.

Query i of head h attends to the cache columns c < C where mask[i, c] is True (its visible prefix and its ancestors
in a draft tree: the tree attention of SpecInfer, Miao et al., 2023, and Medusa, Cai et al., 2024), with grouped-query
heads (head h reads kv head h // (H // KVH)); the output is token-major with the heads concatenated, [k, H * D], what
the output projection takes.

The columns are split as in Flash-Decoding (Dao et al., 2023, split-K): a first kernel runs one program per (kv head,
block of query rows, split of the columns). A block's rows are the flattened (query row, head of the group) pairs of
one kv head, so each key/value tile is loaded once for all the heads that share it; the program runs an online
softmax over its split's column tiles in float32 and writes its running max, sum and unnormalised accumulator to
float32 scratch. A second kernel merges the splits and writes the output in q's dtype, 32 (output row, split) pairs
a step (one output row of 32 splits when they are many, as in long decodes; 4 rows of 8 in verification). The split
count depends only on the shapes and the SM count (`plan`: about two programs per SM), never on the data: the call
has no host sync and can be captured in a CUDA graph. Masked columns and columns past C add nothing; a row that sees
no column gives zeros.
"""
from __future__ import annotations

import functools
import math
import os

import torch
import torch.nn.functional as F

from . import triton_ready

try:
    import triton
    import triton.language as tl
except ImportError:  # the reference serves
    triton = None

LOG2E = 1.4426950408889634


def tree_attention_reference(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                             mask: torch.Tensor) -> torch.Tensor:
    """q [H, k, D], keys/values [KVH, C, D], mask bool [k, C] (True: query i sees column c). Returns [k, H * D] in
    q's dtype: softmax(q k^T / sqrt(D)) v per head, head h on kv head h // (H // KVH); a row that sees nothing: 0."""
    heads, k, dim = q.shape
    out = F.scaled_dot_product_attention(q[None], keys[None], values[None], attn_mask=mask[None, None],
                                         enable_gqa=True)[0]
    out = out.transpose(0, 1).reshape(k, heads * dim)
    return torch.where(mask.any(-1)[:, None], out, 0)  # some backends give NaN on a row that sees nothing


@functools.lru_cache(maxsize=None)
def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 8  # the interpreter on the CPU runs the programs one by one: plan as for a small GPU


def plan(k: int, columns: int, heads: int, kv_heads: int, sms: int = 132, dtype: torch.dtype = torch.bfloat16,
         block: tuple[int, int] | None = None, splits: int | None = None) -> tuple[int, int, int, int]:
    """(rows per block, columns per tile, splits, tiles per split), from the shapes and the SM count alone.

    Blocks of up to 64 flattened rows (16 in float32, whose full-precision dot runs on the CUDA cores and spills
    beyond). The splits aim at 2 programs per SM over (kv head, row block, split), within a factor of about 1.5:
    tiles of 64 columns, each split the power of two of tiles nearest to tiles / wanted splits (a compile-time trip
    count, so few variants), none empty; a cache too short for 2/3 of that many tiles takes tiles of 32 or 16
    columns. `block` (rows, columns) overrides the tile and `splits` the wanted count, rounded the same way (the
    tests reach several splits of several tiles, and more splits than a merge step, on small shapes with them)."""
    rows = k * (heads // kv_heads)
    block_m, block_n = block or (min(16 if dtype == torch.float32 else 64, max(16, triton.next_power_of_2(rows))), 64)
    wanted = splits or triton.cdiv(2 * sms, kv_heads * triton.cdiv(rows, block_m))
    while block is None and block_n > 16 and 3 * triton.cdiv(columns, block_n) < 2 * wanted:
        block_n //= 2  # short caches: narrower tiles, more splits
    tiles = max(1, triton.cdiv(columns, block_n))
    per = 1 << max(0, math.floor(math.log2(tiles / wanted) + 0.5))
    return block_m, block_n, triton.cdiv(tiles, per), per


if triton is not None:
    @triton.jit
    def _dot(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
        """a @ b accumulated in float32. UPCAST: the interpreter, whose dot multiplies bfloat16's raw bits; bfloat16
        products are exact in float32, so it computes what the tensor cores do."""
        if UPCAST:
            return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
        return tl.dot(a, b, input_precision=PRECISION)

    @triton.jit
    def _partial(q, keys, values, mask, best_out, total_out, acc_out, k, columns, splits, scale,
                 sq_h, sq_i, sk_h, sk_c, sv_h, sv_c, sm_i,
                 GROUP: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 TILES: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
        kv, block, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        rows = k * GROUP
        m = block * BLOCK_M + tl.arange(0, BLOCK_M)  # flattened (query row, head of the group), token-major
        live = m < rows
        row, head = m // GROUP, kv * GROUP + m % GROUP
        d = tl.arange(0, D)
        qt = tl.load(q + head[:, None] * sq_h + row[:, None] * sq_i + d[None, :], mask=live[:, None], other=0.0)
        best = tl.full((BLOCK_M,), -float("inf"), tl.float32)
        total = tl.zeros((BLOCK_M,), tl.float32)
        acc = tl.zeros((BLOCK_M, D), tl.float32)
        for tile in range(TILES):  # the last split's tiles past C load nothing and add nothing
            c = (split * TILES + tile) * BLOCK_N + tl.arange(0, BLOCK_N)
            inside = c < columns
            kt = tl.load(keys + kv * sk_h + c[None, :] * sk_c + d[:, None], mask=inside[None, :], other=0.0)
            s = _dot(qt, kt, PRECISION, UPCAST) * scale  # [BLOCK_M, BLOCK_N], log2 units
            seen = tl.load(mask + row[:, None] * sm_i + c[None, :], mask=live[:, None] & inside[None, :],
                           other=0) != 0
            s = tl.where(seen, s, -float("inf"))
            new = tl.maximum(best, tl.max(s, 1))
            base = tl.where(new == -float("inf"), 0.0, new)  # nothing seen yet: exp2(-inf - 0) = 0, not NaN
            p = tl.exp2(s - base[:, None])
            alpha = tl.exp2(best - base)
            total = total * alpha + tl.sum(p, 1)
            vt = tl.load(values + kv * sv_h + c[:, None] * sv_c + d[None, :], mask=inside[:, None], other=0.0)
            acc = acc * alpha[:, None] + _dot(p.to(vt.dtype), vt, PRECISION, UPCAST)
            best = new
        slot = (kv * splits + split) * rows + m
        tl.store(best_out + slot, best, mask=live)
        tl.store(total_out + slot, total, mask=live)
        tl.store(acc_out + slot[:, None] * D + d[None, :], acc, mask=live[:, None])

    @triton.jit
    def _combine(best_in, total_in, acc_in, out, k, heads, splits, GROUP: tl.constexpr, D: tl.constexpr,
                 BLOCK_R: tl.constexpr, CHUNK: tl.constexpr):
        o = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)  # output (query row, head) pairs, row-major
        live = o < k * heads
        row, head = o // heads, o % heads
        kv, m = head // GROUP, row * GROUP + head % GROUP
        rows = k * GROUP
        d = tl.arange(0, D)
        best = tl.full((BLOCK_R,), -float("inf"), tl.float32)
        total = tl.zeros((BLOCK_R,), tl.float32)
        acc = tl.zeros((BLOCK_R, D), tl.float32)
        first = 0
        while first < splits:  # CHUNK splits at a time (a `for` over a run-time count breaks the interpreter)
            split = first + tl.arange(0, CHUNK)
            ok = live[:, None] & (split[None, :] < splits)
            slot = (kv[:, None] * splits + split[None, :]) * rows + m[:, None]  # [BLOCK_R, CHUNK]
            theirs = tl.load(best_in + slot, mask=ok, other=-float("inf"))
            new = tl.maximum(best, tl.max(theirs, 1))
            base = tl.where(new == -float("inf"), 0.0, new)
            alpha, beta = tl.exp2(best - base), tl.exp2(theirs - base[:, None])
            total = total * alpha + tl.sum(tl.load(total_in + slot, mask=ok, other=0.0) * beta, 1)
            part = tl.load(acc_in + slot[:, :, None] * D + d[None, None, :], mask=ok[:, :, None], other=0.0)
            acc = acc * alpha[:, None] + tl.sum(part * beta[:, :, None], 1)
            best = new
            first += CHUNK
        seen = total > 0
        result = tl.where(seen[:, None], acc / tl.where(seen, total, 1.0)[:, None], 0.0)
        tl.store(out + o[:, None] * D + d[None, :], result.to(out.dtype.element_ty), mask=live[:, None])


def tree_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *,
                   block: tuple[int, int] | None = None, splits: int | None = None) -> torch.Tensor:
    """`tree_attention_reference`'s contract; the split-K Triton kernels on CUDA, else the reference. keys/values
    may be strided views (the first C columns of a bigger cache): read in place when their last dimension is
    contiguous. `block` (rows, columns) and `splits` override the shape-based `plan`."""
    if not triton_ready(q, keys, values, mask):
        return tree_attention_reference(q, keys, values, mask)
    heads, k, dim = q.shape
    kv_heads, columns, _ = keys.shape
    assert dim in (64, 128) and keys.shape[-1] == values.shape[-1] == dim, f"head_dim must be 64 or 128, got {dim}"
    assert heads % kv_heads == 0 and values.shape[:2] == keys.shape[:2] and mask.shape == (k, columns)
    assert q.dtype == keys.dtype == values.dtype and mask.dtype == torch.bool, (q.dtype, keys.dtype, mask.dtype)
    group = heads // kv_heads
    block_m, block_n, count, tiles = plan(k, columns, heads, kv_heads, _sm_count(q.device), q.dtype, block, splits)
    rows = k * group
    best = torch.empty(kv_heads * count * rows, dtype=torch.float32, device=q.device)
    total = torch.empty_like(best)
    acc = torch.empty(kv_heads * count * rows, dim, dtype=torch.float32, device=q.device)
    out = torch.empty(k, heads * dim, dtype=q.dtype, device=q.device)
    q, keys, values, mask = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, keys, values, mask))
    seen = mask.view(torch.int8)
    _partial[(kv_heads, triton.cdiv(rows, block_m), count)](
        q, keys, values, seen, best, total, acc, k, columns, count, dim ** -0.5 * LOG2E,
        *q.stride()[:2], *keys.stride()[:2], *values.stride()[:2], seen.stride(0),
        GROUP=group, D=dim, BLOCK_M=block_m, BLOCK_N=block_n, TILES=tiles,
        PRECISION="ieee" if q.dtype == torch.float32 else None,
        UPCAST=q.dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1",
        num_warps=8 if block_m * dim > 4096 else 4,  # 2 programs an SM fit in the registers, and in shared memory
        num_stages=2 if block_m * dim > 4096 or q.dtype == torch.float32 else 3)  # at 2 stages where tiles are big
    chunk = min(32, max(2, triton.next_power_of_2(count)))  # splits merged at once; 32 rows x splits a program
    _combine[(triton.cdiv(k * heads, 32 // chunk),)](best, total, acc, out, k, heads, count, GROUP=group, D=dim,
                                                    BLOCK_R=32 // chunk, CHUNK=chunk)
    return out
