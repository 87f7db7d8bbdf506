"""ADED: drafts from an adaptive tri-gram picture of the target, grown by an explore/exploit search.

Paper: "Adaptive Draft-Verification for Efficient Large Language Model Decoding" (Liu et al., 2024).
The target is approximated by a tri-gram matrix: for a pair of tokens (a, b), weights over the next token.
It starts from a corpus (by default the default model's own answers to ShareGPT prompts outside the benchmark,
lab/speculative/corpus.py) and the prompt, and after every verification absorbs the target's top-k probabilities
at each scored position (older weights decay), so it follows the model as decoding goes on. The draft tree is
grown by a Monte-Carlo-tree-search-like rule: each simulation walks down from the root choosing the child
with the best PUCT score

    value(c) + explore * P(c | a, b) * sqrt(1 + sum of the siblings' n) / (1 + n(c)),

where P is the matrix's probability, n(c) counts the times a, b -> c was verified before plus this
search's visits to c, and value(c) = (accepted + P) / (tried + 1) is how often that continuation was
accepted when verified, shrunk towards P. Often accepted branches are exploited; rarely tried ones get
the bonus, and a branch the search has just visited gives way to its siblings, so the tree spreads.
"""
from __future__ import annotations

import math
import threading
import weakref

import torch

from ...decoding import Decoding
from ...registry import method
from ...tree import Tree
from ..corpus import documents
from ..drafter import Drafter
from ..loop import speculate
from ..verify import Verdict

Rows = dict[tuple[int, ...], dict[int, float]]
_COUNTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # tokenizer -> {corpus: its tri-gram counts}
_LOCK = threading.Lock()


def corpus_counts(spec: str, tokenizer) -> Rows:
    """Tri-gram (and bi-gram backoff) counts of a corpus, counted once per tokenizer; {} without a corpus."""
    docs = documents(spec, tokenizer, "aded")
    if not docs:
        return {}
    with _LOCK:
        known = _COUNTS.setdefault(tokenizer, {})
        if spec not in known:
            counts: Rows = {}
            for doc in docs:
                for a, b, c in zip(doc, doc[1:], doc[2:]):
                    for key in ((a, b), (b,)):
                        row = counts.setdefault(key, {})
                        row[c] = row.get(c, 0.0) + 1.0
            known[spec] = counts
        return known[spec]


class TrigramModel:
    """Decaying weights of the next token after each pair (a, b), with the single token (b,) as backoff. `base`
    (a corpus's counts, shared and never written) is where a row starts the first time it is updated."""

    def __init__(self, decay: float = 0.8, base: Rows | None = None):
        self.decay = decay
        self.base = base or {}
        self.rows: Rows = {}

    def add(self, a: int, b: int, weights: dict[int, float]) -> None:
        for key in ((a, b), (b,)):
            if key not in self.rows:
                self.rows[key] = dict(self.base.get(key, {}))
            row = self.rows[key]
            for token in row:
                row[token] *= self.decay
            for token, w in weights.items():
                row[token] = row.get(token, 0.0) + w

    def read_text(self, tokens: list[int]) -> None:
        """Count the trigrams of committed text (weight 1 each)."""
        for a, b, c in zip(tokens, tokens[1:], tokens[2:]):
            self.add(a, b, {c: 1.0})

    def read_target(self, a: int, b: int, logits: torch.Tensor, k: int) -> None:
        """Absorb the target's top-k probabilities after the pair (a, b)."""
        probs, tokens = logits.float().softmax(-1).topk(min(k, logits.shape[-1]))
        self.add(a, b, dict(zip(tokens.tolist(), probs.tolist())))

    def next(self, a: int, b: int, width: int) -> list[tuple[int, float]]:
        """The `width` likeliest next tokens and their normalised probabilities (pair, else backoff)."""
        row = self.rows.get((a, b)) or self.base.get((a, b)) or self.rows.get((b,)) or self.base.get((b,)) or {}
        total = sum(row.values())
        best = sorted(row.items(), key=lambda kv: -kv[1])[:width]
        return [(t, w / total) for t, w in best if w > 0]


class AdaptiveDrafter(Drafter):
    def __init__(self, nodes: int = 24, width: int = 4, max_depth: int = 8, explore: float = 0.5,
                 k: int = 8, decay: float = 0.8, base: Rows | None = None):
        self.nodes, self.width, self.max_depth, self.explore, self.k = nodes, width, max_depth, explore, k
        self.model = TrigramModel(decay, base)
        self.tried: dict[tuple[int, int, int], int] = {}
        self.won: dict[tuple[int, int, int], int] = {}
        self.read = 0  # context tokens already counted into the model
        self.pairs: list[tuple[int, int]] = []  # (a, b) in front of the root and of each node
        self.learns_from_plain_steps = True  # a draft-less step still teaches the tri-gram model

    def value(self, a: int, b: int, c: int, prior: float) -> float:
        """Acceptance rate of a, b -> c when verified before, shrunk towards the matrix prior."""
        return (self.won.get((a, b, c), 0) + prior) / (self.tried.get((a, b, c), 0) + 1)

    def choose(self, a: int, b: int, options: list[tuple[int, float]], visits) -> int:
        """PUCT: the index of the option with the best value plus exploration bonus. A child's count n is
        how often it was verified before plus how often this search visited it; N sums the siblings' n."""
        counts = [self.tried.get((a, b, c), 0) + visits(c) for c, _ in options]
        root_n = math.sqrt(1 + sum(counts))
        scores = [self.value(a, b, c, p) + self.explore * p * root_n / (1 + n)
                  for (c, p), n in zip(options, counts)]
        return max(range(len(options)), key=scores.__getitem__)

    def propose(self, dec: Decoding, root: int) -> Tree:
        context = dec.context
        self.model.read_text(context[max(0, self.read - 2):])
        self.read = len(context)
        prev = context[-2] if len(context) > 1 else -1
        tree, pairs = Tree(), [(prev, root)]
        children: dict[int, dict[int, int]] = {-1: {}}  # node -> token -> child node
        visits, depth, dead = {-1: 0}, {-1: 0}, set()
        limit = min(self.max_depth, dec.remaining)
        for _ in range(4 * self.nodes):  # simulations; each adds at most one node
            if len(tree) >= self.nodes or -1 in dead or limit <= 0:
                break
            node, path = -1, [-1]
            while True:
                a, b = pairs[node + 1]
                options = [(c, p) for c, p in self.model.next(a, b, self.width)
                           if children[node].get(c) not in dead]
                if not options or depth[node] >= limit:
                    dead.add(node)
                    break
                token, prior = options[self.choose(a, b, options, lambda c: visits.get(children[node].get(c), 0))]
                if token in children[node]:
                    node = children[node][token]
                    path.append(node)
                    continue
                child = tree.add(token, node, prior)
                children[node][token], children[child], visits[child] = child, {}, 0
                depth[child] = depth[node] + 1
                pairs.append((b, token))
                path.append(child)
                for n in path:
                    visits[n] += 1
                break
        self.pairs = pairs
        return tree

    def accepted(self, dec: Decoding, tree: Tree, verdict: Verdict, logits: torch.Tensor, taps=None) -> None:
        on_path = {-1, *verdict.accepted}
        for row, (a, b) in enumerate(self.pairs):
            self.model.read_target(a, b, logits[row], self.k)
        for i, (parent, token) in enumerate(zip(tree.parents, tree.tokens)):
            if parent in on_path:  # verified in its true context: a real trial
                a, b = self.pairs[parent + 1]
                self.tried[(a, b, token)] = self.tried.get((a, b, token), 0) + 1
                if i in on_path:
                    self.won[(a, b, token)] = self.won.get((a, b, token), 0) + 1


@method("aded", family="speculative", lossless=True, training_free=True,
        paper="Adaptive Draft-Verification for Efficient Large Language Model Decoding",
        departures="the starting corpus is small (about 1,200 answers of the default model); the search is a "
                   "PUCT rule with the lab's constants (explore 0.5, decay 0.8)")
def aded(dec, *, nodes: int = 24, width: int = 4, max_depth: int = 8, explore: float = 0.5,
         decay: float = 0.8, corpus: str = "default"):
    """ADED: an adaptive tri-gram model of the target, started from a corpus, drafts a tree by PUCT search."""
    base = corpus_counts(corpus, dec.tokenizer)
    yield from speculate(dec, AdaptiveDrafter(nodes, width, max_depth, explore, decay=decay, base=base))
