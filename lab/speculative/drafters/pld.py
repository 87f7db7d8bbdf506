"""Prompt lookup decoding: draft by copying what followed the last n-gram's earlier occurrence.

Paper: "Prompt Lookup Decoding" (Saxena, 2023), the n-gram variant of "Inference with Reference:
Lossless Acceleration of Large Language Models" (Yang et al., 2023). Free drafts when the output
repeats the input (summaries, code edits, retrieval answers); nothing to propose otherwise.
"""
from __future__ import annotations

from ...decoding import Decoding
from ...registry import batched, method
from ...tree import Tree
from ..drafter import Drafter
from ..loop import speculate, speculate_rows


def lookup(context: list[int], max_ngram: int, min_ngram: int, length: int) -> list[int]:
    """Tokens that followed the most recent earlier occurrence of the longest matching suffix n-gram."""
    for n in range(max_ngram, min_ngram - 1, -1):
        if len(context) <= n:
            continue
        tail = context[-n:]
        for start in range(len(context) - n - 1, -1, -1):
            if context[start:start + n] == tail:
                return context[start + n:start + n + length]
    return []


class PromptLookup(Drafter):
    """Drafts what followed the context's last n-gram before; no per-row state, so one drafter serves a batch."""

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1, length: int = 10):
        self.max_ngram, self.min_ngram, self.length = max_ngram, min_ngram, length

    def propose(self, dec: Decoding, root: int) -> Tree:
        n = min(self.length, dec.remaining)
        if n <= 0:
            return Tree()
        return Tree.from_chain(lookup(dec.context, self.max_ngram, self.min_ngram, n))


@method("pld", family="speculative", lossless=True, training_free=True, paper="Prompt Lookup Decoding",
        departures="none")
def pld(dec, *, max_ngram: int = 3, min_ngram: int = 1, length: int = 10):
    """Prompt lookup decoding: n-gram match in the context, copy what followed."""
    yield from speculate(dec, PromptLookup(max_ngram, min_ngram, length))


@batched("pld")
def pld_batch(rows, *, max_ngram: int = 3, min_ngram: int = 1, length: int = 10):
    """Batched prompt lookup decoding: every row looks up its own context."""
    yield from speculate_rows(rows, PromptLookup(max_ngram, min_ngram, length))
