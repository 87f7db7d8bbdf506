"""A draft's LM head over the target's most frequent tokens ("VOCABTRIM: Vocabulary Pruning for Efficient
Speculative Decoding in LLMs", Goel et al., 2025).

A small draft spends a large share of its step in the LM head: SmolLM2-135M's head is 28M of its parameters, and
the shipped four-layer draft's step is the four layers plus that head. VocabTrim keeps only the rows of the tokens
the target produces most often (counted in the target's own outputs) and gives every other token the logit -inf:
the draft's q is 0 there, so verification stays exact, and such tokens are never drafted (the price: acceptance at
the positions where the target writes one of them).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn import functional as F


def frequent_tokens(sequences: Iterable[list[int]], keep: int, always: Iterable[int] = ()) -> torch.Tensor:
    """Sorted token ids: the `keep` most frequent in `sequences` (ties: the smaller id first), plus `always`."""
    if keep < 1:
        raise ValueError("keep at least one token")
    counts = Counter(t for ids in sequences for t in ids)
    top = sorted(counts, key=lambda t: (-counts[t], t))[:keep]
    return torch.tensor(sorted(set(top) | set(always)), dtype=torch.long)


def coverage(sequences: Iterable[list[int]], vocab: torch.Tensor) -> float:
    """The share of the tokens of `sequences` that are in `vocab`."""
    kept = set(vocab.tolist())
    total = hits = 0
    for ids in sequences:
        total += len(ids)
        hits += sum(t in kept for t in ids)
    return hits / max(total, 1)


class TrimmedLMHead(nn.Module):
    """An LM head with the rows of `vocab` (sorted token ids) of `weight` [V, hidden]; its output covers the whole
    vocabulary [..., V], -inf outside `vocab`. The fast backend reads `weight` (the kept rows) and `vocab`."""

    def __init__(self, weight: torch.Tensor, vocab: torch.Tensor):
        super().__init__()
        vocab = torch.as_tensor(vocab, dtype=torch.long, device=weight.device)
        if vocab.numel() == 0 or bool((vocab[1:] <= vocab[:-1]).any()) or int(vocab[0]) < 0 or \
                int(vocab[-1]) >= weight.shape[0]:
            raise ValueError(f"vocab must be sorted distinct token ids below {weight.shape[0]}")
        self.vocab_size = weight.shape[0]
        self.register_buffer("weight", weight.detach()[vocab].clone())
        self.register_buffer("vocab", vocab)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        rows = F.linear(hidden, self.weight)
        out = rows.new_full((*rows.shape[:-1], self.vocab_size), float("-inf"))
        out[..., self.vocab] = rows
        return out
