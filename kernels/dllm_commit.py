"""Which masked rows of a diffusion LM's window to commit: each row's argmax and its probability, then the rule.

"Fast-dLLM: Training-free Acceleration of Diffusion LLM by Enabling KV Cache and Parallel Decoding" (Wu et al.,
2025) commits every masked position whose confidence (the argmax token's softmax probability) is at least a
threshold, and always the surest one; LLaDA's low-confidence remasking ("Large Language Diffusion Models", Nie et
al., 2025) commits the k surest of a block. One rule covers both: in each block of `block_size` rows (0: the whole
window), commit the k surest masked rows and every masked row with confidence >= threshold (k=1 and a threshold:
Fast-dLLM, lab.dllm.rules.above_threshold; threshold inf: the k surest, rules.rank(...)[:k]). Ties in confidence
rank the left-most first, as rules.rank.

Each row is split over programs of up to 4096 logits (`vocab_blocks`: 12 a row at V = 49152, 384 programs for a
window of 32), each reading its block once: its max, first argmax and sum(exp(x - max)) in float32. The last program
to finish (an acq_rel counter, the split-K semaphore pattern) merges each row's blocks (the first block holding the
max gives the first argmax, as torch; sum = sum_b sum_b exp(max_b - max)), takes 1 / sum as the argmax's probability
(the lab's rules use float64: the two differ by float32 rounding), ranks the window's rows and writes the commit set.
One launch, the logits read once: the last program sets the counter back to 0 (kernels.counters keeps one per
stream, so no fill is launched per call), and the outputs and partials are views of one allocation.
"""
from __future__ import annotations

import functools
import math

import torch

from . import counters, triton_ready, vocab_blocks

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None


def commit_rows_reference(logits: torch.Tensor, masked: torch.Tensor, threshold: float = math.inf, k: int = 1,
                          block_size: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """logits [w, V], masked [w] bool. Returns (tokens [w] long: each row's argmax, confidence [w] float32: its
    softmax probability, commit [w] bool: the rule above)."""
    rows = logits.shape[0]
    tokens = logits.argmax(-1)
    confidence = torch.softmax(logits.float(), -1).gather(-1, tokens[:, None])[:, 0]
    conf, live = confidence.tolist(), masked.tolist()
    commit = [False] * rows
    size = block_size or rows
    for start in range(0, rows, size):
        block = [r for r in range(start, min(start + size, rows)) if live[r]]
        for r in sorted(block, key=lambda j: -conf[j])[:k] + [r for r in block if conf[r] >= threshold]:
            commit[r] = True
    return tokens, confidence, torch.tensor(commit, dtype=torch.bool, device=logits.device)


if triton is not None:
    @triton.jit
    def _commit(logits, masked, out, finished, vocab, threshold, k, block_size, WINDOW: tl.constexpr,
                BLOCKS: tl.constexpr, BLOCK: tl.constexpr):
        row, part = tl.program_id(0), tl.program_id(1)
        rows, blocks = tl.num_programs(0), tl.num_programs(1)
        n = rows * blocks
        # out: tokens [rows] int64, then in 4-byte words confidence [rows], the partials' max [n], sum [n] and
        # argmax [n] (int32), then commit [rows] bytes
        confidence = (out + rows).to(tl.pointer_type(tl.float32))
        partial = confidence + rows
        partial_token = (partial + 2 * n).to(tl.pointer_type(tl.int32))
        commit = (partial_token + n).to(tl.pointer_type(tl.int8))
        v = part * BLOCK + tl.arange(0, BLOCK)
        x = tl.load(logits + row * vocab + v, mask=v < vocab, other=-float("inf")).to(tl.float32)
        top = tl.max(x, 0)
        base = tl.where(top == -float("inf"), 0.0, top)  # a block of -inf sums to 0, not NaN
        slot = row * blocks + part
        tl.store(partial + slot, top)
        tl.store(partial + n + slot, tl.sum(tl.exp(x - base), 0))
        tl.store(partial_token + slot, part * BLOCK + tl.argmax(x, 0))
        tl.debug_barrier()  # every thread's stores before the release
        if tl.atomic_add(finished, 1, sem="acq_rel") == n - 1:  # the last program: every block is written
            tl.store(finished, 0)  # no other program touches it again: zero for the next launch on this stream
            i = tl.arange(0, WINDOW)
            b = tl.arange(0, BLOCKS)
            inside = i < rows
            ok = inside[:, None] & (b[None, :] < blocks)
            cells = i[:, None] * blocks + b[None, :]
            tops = tl.load(partial + cells, mask=ok, other=-float("inf"), volatile=True)
            best = tl.max(tops, 1)
            token = tl.load(partial_token + i * blocks + tl.argmax(tops, 1), mask=inside, other=0, volatile=True)
            seen = best > -float("inf")
            sums = tl.load(partial + n + cells, mask=ok, other=0.0, volatile=True)
            total = tl.sum(sums * tl.exp(tops - tl.where(seen, best, 0.0)[:, None]), 1)
            conf = tl.where(seen, 1.0 / tl.where(seen, total, 1.0), float("nan"))  # a row of -inf: NaN, as softmax
            live = tl.load(masked + i, mask=inside, other=0) != 0
            same_block = (i[:, None] // block_size) == (i[None, :] // block_size)
            beats = live[None, :] & same_block & ((conf[None, :] > conf[:, None]) |
                                                  ((conf[None, :] == conf[:, None]) & (i[None, :] < i[:, None])))
            rank = tl.sum(beats.to(tl.int32), 1)
            chosen = live & ((rank < k) | (conf >= threshold))
            tl.store(out + i, token.to(tl.int64), mask=inside)
            tl.store(confidence + i, conf, mask=inside)
            tl.store(commit + i, chosen.to(tl.int8), mask=inside)


@functools.lru_cache(maxsize=256)
def _plan(rows: int, vocab: int) -> tuple[int, int, int, int, int, int]:
    """(block, blocks, warps, WINDOW, BLOCKS, int64 words of `out`) for a window of rows x vocab."""
    block, blocks, warps = vocab_blocks(vocab)
    words = -(-(2 * rows + rows + 3 * rows * blocks + -(-rows // 4)) // 2)  # (4-byte words, commit's bytes)
    return block, blocks, warps, triton.next_power_of_2(rows), triton.next_power_of_2(blocks), words


def commit_rows(logits: torch.Tensor, masked: torch.Tensor, threshold: float = math.inf, k: int = 1,
                block_size: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`commit_rows_reference`'s contract; the Triton kernel on CUDA, else the reference."""
    if k < 0 or block_size < 0:
        raise ValueError(f"k and block_size must be >= 0 (block_size 0: the whole window), got {k}, {block_size}")
    rows, vocab = logits.shape
    if not triton_ready(logits, masked) or rows == 0:
        return commit_rows_reference(logits, masked, threshold, k, block_size)
    block, blocks, warps, window, width, words = _plan(rows, vocab)
    out = torch.empty(words, dtype=torch.long, device=logits.device)  # the outputs and the partials: one allocation
    if masked.dtype != torch.bool:
        masked = masked != 0
    _commit[(rows, blocks)](logits.contiguous(), masked.contiguous(), out, counters(logits.device, 1), vocab,
                            float(threshold), int(k), int(block_size or rows), WINDOW=window, BLOCKS=width, BLOCK=block,
                            num_warps=warps)
    at = 4 * (3 * rows + 3 * rows * blocks)  # commit's first byte
    return out[:rows], out.view(torch.float32)[2 * rows:3 * rows], out.view(torch.bool)[at:at + rows]
