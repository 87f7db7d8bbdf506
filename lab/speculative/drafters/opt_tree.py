"""OPT-Tree: each step, the draft tree that maximises the expected acceptance length under a node budget.

Paper: "OPT-Tree: Speculative Decoding with Adaptive Draft Tree Structure" (Wang et al., 2024).
The idea it adds to fixed tree shapes: take a node's cumulative draft probability (the product of the draft's
probabilities along its path) as the chance that it is accepted, so a tree's expected acceptance length is
the sum of those over its nodes. The tree with the largest sum under a budget of n nodes is the n nodes of
largest cumulative probability (a child never beats its parent, so they always form a tree). OPT-Tree grows it
level by level with one draft forward per level: expand the newest level's nodes, pool their top children with
the nodes already chosen, keep the best n of the pool, and stop when another level adds less than `min_gain`
to the expected length. The result is the global top n among all paths up to that depth.

Candidates are the draft's top tokens, deterministic (q = None): verified greedily at T = 0 and by multi-round
rejection against fixed candidates at T > 0, which is lossless. At T > 0 the scores use the draft's warped
distribution (the one the target's acceptance follows). Departure from the paper: none in the tree search;
the draft is by default the lab's default draft (FastDraft on the default model) rather than a separate small model or EAGLE head.
"""
from __future__ import annotations

import torch

from ...backends import Backend
from ...decoding import Decoding
from ...errors import LabError
from ...registry import method
from ...tree import Tree
from ..draft_trees import belief, subtree
from ..drafter import Drafter
from ..expand import TreeGrower
from ..loop import speculate


class OptimalTree(Drafter):
    def __init__(self, runner: Backend, nodes: int = 24, max_depth: int = 10, min_gain: float = 0.05):
        self.runner = runner
        self.nodes, self.max_depth, self.min_gain = nodes, max_depth, min_gain
        self.expected: list[float] = []  # expected acceptance length of each proposed tree

    @property
    def forwards(self) -> int:
        return self.runner.forwards

    def propose(self, dec: Decoding, root: int) -> Tree:
        grower = TreeGrower(self.runner, dec.context)
        score = {-1: 1.0}  # node -> cumulative draft probability
        chosen: list[int] = []
        frontier, expected = [-1], 0.0
        for level in range(1, min(self.max_depth, dec.remaining) + 1):
            candidates = []  # (score, parent, token, prob) of the newest level's best children
            for parent in frontier:
                probs = belief(dec, grower.logits[parent])
                top = torch.topk(probs, min(self.nodes, probs.shape[-1]))
                for p, token in zip(top.values.tolist(), top.indices.tolist()):
                    if p > 0:
                        candidates.append((score[parent] * p, parent, token, p))
            pool = [(score[n], 0, n) for n in chosen] + [(c[0], 1, i) for i, c in enumerate(candidates)]
            pool.sort(key=lambda item: (-item[0], item[1]))  # ties: the older (shallower) node first
            kept = pool[: self.nodes]
            gain = sum(s for s, _, _ in kept) - expected
            if gain < self.min_gain or not any(new for _, new, _ in kept):
                break
            chosen = [n for _, new, n in kept if not new]
            frontier = []
            for s, new, i in kept:
                if new:
                    _, parent, token, p = candidates[i]
                    node = grower.add(token, parent, p)
                    score[node] = s
                    chosen.append(node)
                    frontier.append(node)
            expected += gain
            if level < min(self.max_depth, dec.remaining):
                grower.run(frontier)
        tree = grower.done()
        self.expected.append(expected)
        return subtree(tree, chosen)


@method("opt-tree", family="speculative", lossless=True, training_free=True,
        paper="OPT-Tree: Speculative Decoding with Adaptive Draft Tree Structure",
        departures="none in the tree search; the default draft is the lab's FastDraft on the default model (the paper "
                   "uses a trained small draft model or an EAGLE head)")
def opt_tree(dec, *, nodes: int = 24, max_depth: int = 10, min_gain: float = 0.05, draft: str = "default"):
    """Adaptive draft tree: the top-n nodes by cumulative draft probability, grown until a level gains little."""
    if nodes < 1 or max_depth < 1:
        raise LabError("opt-tree needs nodes >= 1 and max_depth >= 1")
    yield from speculate(dec, OptimalTree(dec.lab.draft(draft), nodes, max_depth, min_gain))
