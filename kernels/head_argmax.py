"""A greedy LM head: each row's argmax token and its softmax probability, without writing the logits.

A greedy decode step needs only the argmax, and a draft chain its probability too ("Fast Inference from Transformers
via Speculative Decoding", Leviathan et al., 2023: the draft's q of its token). Through the fast backend's separate
kernels that is four launches after the last layer: the residual add with the final RMSNorm, the head's product, a
float cast, the argmax. Here it is one: every program computes logits y = W RMSNorm(x + delta) (`gemv`'s
"norm" prologue, `gemv.load_input`), each rounded to the model's dtype as the head's product rounds its output, and
keeps a running max, first argmax and sum(exp(y - max)) for each row slot of its blocks (every PROGRAMS-th block of
BLOCK_N rows: the input is loaded and normed once a program, a few programs an SM; the slots are merged after the
loop, so that no reduction across rows waits inside it); the last program to finish a row (an acq_rel
counter, the split-K semaphore pattern of `dllm_commit`) merges the programs': the smallest row holding the max is
the first argmax, as torch's argmax, and 1 / sum_p sum_p exp(max_p - max) is its probability. With `vocab` (a
trimmed head's token ids, lab.vocab_trim) the token is vocab[column].
"""
from __future__ import annotations

import functools

import torch

from . import counters, triton_ready
from .gemv import fits, gemv_reference

try:
    import triton
    import triton.language as tl

    from .gemv import load_input
    from .rounding import to_dtype
except ImportError:
    triton = None

MAX_ROWS = 8  # more input rows read the head once each (from the L2): logits and an argmax are cheaper then


def head_argmax_reference(x, delta, norm_weight, eps, weight, vocab=None):
    """(tokens [M] long, probabilities [M] float32) of the head's logits for states x [M, K] (+ delta), after the
    RMSNorm with `norm_weight`: logits in the model's dtype, as the head writes them, then float32."""
    logits = gemv_reference(x, weight, None, "norm", delta, norm_weight, eps)[0].float()
    top, column = logits.max(-1)
    belief = (top - logits.logsumexp(-1)).exp()
    return (column if vocab is None else vocab[column]), belief


if triton is not None:
    @triton.jit
    def _head_argmax(x, delta, norm_weight, weight, vocab, out, finished, n, eps, PROGRAMS: tl.constexpr,
                     ITERS: tl.constexpr, K: tl.constexpr, HAS_DELTA: tl.constexpr, HAS_VOCAB: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, MERGE: tl.constexpr):
        pid, m = tl.program_id(0), tl.program_id(1)  # a program (blocks pid, pid + PROGRAMS, ...), an input row
        rows = tl.num_programs(1)
        # out: tokens [rows] int64, then in 4-byte words the probabilities [rows], and the partials: max, sum
        # (float32) and argmax (int32), [rows, PROGRAMS] each
        belief = (out + rows).to(tl.pointer_type(tl.float32))
        part_max = belief + rows + m * PROGRAMS
        part_sum = part_max + rows * PROGRAMS
        part_arg = (part_sum + rows * PROGRAMS).to(tl.pointer_type(tl.int32))
        dtype = norm_weight.dtype.element_ty
        v = load_input(x, delta, x, norm_weight, x, eps, 1, m, dtype, K, 1, HAS_DELTA, False, BLOCK_K)[None, :]
        k = tl.arange(0, BLOCK_K)
        j = tl.arange(0, BLOCK_N)
        # per row slot j of the blocks (no reduction across rows inside the loop): the running max, its first row
        # (a later block wins only with a larger logit) and the sum of exp(logit - max)
        best = tl.full([BLOCK_N], -float("inf"), tl.float32)
        total = tl.zeros([BLOCK_N], tl.float32)
        index = tl.zeros([BLOCK_N], tl.int32)
        for i in range(ITERS):  # this program's blocks in order
            r = (i * PROGRAMS + pid) * BLOCK_N + j
            live = r < n
            w = tl.load(weight + r[:, None] * K + k[None, :], mask=live[:, None] & (k < K)[None, :], other=0.0)
            logit = to_dtype(tl.sum(w.to(tl.float32) * v, 1), dtype).to(tl.float32)
            logit = tl.where(live, logit, -float("inf"))
            index = tl.where(logit > best, r, index)
            high = tl.maximum(best, logit)
            seen = high > -float("inf")  # (a slot past the head's end until now: nothing to add)
            total = tl.where(seen, total * tl.exp(best - high) + tl.exp(logit - high), 0.0)
            best = high
        top = tl.max(best, 0)
        tl.store(part_max + pid, top)
        tl.store(part_sum + pid, tl.sum(tl.where(best > -float("inf"), total * tl.exp(best - top), 0.0), 0))
        tl.store(part_arg + pid, tl.min(tl.where(best == top, index, 2147483647), 0))
        tl.debug_barrier()  # every thread's stores before the release
        if tl.atomic_add(finished + m, 1, sem="acq_rel") == PROGRAMS - 1:  # the last program of row m
            tl.store(finished + m, 0)  # zero for the next launch on this stream
            p = tl.arange(0, MERGE)
            ok = p < PROGRAMS
            tops = tl.load(part_max + p, mask=ok, other=-float("inf"), volatile=True)
            sums = tl.load(part_sum + p, mask=ok, other=0.0, volatile=True)
            args = tl.load(part_arg + p, mask=ok, other=2147483647, volatile=True)
            high = tl.max(tops, 0)
            column = tl.min(tl.where(tops == high, args, 2147483647), 0)  # the first row holding the max
            if HAS_VOCAB:
                column = tl.load(vocab + column)
            tl.store(out + m, column.to(tl.int64))
            tl.store(belief + m, 1.0 / tl.sum(sums * tl.exp(tops - high), 0))


@functools.lru_cache(maxsize=64)
def _plan(n: int, k: int, programs: int, block_n: int | None) -> tuple[int, int, int, int, int, int]:
    """(BLOCK_K, BLOCK_N, PROGRAMS, ITERS, MERGE, warps) for a head of n x k over at most `programs` programs: blocks
    of BLOCK_N rows, each program taking every PROGRAMS-th (the x vector loaded and normed once a program)."""
    block_k = triton.next_power_of_2(k)
    block_n = block_n or max(1, 16384 // block_k)
    blocks = triton.cdiv(n, block_n)
    programs = min(programs, blocks, 4096)
    return block_k, block_n, programs, triton.cdiv(blocks, programs), triton.next_power_of_2(programs), 4


def head_argmax(x, delta, norm_weight, eps, weight, vocab=None, block_n: int | None = None,
                programs: int | None = None):
    """`head_argmax_reference`'s contract; the Triton kernel on CUDA for up to MAX_ROWS rows (`block_n` and
    `programs` override the plan, 4 programs an SM of 16 rows a block at K = 576: scripts/sweep_head_argmax.py)."""
    rows = x.shape[0]
    n, k = weight.shape
    if not triton_ready(x) or not fits(k) or rows > MAX_ROWS or rows == 0 or not weight.is_contiguous():
        return head_argmax_reference(x, delta, norm_weight, eps, weight, vocab)
    programs = programs or 4 * (torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 2)
    block_k, block_n, programs, iters, merge, warps = _plan(n, k, programs, block_n)
    out = torch.empty(rows + -(-(rows + 3 * rows * programs) // 2), dtype=torch.long, device=x.device)
    _head_argmax[(programs, rows)](
        x.contiguous(), delta.contiguous() if delta is not None else x, norm_weight, weight,
        vocab if vocab is not None else out, out, counters(x.device, rows), n, eps, PROGRAMS=programs, ITERS=iters,
        K=k, HAS_DELTA=delta is not None, HAS_VOCAB=vocab is not None, BLOCK_N=block_n, BLOCK_K=block_k, MERGE=merge,
        num_warps=warps)
    return out[:rows], out.view(torch.float32)[2 * rows:3 * rows]
