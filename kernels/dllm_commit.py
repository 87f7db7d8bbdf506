"""Which masked rows of a diffusion LM's window to commit: each row's argmax and its probability, then the rule.

"Fast-dLLM: Training-free Acceleration of Diffusion LLM by Enabling KV Cache and Parallel Decoding" (Wu et al.,
2025) commits every masked position whose confidence (the argmax token's softmax probability) is at least a
threshold, and always the surest one; LLaDA's low-confidence remasking ("Large Language Diffusion Models", Nie et
al., 2025) commits the k surest of a block. One rule covers both: in each block of `block_size` rows (0: the whole
window), commit the k surest masked rows and every masked row with confidence >= threshold (k=1 and a threshold:
Fast-dLLM, lab.dllm.rules.above_threshold; threshold inf: the k surest, rules.rank(...)[:k]). Ties in confidence
rank the left-most first, as rules.rank.

One program per row finds the argmax (the first of ties, as torch) and 1 / sum(exp(x - max)), the argmax's
probability, in float32 (the lab's rules use float64: the two differ by float32 rounding). The last program to
finish (an acq_rel counter, the split-K semaphore pattern) ranks the window's rows and writes the commit set.
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
    def _commit(logits, masked, tokens, confidence, commit, finished, rows, vocab: tl.constexpr, threshold, k,
                block_size, WINDOW: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        best_value = -float("inf")
        best_token = 0
        for start in range(0, vocab, BLOCK):
            v = start + tl.arange(0, BLOCK)
            x = tl.load(logits + row * vocab + v, mask=v < vocab, other=-float("inf")).to(tl.float32)
            value = tl.max(x, 0)
            token = start + tl.argmax(x, 0)
            better = value > best_value
            best_token = tl.where(better, token, best_token)
            best_value = tl.where(better, value, best_value)
        total = tl.zeros((BLOCK,), tl.float32)
        for start in range(0, vocab, BLOCK):
            v = start + tl.arange(0, BLOCK)
            x = tl.load(logits + row * vocab + v, mask=v < vocab, other=-float("inf")).to(tl.float32)
            total += tl.exp(x - best_value)
        tl.store(tokens + row, best_token)
        tl.store(confidence + row, 1.0 / tl.sum(total, 0))
        if tl.atomic_add(finished, 1, sem="acq_rel") == rows - 1:  # the last row: every confidence is written
            i = tl.arange(0, WINDOW)
            inside = i < rows
            conf = tl.load(confidence + i, mask=inside, other=0.0, volatile=True)
            live = tl.load(masked + i, mask=inside, other=0) != 0
            same_block = (i[:, None] // block_size) == (i[None, :] // block_size)
            beats = live[None, :] & same_block & ((conf[None, :] > conf[:, None]) |
                                                  ((conf[None, :] == conf[:, None]) & (i[None, :] < i[:, None])))
            rank = tl.sum(beats.to(tl.int32), 1)
            chosen = live & ((rank < k) | (conf >= threshold))
            tl.store(commit + i, chosen.to(tl.int8), mask=inside)


def commit_rows(logits: torch.Tensor, masked: torch.Tensor, threshold: float = math.inf, k: int = 1,
                block_size: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`commit_rows_reference`'s contract; the Triton kernel on CUDA, else the reference."""
    if k < 0 or block_size < 0:
        raise ValueError(f"k and block_size must be >= 0 (block_size 0: the whole window), got {k}, {block_size}")
    rows, vocab = logits.shape
    if not triton_ready(logits, masked) or rows == 0:
        return commit_rows_reference(logits, masked, threshold, k, block_size)
    tokens = torch.empty(rows, dtype=torch.long, device=logits.device)
    confidence = torch.empty(rows, dtype=torch.float32, device=logits.device)
    commit = torch.empty(rows, dtype=torch.int8, device=logits.device)
    finished = torch.zeros(1, dtype=torch.int32, device=logits.device)
    _commit[(rows,)](logits.contiguous(), masked.to(torch.int8), tokens, confidence, commit, finished, rows, vocab,
                     float(threshold), int(k), int(block_size or rows), WINDOW=triton.next_power_of_2(rows),
                     BLOCK=1024)
    return tokens, confidence, commit.view(torch.bool)
