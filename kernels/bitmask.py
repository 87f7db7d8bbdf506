"""Apply a grammar's token bitmask to logits: disallowed tokens get -inf, in place.

The layout is llguidance's (and XGrammar's): int32 words [B, ceil(V / 32)], bit j of word w allows token 32 w + j.
One program per (row, block of tokens) reads the logits once and writes them once: a bandwidth-bound kernel.
"""
from __future__ import annotations

import torch

from . import triton_ready

try:
    import triton
    import triton.language as tl
except ImportError:  # the reference serves
    triton = None


def apply_token_bitmask_reference(logits: torch.Tensor, bitmask: torch.Tensor) -> torch.Tensor:
    """logits [B, V] (float), bitmask int32 [B, ceil(V/32)]: set disallowed logits to -inf in place."""
    vocab = logits.shape[-1]
    bits = (bitmask[..., :, None] >> torch.arange(32, device=bitmask.device)) & 1  # [B, W, 32]
    allowed = bits.reshape(*bitmask.shape[:-1], -1)[..., :vocab].bool()
    return logits.masked_fill_(~allowed, float("-inf"))


if triton is not None:
    @triton.jit
    def _apply(logits, bitmask, vocab, words, BLOCK: tl.constexpr):
        row, block = tl.program_id(0), tl.program_id(1)
        token = block * BLOCK + tl.arange(0, BLOCK)
        inside = token < vocab
        word = tl.load(bitmask + row * words + token // 32, mask=inside, other=0)
        allowed = (word >> (token % 32)) & 1
        tl.store(logits + row * vocab + token, float("-inf"), mask=inside & (allowed == 0))


def apply_token_bitmask(logits: torch.Tensor, bitmask: torch.Tensor) -> torch.Tensor:
    """In place on logits [B, V] (or [V]); the Triton kernel on CUDA, the reference elsewhere."""
    if logits.dim() == 1:
        return apply_token_bitmask(logits[None], bitmask.reshape(1, -1))[0]
    if not triton_ready(logits, bitmask) or not logits.is_contiguous():
        return apply_token_bitmask_reference(logits, bitmask)
    rows, vocab = logits.shape
    block = 1024
    _apply[(rows, triton.cdiv(vocab, block))](logits, bitmask.contiguous(), vocab, bitmask.shape[-1], BLOCK=block)
    return logits
