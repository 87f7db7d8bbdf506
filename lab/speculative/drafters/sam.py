"""SAM Decoding: draft what followed the longest earlier match of the context, found by suffix automata.

Paper: "SAM Decoding: Speculative Decoding via Suffix Automaton" (Hu et al., 2024). Prompt lookup scans
for a few fixed n-gram lengths; SAM Decoding keeps a suffix automaton of the text instead, so the
*longest* suffix of the context that occurred before is known in O(1) per committed token, however long
it is, and the draft is the chain of tokens that followed that occurrence. As in the paper there are two
automata: a dynamic one over the prompt and the generated text (extended as tokens are committed), and a
static one over a corpus, matched against the context token by token; the static match wins when it is
longer by more than `static_bias` tokens (and counts `static_bias` less). When the winning match is shorter
than `threshold` tokens, an auxiliary drafter takes over: Token Recycling's tree (its matrix kept per model,
lab/speculative/drafters/token_recycling.py). That is the paper's configuration, and the default here: the corpus
is the default model's own answers to ShareGPT prompts outside the benchmark's held-out set
(lab/speculative/corpus.py, made by `python -m lab train responses --corpus`), documents joined by EOS.
"""
from __future__ import annotations

import threading
import weakref

import torch

from ...decoding import Decoding
from ...registry import method
from ...tree import Tree
from ..corpus import documents
from ..drafter import Drafter
from ..loop import speculate
from ..suffix_automaton import Match, SuffixAutomaton
from ..verify import Verdict
from .token_recycling import TokenRecycler, recycler_for

_AUTOMATA: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # tokenizer -> {corpus: SuffixAutomaton}
_LOCK = threading.Lock()


def corpus_automaton(spec: str, tokenizer) -> SuffixAutomaton | None:
    """The static automaton of a corpus (built once per tokenizer), or None when there is no corpus."""
    docs = documents(spec, tokenizer, "sam")
    if not docs:
        return None
    with _LOCK:
        built = _AUTOMATA.setdefault(tokenizer, {})
        if spec not in built:
            separator = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else -1
            built[spec] = SuffixAutomaton([t for doc in docs for t in (*doc, separator)])
        return built[spec]


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
        draft, source = self.dynamic.continuation(end, n), "context"
        if self.static is not None and self.match.length - self.static_bias > length:
            length = self.match.length - self.static_bias
            draft, source = self.static.continuation(self.static.end[self.match.state], n), "corpus"
        self.matched = length
        if self.recycler is not None:
            self.recycler.root = root
            if length < self.threshold:
                self.info = {"match": length, "source": "recycled"}
                return self.recycler.propose(dec, root)
        self.info = {"match": length, "source": source}
        return Tree.from_chain(draft)

    def accepted(self, dec: Decoding, tree: Tree, verdict: Verdict, logits: torch.Tensor, taps=None) -> None:
        if self.recycler is not None:  # every forward refreshes the recycled candidates
            self.recycler.accepted(dec, tree, verdict, logits, taps)


@method("sam", family="speculative", lossless=True, training_free=True,
        paper="SAM Decoding: Speculative Decoding via Suffix Automaton",
        departures="the static automaton's corpus is small (about 1,200 answers of the default model, not the "
                   "paper's whole ShareGPT); without a tokenizer there is no corpus")
def sam(dec, *, length: int = 8, corpus: str = "default", static_bias: int = 4, recycle: bool = True,
        threshold: int = 4):
    """SAM decoding: suffix automata over the context and a corpus find the longest match; Token Recycling else."""
    static = corpus_automaton(corpus, dec.tokenizer)
    auxiliary = recycler_for(dec) if recycle else None
    yield from speculate(dec, SuffixMatchDrafter(length, static, static_bias, auxiliary, threshold))
