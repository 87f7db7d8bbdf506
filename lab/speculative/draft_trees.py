"""Helpers shared by the methods that grow token trees with a draft model (SpecInfer, RSD, Sequoia, OPT-Tree).

A *shape* is a tree without tokens: a parents list in level order, each node's children contiguous and in rank
order (child 0 is the draft's best, or first drawn, token). `fill_shape` puts tokens on a shape with one draft
forward per level: the draft's top-ranked tokens at temperature 0 (fixed candidates, q=None), otherwise draws
from the draft's distribution q = dec.probs(draft logits), i.i.d. or without replacement, each drawn node
carrying the distribution it was drawn from. `ShapeDrafter` proposes a fixed shape every step (SpecInfer, RSD);
`subtree` keeps an ancestor-closed part of a tree.
"""
from __future__ import annotations

import torch

from ..backends import Backend
from ..errors import LabError
from ..tree import Tree, depths
from .drafter import Drafter
from .expand import TreeGrower, sample_children, top_children


def parse_branching(text: str) -> list[int]:
    """'2,2,1' -> [2, 2, 1]: children per node at each level (a clear error for anything else)."""
    try:
        branching = [int(part) for part in str(text).replace("x", ",").split(",") if part.strip()]
    except ValueError:
        branching = []
    if not branching or min(branching) < 1:
        raise LabError(f"tree shape {text!r}: give children per node for each level, e.g. '2,2,1'")
    return branching


def branching_shape(branching: list[int]) -> list[int]:
    """The shape where every node of level l has branching[l] children."""
    parents, level = [], [-1]
    for width in branching:
        nxt = []
        for parent in level:
            for _ in range(width):
                parents.append(parent)
                nxt.append(len(parents) - 1)
        level = nxt
    return parents


def belief(dec, logits: torch.Tensor) -> torch.Tensor:
    """The draft's own probabilities, for ranking and scores: softmax at T=0, the warped distribution at T>0."""
    return logits.float().softmax(-1) if dec.greedy else dec.probs(logits)


def fill_shape(grower: TreeGrower, dec, shape: list[int], *, replacement: bool = True) -> Tree:
    """Put draft tokens on `shape`, level by level, down to at most `dec.remaining` levels; returns the Tree.

    At temperature 0 the children of a node are the draft's top-k tokens. Otherwise they are drawn from
    q = dec.probs(draft logits): i.i.d. (`replacement`, each child carries q) or without replacement (each
    child carries q with its earlier siblings removed). A repeated i.i.d. draw stays in the tree, since the
    multi-round verifier needs every draw, but gets no children: once its first copy was rejected the
    residual gives that token probability 0, so the repeat can never be accepted.
    """
    children: dict[int, list[int]] = {}
    for node, parent in enumerate(shape):
        children.setdefault(parent, []).append(node)
    depth = depths(shape)
    limit = dec.remaining
    placed = {-1: -1}  # shape node -> tree node
    frontier = [-1]
    for level in range(1, (max(depth) if depth else 0) + 1):
        if level > limit:
            break
        new = []
        for spot in frontier:
            kids = children.get(spot, [])
            if not kids:
                continue
            parent = placed[spot]
            logits = grower.logits[parent]
            shown = logits.float().softmax(-1)
            k = min(len(kids), logits.shape[-1])
            if dec.greedy:
                picks = [(token, None) for token, _ in top_children(logits, k)]
            else:
                picks = sample_children(dec.probs(logits), k, dec.rng, replacement=replacement)
            seen = set()
            for kid, (token, q) in zip(kids, picks):
                node = grower.add(token, parent, float(shown[token]), q)
                if token not in seen:
                    seen.add(token)
                    placed[kid] = node
                    new.append(kid)
        expand = [placed[s] for s in new if children.get(s)]
        if level < limit:
            grower.run(expand)
        frontier = new
    return grower.done()


class ShapeDrafter(Drafter):
    """Proposes the same shape every step, filled by `fill_shape` (i.i.d. or without-replacement siblings)."""

    def __init__(self, runner: Backend, shape: list[int], replacement: bool = True):
        self.runner = runner
        self.shape = shape
        self.replacement = replacement

    @property
    def forwards(self) -> int:
        return self.runner.forwards

    def propose(self, dec, root: int) -> Tree:
        grower = TreeGrower(self.runner, dec.context)
        return fill_shape(grower, dec, self.shape, replacement=self.replacement)


def subtree(tree: Tree, keep: list[int]) -> Tree:
    """The nodes `keep` of `tree` (every kept node's parent must be kept too), re-indexed in their old order."""
    keep = sorted(set(keep))
    index = {-1: -1}
    out = Tree()
    for node in keep:
        parent = tree.parents[node]
        if parent not in index:
            raise ValueError(f"node {node} is kept but its parent {parent} is not")
        index[node] = out.add(tree.tokens[node], index[parent], tree.draft_probs[node], tree.q[node])
    return out


def path_probs(tree: Tree) -> list[float]:
    """Each node's cumulative draft probability: the product of draft_probs from the root down to it."""
    out: list[float] = []
    for node, parent in enumerate(tree.parents):
        out.append(tree.draft_probs[node] * (out[parent] if parent >= 0 else 1.0))
    return out
