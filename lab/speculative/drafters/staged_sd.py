"""Staged speculative decoding: a draft tree grown where the draft is unsure, the draft sped up by its own draft.

Paper: "Accelerating LLM Inference with Staged Speculative Decoding" (Spector & Re, 2023). Two ideas on top of
speculative decoding with a draft model:

(a) Tree-structured batches. The speculative batch is a tree that spends its nodes where they are likely to be
accepted: grown best-first by the product of the draft's probabilities along each path within a node budget
(lab/speculative/best_first.py), so a confident draft yields a deep chain and an unsure one branches, at any
depth. At T = 0 the children are the draft's top tokens; at T > 0 they are drawn without replacement, each
carrying its conditional q, as the multi-round verifier expects.

(b) Staged drafting. The draft is itself decoded speculatively by a smaller draft, a Katz back-off n-gram model
(lab/speculative/ngram.py). Whenever the draft runs a level of the tree, the n-gram model's guess of the next
few tokens below the level's most valuable node (`chains` of them) goes through the same forward, hanging under
it as a chain. A guessed node is used only when
best-first growth chooses that very token as a child (the draft's argmax at T = 0, a draw from its q at T > 0);
its logits are then already known, so its children are chosen without another draft forward. A guess therefore
changes how many forwards the draft spends, never what the tree holds: at T = 0 the tree is exactly the one
best-first growth builds alone; at T > 0 drawing from q and keeping the guess when the draw equals it is the
speculative sampling of a point-mass guess (keep g with probability q(g), else draw from q without g), so each
node is still an exact draw from the q it carries. Guesses the tree does not use leave with the draft's cache.

The n-gram model counts a corpus, by default lab/data/sam_corpus.json (the default model's own answers to
ShareGPT prompts outside the benchmark, lab/speculative/corpus.py), tokenised with the running model's
tokenizer (once per tokenizer); a model without a tokenizer (the tiny test models) has no corpus and counts
only the context. The context's n-grams are added as decoding goes, before each proposal.
"""
from __future__ import annotations

import threading
import weakref
from types import MappingProxyType

from ...backends import Backend
from ...decoding import Decoding
from ...registry import method
from ...tree import Tree
from ..best_first import BestFirstDrafter
from ..corpus import documents
from ..loop import speculate
from ..ngram import KatzModel, Rows, count

_ROWS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # tokenizer -> {(corpus, order): counts}
_LOCK = threading.Lock()


def corpus_rows(spec: str, tokenizer, order: int) -> Rows:
    """The n-gram counts of a corpus, counted once per tokenizer; {} without a corpus or a tokenizer."""
    docs = documents(spec, tokenizer, "staged-sd")
    if not docs:
        return {}
    with _LOCK:
        known = _ROWS.setdefault(tokenizer, {})
        if (spec, order) not in known:
            known[(spec, order)] = count(docs, order)
        return known[(spec, order)]


class StagedDrafter(BestFirstDrafter):
    """Best-first draft trees; every draft forward also runs the n-gram model's guessed chain under each node.

    After each `propose`, `info` says how many draft rows were guesses and how many of those the tree used.
    """

    def __init__(self, runner: Backend, ngram: KatzModel, nodes: int = 24, max_depth: int = 8, guess: int = 4,
                 chains: int = 1):
        super().__init__(runner, nodes, max_depth)
        self.ngram, self.guess, self.chains = ngram, guess, chains
        self.read = 0  # context tokens counted into the n-gram model
        self._guesses: dict[tuple[int, int], int] = {}  # (parent, token) -> a guessed node the draft has run
        self._guessed = self._used = 0

    def propose(self, dec: Decoding, root: int) -> Tree:
        context = dec.context
        self.ngram.read(context, min(self.read, len(context)))
        self.read = len(context)
        self._guesses, self._guessed, self._used = {}, 0, 0
        tree = super().propose(dec, root)
        self.info = MappingProxyType({"draft_rows": self.draft_rows, "guessed_rows": self._guessed,
                                      "guesses_used": self._used})
        return tree

    def _place(self, token: int, parent: int, prob: float, q) -> int:
        node = self._guesses.pop((parent, token), None)
        if node is None:
            return super()._place(token, parent, prob, q)
        tree = self._grower.tree
        tree.draft_probs[node], tree.q[node] = prob, q  # what best-first growth would have put on a new node
        self._used += 1
        return node

    def _run(self, nodes: list[int]) -> None:
        """One draft forward over `nodes` and, under the `chains` most valuable of them (the first is the main chain's
        tip, where best-first growth goes on longest), the n-gram model's guess of what follows."""
        tree, vocab = self._grower.tree, self._grower.root_logits.shape[-1]
        guessed: list[int] = []
        for node in sorted(nodes, key=lambda n: -self._value[n])[:self.chains]:
            room = self._limit - self._depth[node] - 1  # a guess is worth running only if it may get children
            path = [tree.tokens[i] for i in tree.path(node)]
            parent = node
            for token in self.ngram.guess(self._dec.context + path, min(self.guess, room)):
                if token >= vocab:  # a corpus token the draft cannot take
                    break
                child = self._grower.add(token, parent)
                self._guesses[(parent, token)] = parent = child
                guessed.append(child)
        self._guessed += len(guessed)
        super()._run(nodes + guessed)


@method("staged-sd", family="speculative", lossless=True, training_free=True,
        paper="Accelerating LLM Inference with Staged Speculative Decoding",
        departures="the n-gram model discounts every count by one absolute D, not by Katz's Good-Turing discounts, "
                   "and counts a small corpus (about 1,200 answers of the default model; only the context on a "
                   "model without a tokenizer) plus the context as it grows; the tree is grown best-first by the "
                   "draft's path probability within a node budget, one draft forward per level (as DySpec), not by "
                   "the paper's own expansion heuristic; guesses (up to `guess` tokens) run below the `chains` most "
                   "valuable nodes of each draft forward (1 by default: the main chain); the default draft is the "
                   "lab's trained FastDraft on the default model (four layers of its shape, not a separate small "
                   "model) and the target's first half of layers, untrained, on other models")
def staged_sd(dec: Decoding, *, nodes: int = 24, max_depth: int = 8, guess: int = 4, chains: int = 1, order: int = 3,
              discount: float = 0.5, corpus: str = "default", draft: str = "default"):
    """Best-first draft tree; the draft's expansion sped up by Katz back-off n-gram guesses it verifies."""
    ngram = KatzModel(order, discount, corpus_rows(corpus, dec.tokenizer, order))
    yield from speculate(dec, StagedDrafter(dec.lab.draft(draft), ngram, nodes, max_depth, guess, chains))
