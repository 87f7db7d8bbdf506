"""SAM Decoding: draft what followed the longest earlier match of the context, found by suffix automata.

Paper: "SAM Decoding: Speculative Decoding via Suffix Automaton" (Hu et al., 2024). Prompt lookup scans
for a few fixed n-gram lengths; SAM Decoding keeps a suffix automaton of the text instead, so the
*longest* suffix of the context that occurred before is known in O(1) per committed token, however long
it is, and the draft is the chain of tokens that followed that occurrence. As in the paper there are two
automata: a dynamic one over the prompt and the generated text (extended as tokens are committed), and an
optional static one over a corpus (`corpus`: a text file), used when its match is longer by more than
`static_bias` tokens. With `recycle=True`, short matches (under `threshold` tokens) hand over to Token
Recycling's draft tree, the combination the paper reports as its fastest model-free setting.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ...decoding import Decoding
from ...errors import LabError
from ...registry import method
from ...tree import Tree
from ..drafter import Drafter
from ..loop import speculate
from ..suffix_automaton import Match, SuffixAutomaton
from ..verify import Verdict
from .token_recycling import TokenRecycler

_CORPORA: dict[tuple[str, int], SuffixAutomaton] = {}  # built once per (file, tokenizer)


def corpus_automaton(path: str, tokenizer) -> SuffixAutomaton:
    """The static automaton of a text file's tokens."""
    if tokenizer is None:
        raise LabError("sam: a corpus needs a tokenizer: load a model with one, or leave corpus empty")
    file = Path(path).expanduser()
    if not file.is_file():
        raise LabError(f"sam: corpus file {path!r} not found: give the path of a text file")
    key = (str(file.resolve()), id(tokenizer))
    if key not in _CORPORA:
        ids = tokenizer(file.read_text(), add_special_tokens=False)["input_ids"]
        _CORPORA[key] = SuffixAutomaton(ids)
    return _CORPORA[key]


class SuffixMatchDrafter(Drafter):
    def __init__(self, length: int = 8, static: SuffixAutomaton | None = None, static_bias: int = 4,
                 recycler: TokenRecycler | None = None, threshold: int = 4):
        self.length, self.static, self.static_bias = length, static, static_bias
        self.recycler, self.threshold = recycler, threshold
        self.dynamic = SuffixAutomaton()
        self.match = Match()  # the context's longest suffix in the static automaton
        self.matched = 0  # length of the match behind the last draft (for views and tests)
        self.learns_from_plain_steps = recycler is not None  # the recycled rows learn from every forward
        self.info: dict = {}

    def catch_up(self, context: list[int]) -> None:
        """Feed the newly committed tokens to both automata."""
        new = context[len(self.dynamic.tokens):]
        self.dynamic.extend(new)
        if self.static is not None:
            for token in new:
                self.match = self.static.follow(self.match, token)

    def propose(self, dec: Decoding, root: int) -> Tree:
        self.catch_up(dec.context)
        n = min(self.length, dec.remaining)
        if n <= 0:
            return Tree()
        length, end = self.dynamic.repeat()
        draft = self.dynamic.continuation(end, n)
        if self.static is not None and self.match.length - self.static_bias > length:
            length = self.match.length
            draft = self.static.continuation(self.static.end[self.match.state], n)
        self.matched = length
        self.info = {"match": length}
        if self.recycler is not None:
            self.recycler.root = root
            if length < self.threshold:
                return self.recycler.propose(dec, root)
        return Tree.from_chain(draft)

    def accepted(self, dec: Decoding, tree: Tree, verdict: Verdict, logits: torch.Tensor, taps=None) -> None:
        if self.recycler is not None:  # every forward refreshes the recycled candidates
            self.recycler.accepted(dec, tree, verdict, logits, taps)


@method("sam", family="speculative", lossless=True, training_free=True,
        paper="SAM Decoding: Speculative Decoding via Suffix Automaton",
        departures="the static automaton is used only when a corpus file is given, and the Token Recycling "
                   "fallback only with recycle=True (the paper's configuration is not the default)")
def sam(dec, *, length: int = 8, corpus: str = "", static_bias: int = 4, recycle: bool = False,
        threshold: int = 4):
    """SAM decoding: a suffix automaton finds the longest earlier match of the context; copy what followed."""
    static = corpus_automaton(corpus, dec.tokenizer) if corpus else None
    recycler = TokenRecycler(dec.target.vocab_size) if recycle else None
    yield from speculate(dec, SuffixMatchDrafter(length, static, static_bias, recycler, threshold))
