"""Token Recycling: draft trees from the target's own discarded candidates.

Paper: "Turning Trash into Treasure: Accelerating Inference of Large Language Models with Token Recycling"
(Luo et al., 2024). Every verification forward yields the target's top-k next tokens at the root and at
every draft node, accepted or not. Instead of throwing them away, an adjacency matrix [V, k] keeps, for
each token, the top-k the target most recently predicted after it. The next draft tree is a static
template (paths of ranks such as (0,), (0, 0), (1,), ...) filled by a breadth-first walk through the
matrix from the last committed token. No draft model, no corpus, under 2 MB of state.
"""
from __future__ import annotations

import heapq

import torch

from ...decoding import Decoding
from ...registry import method
from ...tree import Tree
from ..drafter import Drafter
from ..loop import speculate
from ..verify import Verdict


def static_template(nodes: int, width: int, max_depth: int, rate: float = 0.6) -> list[tuple[int, int]]:
    """A fixed tree as (parent slot, rank) pairs in breadth-first order, parents first.

    Slots are chosen best-first under the assumption that rank r is accepted with probability
    rate ** (r + 1), independently along a path (the shape of the paper's hand-made template:
    wide near the root, a deep spine of first choices).
    """
    chosen: list[tuple[int, ...]] = []
    frontier = [(-rate ** (r + 1), (r,)) for r in range(width)]
    heapq.heapify(frontier)
    while frontier and len(chosen) < nodes:
        score, path = heapq.heappop(frontier)
        chosen.append(path)
        if len(path) < max_depth:
            for r in range(width):
                heapq.heappush(frontier, (score * rate ** (r + 1), path + (r,)))
    chosen.sort(key=lambda p: (len(p), p))
    slot = {path: i for i, path in enumerate(chosen)}
    return [(slot.get(path[:-1], -1), path[-1]) for path in chosen]


class TokenRecycler(Drafter):
    """The adjacency matrix of recycled candidates and the template it fills."""

    def __init__(self, vocab_size: int, k: int = 8, nodes: int = 28, max_depth: int = 6):
        self.k = k
        self.successors = torch.full((vocab_size, k), -1, dtype=torch.long)  # -1: never predicted yet
        self.template = static_template(nodes, k, max_depth)
        self.root = -1
        self.learns_from_plain_steps = True  # a draft-less step still fills the root's row

    def propose(self, dec: Decoding, root: int) -> Tree:
        """Breadth-first over the template: slot (parent, rank) takes the rank-th successor of its parent."""
        self.root = root
        tree = Tree()
        placed = {-1: -1}  # template slot -> tree node
        token_of = {-1: root}
        depth = {-1: 0}
        table = self.successors
        for slot, (parent, rank) in enumerate(self.template):
            if parent not in placed or depth[parent] + 1 > dec.remaining:
                continue
            token = int(table[token_of[parent], rank])
            if token < 0:
                continue
            placed[slot] = tree.add(token, placed[parent])
            token_of[slot], depth[slot] = token, depth[parent] + 1
        return tree

    def recycle(self, tokens: list[int], logits: torch.Tensor) -> None:
        """Row `tokens[i]` becomes the target's top-k at that position (later rows win on repeats)."""
        top = logits.topk(min(self.k, logits.shape[-1]), dim=-1).indices.cpu()
        last_row = {token: i for i, token in enumerate(tokens)}
        self.successors[list(last_row), : top.shape[1]] = top[list(last_row.values())]

    def accepted(self, dec: Decoding, tree: Tree, verdict: Verdict, logits: torch.Tensor, taps=None) -> None:
        self.recycle([self.root] + tree.tokens, logits)


@method("token-recycling", family="speculative", lossless=True, training_free=True,
        paper="Turning Trash into Treasure: Accelerating Inference of Large Language Models with Token Recycling",
        departures="the adjacency matrix starts empty at every generation (the paper keeps it across generations); "
                   "the draft tree is a best-first template of 28 nodes, not the paper's static 80-node tree")
def token_recycling(dec, *, k: int = 8, nodes: int = 28, max_depth: int = 6):
    """Token Recycling: the target's past top-k candidates in a [V, k] matrix fill a static draft tree."""
    yield from speculate(dec, TokenRecycler(dec.target.vocab_size, k, nodes, max_depth))
