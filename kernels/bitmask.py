"""Apply a grammar's token bitmask to logits: disallowed tokens get -inf, in place.

The layout is llguidance's (and XGrammar's): int32 words [B, ceil(V / 32)], bit j of word w allows token 32 w + j.
One program per (row, 4096 tokens) views its tokens as a [128 words, 32 bits] tile: each word is loaded once and
shifted against arange(32). A word's 32 logits (128 bytes, whole sectors) are read and written back whole (16-byte
vectors, allowed values unchanged) where the word mixes bits; only written (-inf) where it allows nothing, and left
alone where it allows all: a grammar's mask, mostly zero words, costs about half the bytes. Storing only the
disallowed entries of a mixed word would save little (a partly written 32-byte sector is expected to cost the memory
a read anyway, ECC covering whole sectors) and gives up the 16-byte vectors. Bandwidth-bound: up to V * 8 bytes a row
plus the words.
"""
from __future__ import annotations

import torch

from . import triton_ready

try:
    import triton
    import triton.language as tl
except ImportError:  # the reference serves
    triton = None

WORDS = 128  # words a program: 4096 tokens, 32 floats a thread at 4 warps


def apply_token_bitmask_reference(logits: torch.Tensor, bitmask: torch.Tensor) -> torch.Tensor:
    """logits [B, V] (float), bitmask int32 [B, ceil(V/32)]: set disallowed logits to -inf in place."""
    vocab = logits.shape[-1]
    bits = (bitmask[..., :, None] >> torch.arange(32, device=bitmask.device)) & 1  # [B, W, 32]
    allowed = bits.reshape(*bitmask.shape[:-1], -1)[..., :vocab].bool()
    return logits.masked_fill_(~allowed, float("-inf"))


if triton is not None:
    @triton.jit
    def _apply(logits, bitmask, vocab, words, WORDS: tl.constexpr):
        row, block = tl.program_id(0), tl.program_id(1)
        w = block * WORDS + tl.arange(0, WORDS)
        bit = tl.arange(0, 32)
        token = w[:, None] * 32 + bit[None, :]  # [WORDS, 32]: each row of the tile one word's tokens
        inside = token < vocab
        word = tl.load(bitmask + row * words + w, mask=w * 32 < vocab, other=-1)
        allowed = ((word[:, None] >> bit[None, :]) & 1) != 0
        x = tl.load(logits + row * vocab + token, mask=inside & ((word != 0) & (word != -1))[:, None])
        tl.store(logits + row * vocab + token, tl.where(allowed, x, float("-inf")), mask=inside & (word != -1)[:, None])


def apply_token_bitmask(logits: torch.Tensor, bitmask: torch.Tensor) -> torch.Tensor:
    """In place on logits [B, V] (or [V]); the Triton kernel on CUDA, the reference elsewhere."""
    if logits.dim() == 1:
        return apply_token_bitmask(logits[None], bitmask.reshape(1, -1))[0]
    if not triton_ready(logits, bitmask) or not logits.is_contiguous():
        return apply_token_bitmask_reference(logits, bitmask)
    rows, vocab = logits.shape
    _apply[(rows, triton.cdiv(vocab, 32 * WORDS))](logits, bitmask.contiguous(), vocab, bitmask.shape[-1],
                                                   WORDS=WORDS, num_warps=4)
    return logits
