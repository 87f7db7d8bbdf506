"""Attention of k new tokens over one layer's static KV cache under a bool mask: decode (k = 1) and tree verification.

Query i of head h attends to the cache columns c < C where mask[i, c] is True (its visible prefix and its ancestors
in a draft tree: the tree attention of SpecInfer, Miao et al., 2023, and Medusa, Cai et al., 2024), with grouped-query
heads (head h reads kv head h // (H // KVH)); the output is token-major with the heads concatenated, [k, H * D], what
the output projection takes.

The columns are split as in Flash-Decoding (Dao et al., 2023, split-K): one program per (kv head, block of query
rows, split of the columns). A block's rows are the flattened (query row, head of the group) pairs of one kv head, so
each key/value tile is loaded once for all the heads that share it; the program runs an online softmax over its
split's column tiles in float32 and writes its running max, sum and unnormalised accumulator to float32 scratch (one
split: the output itself). Where a block's partials are small (`merging`: decodes, small trees) the block's last
split to finish (an acq_rel counter, the split-K semaphore pattern) merges them and writes the output in q's dtype:
one launch (a SmolLM2 decode at C = 4096: 96 programs, 32 splits of 128 columns, 3 live rows merged in one step);
it sets the counter back to 0, so the counters are kept (`kernels.counters`) and no fill is launched a call.
Else a second kernel merges, 32 (output row, split) pairs a step (4 rows of 8 when verifying 64 tokens), which
spreads a large merge over many programs. Told on the device how many leading columns every row sees (`visible`:
the committed prefix), a program reads no mask on tiles below that count (on the H200 a 64-token verification at
Llama-8B's shape over 4,096 columns took 23.8 us a call instead of 25.3; scripts/sweep_attention.py --mask). The
split count depends only on the shapes and the SM count (`plan`: about two programs per SM), never on the data:
the call has no host sync and can be captured in a CUDA graph. Masked columns and columns past C add nothing; a row
that sees no column gives zeros.
"""
from __future__ import annotations

import functools
import math
import os

import torch
import torch.nn.functional as F

from . import counters as kernels_counters, triton_ready

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
         block: tuple[int, int] | None = None, splits: int | None = None, dim: int = 64) -> tuple[int, int, int, int]:
    """(rows per block, columns per tile, splits, tiles per split), from the shapes and the SM count alone.

    Blocks of up to 64 flattened rows (16 in float32, whose full-precision dot runs on the CUDA cores and spills
    beyond). The splits aim at 2 programs per SM over (kv head, row block, split), within a factor of about 1.5; at
    most 32 rows over at most 4096 columns (decoding, a chain's verification), 1 program per SM and tiles of at least
    32 columns, which a sweep of the plans on the H200 found about 1 us a call faster inside a model's graph
    (scripts/sweep_attention.py, results/sweep-attention-2026-12-01.json). Tiles of 64 columns, or 32 for a block of
    64 rows of 128-wide heads (a tree at Llama-8B's shape: one call of 64 tokens over 4,096 columns took 25.8 us
    against 35.1 with tiles of 64 and 8 warps, `python scripts/sweep_attention.py --one-call`,
    results/sweep-attention-one-call-2026-12-02.json); each split the power of two of tiles nearest to tiles /
    wanted splits (a compile-time trip count, so few variants), none empty; a cache too short for 2/3 of that many
    tiles takes narrower tiles. `block` (rows, columns) overrides the tile and `splits` the wanted count, rounded the
    same way (the tests reach several splits of several tiles, and more splits than a merge step, on small shapes
    with them)."""
    rows = k * (heads // kv_heads)
    chosen = block is not None
    if not chosen:
        block_m = min(16 if dtype == torch.float32 else 64, max(16, triton.next_power_of_2(rows)))
        block = block_m, 32 if block_m * dim > 4096 else 64
    block_m, block_n = block
    per_sm = 1 if rows <= 32 and columns <= 4096 else 2
    wanted = splits or triton.cdiv(per_sm * sms, kv_heads * triton.cdiv(rows, block_m))
    while not chosen and block_n > 48 // per_sm and 3 * triton.cdiv(columns, block_n) < 2 * wanted:
        block_n //= 2  # short caches: narrower tiles, more splits
    tiles = max(1, triton.cdiv(columns, block_n))
    per = 1 << max(0, math.floor(math.log2(tiles / wanted) + 0.5))
    return block_m, block_n, triton.cdiv(tiles, per), per


def merging(splits: int, block_m: int, rows: int, dim: int) -> tuple[bool, int, int]:
    """(in the kernel, rows a step, splits a step) for merging the splits' partials. In the kernel, by the last split
    of each row block, where a block's partials are at most 32768 floats (a few steps of 8192, an L2 round trip
    each): decodes and small trees, one launch; else by a second kernel over every output row (verifying 64 tokens:
    8 splits x 64 rows x 128 would be 8 serial steps in one program). Steps of at most 16 rows (the registers)."""
    merge_m = min(block_m, 16, triton.next_power_of_2(rows))  # the live rows only: 3 of a block of 16 in a decode
    return (splits > 1 and splits * min(block_m, rows) * dim <= 32768, merge_m,
            min(triton.next_power_of_2(splits), max(1, 8192 // (merge_m * dim))))


if triton is not None:
    @triton.jit
    def _dot(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
        """a @ b accumulated in float32. UPCAST: the interpreter, whose dot multiplies bfloat16's raw bits; bfloat16
        products are exact in float32, so it computes what the tensor cores do."""
        if UPCAST:
            return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
        return tl.dot(a, b, input_precision=PRECISION)

    @triton.jit
    def _merge(scratch, n, kv, m, live, splits, rows, R: tl.constexpr, D: tl.constexpr, CHUNK: tl.constexpr,
               CACHE: tl.constexpr):
        """(acc [R, D], total [R]) of rows m of kv heads kv over every split, CHUNK splits a step, from the scratch:
        acc [n, D] (first: 16-byte aligned), best [n], total [n], float32, slot (kv * splits + split) * rows + m.
        CACHE ".cg": read from L2 (written by other programs of this launch)."""
        d = tl.arange(0, D)
        best = tl.full((R,), -float("inf"), tl.float32)
        total = tl.zeros((R,), tl.float32)
        acc = tl.zeros((R, D), tl.float32)
        first = 0
        while first < splits:  # a `for` over a run-time count breaks the interpreter
            split = first + tl.arange(0, CHUNK)
            ok = live[:, None] & (split[None, :] < splits)
            slot = (kv[:, None] * splits + split[None, :]) * rows + m[:, None]  # [R, CHUNK]
            theirs = tl.load(scratch + n * D + slot, mask=ok, other=-float("inf"), cache_modifier=CACHE)
            new = tl.maximum(best, tl.max(theirs, 1))
            base = tl.where(new == -float("inf"), 0.0, new)
            alpha, beta = tl.exp2(best - base), tl.exp2(theirs - base[:, None])
            total = total * alpha + tl.sum(tl.load(scratch + n * (D + 1) + slot, mask=ok, other=0.0,
                                                   cache_modifier=CACHE) * beta, 1)
            part = tl.load(scratch + slot[:, :, None] * D + d[None, None, :], mask=ok[:, :, None], other=0.0,
                           cache_modifier=CACHE)
            acc = acc * alpha[:, None] + tl.sum(part * beta[:, :, None], 1)
            best = new
            first += CHUNK
        return acc, total

    @triton.jit
    def _write(out, acc, total, o, live, D: tl.constexpr):
        """Output rows o ((query row, head) pairs of [k, H * D]): acc / total, zeros where nothing was seen."""
        d = tl.arange(0, D)
        seen = total > 0
        result = tl.where(seen[:, None], acc / tl.where(seen, total, 1.0)[:, None], 0.0)
        tl.store(out + o[:, None] * D + d[None, :], result.to(out.dtype.element_ty), mask=live[:, None])

    @triton.jit
    def _attend(q, keys, values, mask, out, scratch, finished, k, columns, splits, scale, visible,
                sq_h, sq_i, sk_h, sk_c, sv_h, sv_c, sm_i,
                GROUP: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                TILES: tl.constexpr, SPLIT: tl.constexpr, MERGE: tl.constexpr, MERGE_M: tl.constexpr,
                CHUNK: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr, VISIBLE: tl.constexpr):
        kv, block, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        heads, rows = tl.num_programs(0) * GROUP, k * GROUP
        m = block * BLOCK_M + tl.arange(0, BLOCK_M)  # flattened (query row, head of the group), token-major
        live = m < rows
        row, head = m // GROUP, kv * GROUP + m % GROUP
        d = tl.arange(0, D)
        qt = tl.load(q + head[:, None] * sq_h + row[:, None] * sq_i + d[None, :], mask=live[:, None], other=0.0)
        best = tl.full((BLOCK_M,), -float("inf"), tl.float32)
        total = tl.zeros((BLOCK_M,), tl.float32)
        acc = tl.zeros((BLOCK_M, D), tl.float32)
        sure = tl.minimum(tl.load(visible), columns) if VISIBLE else 0  # columns every row sees: no mask read
        for tile in range(TILES):  # the last split's tiles past C load nothing and add nothing
            c = (split * TILES + tile) * BLOCK_N + tl.arange(0, BLOCK_N)
            inside = c < columns
            kt = tl.load(keys + kv * sk_h + c[None, :] * sk_c + d[:, None], mask=inside[None, :], other=0.0)
            s = _dot(qt, kt, PRECISION, UPCAST) * scale  # [BLOCK_M, BLOCK_N], log2 units
            if (split * TILES + tile + 1) * BLOCK_N > sure:  # else every row sees the whole tile: no mask read
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
        if not SPLIT:  # nothing to merge
            _write(out, acc, total, row * heads + head, live, D)
        else:
            n = tl.num_programs(0) * splits * rows
            slot = (kv * splits + split) * rows + m
            tl.store(scratch + slot[:, None] * D + d[None, :], acc, mask=live[:, None])
            tl.store(scratch + n * D + slot, best, mask=live)
            tl.store(scratch + n * (D + 1) + slot, total, mask=live)
            if MERGE:  # the block's last split merges its rows, MERGE_M at a time
                tl.debug_barrier()  # every thread's stores before the release
                counter = finished + kv * tl.num_programs(1) + block
                if tl.atomic_add(counter, 1, sem="acq_rel") == splits - 1:
                    tl.atomic_add(counter, -splits, sem="relaxed")  # every split has counted: back to 0 for the next
                    # launch on this stream (an atomic: a plain store made the decode kernel for 32 heads spill)
                    r = block * BLOCK_M
                    end = tl.minimum(r + BLOCK_M, rows)
                    while r < end:
                        mr = r + tl.arange(0, MERGE_M)
                        mine = mr < end
                        merged, mass = _merge(scratch, n, kv + tl.zeros((MERGE_M,), tl.int32), mr, mine, splits, rows,
                                              MERGE_M, D, CHUNK, ".cg")
                        _write(out, merged, mass, (mr // GROUP) * heads + kv * GROUP + mr % GROUP, mine, D)
                        r += MERGE_M

    @triton.jit
    def _combine(scratch, out, k, heads, splits, GROUP: tl.constexpr, D: tl.constexpr, BLOCK_R: tl.constexpr,
                 CHUNK: tl.constexpr):
        o = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)  # output (query row, head) pairs, row-major
        live = o < k * heads
        row, head = o // heads, o % heads
        acc, total = _merge(scratch, heads * splits * k, head // GROUP, row * GROUP + head % GROUP, live, splits,
                            k * GROUP, BLOCK_R, D, CHUNK, "")
        _write(out, acc, total, o, live, D)


@functools.lru_cache(maxsize=4096)
def _launch(k: int, columns: int, heads: int, kv_heads: int, dim: int, dtype: torch.dtype, sms: int,
            block: tuple[int, int] | None, splits: int | None, interpret: bool,
            config: tuple[int, int] | None = None) -> tuple:
    """(grid, constants, splits, scratch floats, counters, the merge kernel's grid and constants or None): all that the
    launches take from the shapes, cached (a decode step's host work is then the allocations and the launch)."""
    group = heads // kv_heads
    block_m, block_n, count, tiles = plan(k, columns, heads, kv_heads, sms, dtype, block, splits, dim)
    rows, blocks = k * group, triton.cdiv(k * group, block_m)
    merge, merge_m, chunk = merging(count, block_m, rows, dim)
    constants = dict(GROUP=group, D=dim, BLOCK_M=block_m, BLOCK_N=block_n, TILES=tiles, SPLIT=count > 1, MERGE=merge,
                     MERGE_M=merge_m, CHUNK=chunk, PRECISION="ieee" if dtype == torch.float32 else None,
                     UPCAST=dtype == torch.bfloat16 and interpret,
                     num_warps=4, num_stages=2 if dtype == torch.float32 else 3)
    if config:  # (warps, pipeline stages): a sweep's override
        constants.update(num_warps=config[0], num_stages=config[1])
    second = None
    if count > 1 and not merge:
        chunk = min(32, max(2, triton.next_power_of_2(count)))  # splits merged at once; 32 rows x splits a program
        second = ((triton.cdiv(k * heads, 32 // chunk),), dict(GROUP=group, D=dim, BLOCK_R=32 // chunk, CHUNK=chunk))
    return (kv_heads, blocks, count), constants, count, kv_heads * count * rows * (dim + 2), kv_heads * blocks, second


def tree_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *,
                   visible: torch.Tensor | None = None, block: tuple[int, int] | None = None,
                   splits: int | None = None, config: tuple[int, int] | None = None) -> torch.Tensor:
    """`tree_attention_reference`'s contract; the split-K Triton kernels on CUDA, else the reference. keys/values
    may be strided views (the first C columns of a bigger cache): read in place when their last dimension is
    contiguous. `visible`: an integer tensor of one element on q's device, a count of leading columns that every row
    sees (the committed prefix of a verification, read on the device, so a graph can capture the call): the kernel
    reads no mask on tiles below it, so the mask must be True there too (the reference reads it). `block` (rows,
    columns), `splits` and `config` (warps, stages) override the shape-based `plan`."""
    if not triton_ready(q, keys, values, mask):
        return tree_attention_reference(q, keys, values, mask)
    heads, k, dim = q.shape
    kv_heads, columns, _ = keys.shape
    assert dim in (64, 128) and keys.shape[-1] == values.shape[-1] == dim, f"head_dim must be 64 or 128, got {dim}"
    assert heads % kv_heads == 0 and values.shape[:2] == keys.shape[:2] and mask.shape == (k, columns)
    assert q.dtype == keys.dtype == values.dtype and mask.dtype == torch.bool, (q.dtype, keys.dtype, mask.dtype)
    grid, constants, count, floats, counters, second = _launch(
        k, columns, heads, kv_heads, dim, q.dtype, _sm_count(q.device), block, splits,
        os.environ.get("TRITON_INTERPRET") == "1", config)
    out = torch.empty(k, heads * dim, dtype=q.dtype, device=q.device)
    scratch = finished = out  # one split writes the output itself
    if count > 1:
        scratch = torch.empty(floats, dtype=torch.float32, device=q.device)
        finished = scratch if second else kernels_counters(q.device, counters)  # kept, no fill a call
    q, keys, values, mask = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, keys, values, mask))
    seen = mask.view(torch.int8)
    _attend[grid](q, keys, values, seen, out, scratch, finished, k, columns, count, dim ** -0.5 * LOG2E,
                  seen if visible is None else visible, *q.stride()[:2], *keys.stride()[:2], *values.stride()[:2],
                  seen.stride(0), VISIBLE=visible is not None, **constants)
    if second:
        _combine[second[0]](scratch, out, k, heads, count, **second[1])
    return out
