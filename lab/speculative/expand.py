"""Grow draft trees with a draft model, one draft forward per level (SpecInfer, Sequoia, OPT-Tree, DySpec ...).

`TreeGrower` syncs the draft runner to the context, then adds levels: each new level's nodes go through the
draft model in one forward, each seeing the context and its own ancestors (the earlier levels already sit in
the draft's cache, hidden from non-descendants). `done()` returns the Tree and rolls the draft cache back.
How children are chosen (top-k, i.i.d. samples, samples without replacement, best-first) is the method's idea;
the choosers below are shared.
"""
from __future__ import annotations

import torch

from ..backends import Backend
from ..sampling import draw
from ..tree import Tree

Draft = tuple[int, float, "torch.Tensor | None"]  # token, the draft's own probability of it, the q it was drawn from


def draft_token(dec, logits: torch.Tensor) -> Draft:
    """The draft's next token under the target's sampling rule: its argmax at T = 0, else a draw from its q
    (dec.probs of the draft logits). Returns (token, the draft's own softmax probability of it, for the views;
    q, or None at T = 0)."""
    q = None if dec.greedy else dec.probs(logits)
    token = int(logits.argmax()) if q is None else int(draw(q, dec.rng))
    return token, float(logits.float().softmax(-1)[token]), q


class TreeGrower:
    def __init__(self, runner: Backend, context: list[int]):
        self.runner = runner
        self.root_logits = runner.sync(context)
        self.base = runner.length
        self.tree = Tree()
        self.slot: dict[int, int] = {}  # node -> its row in the draft cache
        self.logits: dict[int, torch.Tensor] = {-1: self.root_logits}  # node -> the draft's next-token logits

    def add(self, token: int, parent: int, prob: float = 1.0, q: torch.Tensor | None = None) -> int:
        """Add a node (not yet run through the draft); returns its index."""
        return self.tree.add(token, parent, prob, q)

    def run(self, nodes: list[int]) -> None:
        """One draft forward over `nodes` (all of whose parents have run): their next-token logits."""
        if not nodes:
            return
        depth = self.tree.depths()
        positions = [self.base - 1 + depth[n] for n in nodes]
        length = self.runner.length
        visible = torch.zeros(len(nodes), length, dtype=torch.bool)
        visible[:, : self.base] = True
        index = {n: i for i, n in enumerate(nodes)}
        among = torch.eye(len(nodes), dtype=torch.bool)
        for i, n in enumerate(nodes):
            p = self.tree.parents[n]
            while p >= 0:
                if p in self.slot:
                    visible[i, self.slot[p]] = True
                elif p in index:
                    among[i, index[p]] = True
                p = self.tree.parents[p]
        logits = self.runner.forward([self.tree.tokens[n] for n in nodes], among=among, positions=positions,
                                     visible=visible).logits
        for i, n in enumerate(nodes):
            self.slot[n] = length + i
            self.logits[n] = logits[i]

    def done(self) -> Tree:
        self.runner.rollback(self.base)
        return self.tree


def top_children(logits: torch.Tensor, k: int) -> list[tuple[int, float]]:
    """The k most likely tokens and their probabilities (deterministic candidates: q is a point mass)."""
    probs = logits.float().softmax(-1)
    values, tokens = torch.topk(probs, k)
    return [(int(t), float(v)) for t, v in zip(tokens, values)]


def sample_children(q: torch.Tensor, k: int, rng: torch.Generator | None,
                    replacement: bool = True) -> list[tuple[int, torch.Tensor]]:
    """k children drawn from q: i.i.d. (SpecInfer), or without replacement (Recursive Speculative Decoding).

    Returns (token, the distribution it was drawn from): q itself when i.i.d.; without replacement, q with the
    earlier children removed and renormalised, which is what recursive rejection sampling verifies against.
    """
    out, current = [], q.float().clone()
    for _ in range(k):
        if float(current.sum()) <= 0:
            break
        dist = current / current.sum()
        token = int(draw(dist, rng))
        out.append((token, dist if not replacement else q))
        if not replacement:
            current = current.clone()
            current[token] = 0.0
    return out
