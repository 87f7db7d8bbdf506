"""Sequoia: the token tree that maximises expected accepted tokens, with a budget chosen for this hardware.

Paper: "Sequoia: Scalable, Robust, and Hardware-aware Speculative Decoding" (Chen et al., 2024).
The idea it adds to fixed-shape trees (SpecInfer): measure how often the draft's k-th ranked candidate is the
accepted one, build by dynamic programming the tree with the most expected accepted tokens for each node
budget, and pick the budget (and depth) that gives the most tokens per second on the machine at hand, from
measured forward latencies of the target and the draft. The shape is filled with the draft's top-ranked tokens
at temperature 0; at T > 0 with siblings drawn without replacement and verified by recursive rejection
sampling, which is Sequoia's own sampling and verification rule.

Acceptance per rank: h_k = P(the rank-k child is accepted | ranks < k were rejected), first from a calibration
on the prompt (the rank, in the draft's order, of each actual next prompt token), then from every step: at
T = 0 the rank of the target's token among the draft's at each accepted position; at T > 0 which child was
accepted at each verified node (ranks the tree did not try are left out, not counted as misses).

Departures from the paper: the acceptance statistics come from the current prompt and run, not from an offline
dataset, and the tree is re-optimised every step as they change; the hardware profile is measured once per model
in the process; the draft cost per level is modelled as one forward of nodes / depth tokens.
"""
from __future__ import annotations

import numpy as np

from ...backends import Backend
from ...decoding import Decoding
from ...errors import LabError
from ...registry import method
from ...tree import Tree
from ..draft_trees import fill_shape
from ..drafter import Drafter
from ..expand import TreeGrower
from ..loop import speculate
from ..shapes.sequoia import acceptance_by_rank, best_trees, choose_budget, latency
from ..verify import Verdict


class RankAcceptance:
    """Per-rank acceptance counts: `tried[k]` rounds reached rank k, `hits[k]` of them accepted it."""

    def __init__(self, width: int, prior_rate: float = 0.2, prior_weight: float = 0.5):
        self.tried = np.full(width, prior_weight)
        self.hits = np.full(width, prior_weight * prior_rate)

    def observe(self, tried: int, accepted_at: int | None) -> None:
        """One verified node: its first `tried` ranks were tried and rank `accepted_at` (or none) accepted."""
        upto = min(tried if accepted_at is None else accepted_at + 1, len(self.tried))
        self.tried[:upto] += 1
        if accepted_at is not None and accepted_at < len(self.tried):
            self.hits[accepted_at] += 1

    def observe_rank(self, rank: int) -> None:
        """The chosen token had this rank in the draft's order (uncensored: ranks past the width are misses)."""
        width = len(self.tried)
        self.observe(width, rank if rank < width else None)

    @property
    def hazard(self) -> np.ndarray:
        return self.hits / self.tried

    def vector(self) -> np.ndarray:
        return acceptance_by_rank(self.hazard)


def rank_of(logits, token: int) -> int:
    """How many tokens the draft ranks above `token`."""
    return int((logits > logits[token]).sum())


class SequoiaTree(Drafter):
    def __init__(self, runner: Backend, *, budget: int, max_nodes: int, max_depth: int, width: int):
        self.runner = runner
        self.budget, self.max_nodes, self.max_depth = budget, max_nodes, max_depth
        self.width = width
        self.stats: RankAcceptance | None = None
        self.grower: TreeGrower | None = None
        self.chosen: list[tuple[int, int, float]] = []  # (nodes, depth, expected accepted) per step

    @property
    def forwards(self) -> int:
        return self.runner.forwards

    def calibrate(self, prompt: list[int]) -> None:
        """Acceptance statistics from the prompt: the draft's rank of each actual next token."""
        self.stats = RankAcceptance(min(self.width, self.runner.vocab_size))
        if len(prompt) > 1:
            self.runner.rollback(0)
            logits = self.runner.forward(prompt).logits  # the cache keeps the prompt for the first tree
            for i, token in enumerate(prompt[1:]):
                self.stats.observe_rank(rank_of(logits[i], token))

    def propose(self, dec: Decoding, root: int) -> Tree:
        if self.stats is None:
            self.calibrate(dec.prompt)
        depth = min(self.max_depth, dec.remaining)
        table = best_trees(self.stats.vector(), self.max_nodes, depth)
        if self.budget > 0:  # the largest tree up to the budget that fits in the levels left
            nodes = max(n for n in range(1, self.budget + 1) if np.isfinite(table.value[depth + 1][n + 1]))
        else:
            target = latency(dec.target, dec.context, self.max_nodes + 1)
            draft = latency(self.runner, dec.context, self.max_nodes)
            nodes, depth = choose_budget(table, target, draft, self.max_nodes, depth)
        self.chosen.append((nodes, depth, table.expected(nodes, depth)))
        self.grower = TreeGrower(self.runner, dec.context)
        return fill_shape(self.grower, dec, table.shape(nodes, depth), replacement=False)

    def accepted(self, dec: Decoding, tree: Tree, verdict: Verdict, logits, taps=None) -> None:
        path = [-1] + verdict.accepted
        for i, node in enumerate(path):
            kids = tree.children(node)
            if dec.greedy and node in self.grower.logits:  # the target's token, ranked by the draft
                self.stats.observe_rank(rank_of(self.grower.logits[node], int(logits[node + 1].argmax())))
            elif kids:
                nxt = path[i + 1] if i + 1 < len(path) else None
                self.stats.observe(len(kids), kids.index(nxt) if nxt is not None else None)


@method("sequoia", family="speculative", lossless=True, training_free=True,
        paper="Sequoia: Scalable, Robust, and Hardware-aware Speculative Decoding",
        departures="acceptance statistics from the current prompt and run, not an offline dataset, and the tree "
                   "re-optimised every step; the hardware profile is measured once per model in the process; draft "
                   "cost per level modelled as one forward of nodes / depth tokens; the default draft is the lab's trained FastDraft on the default model (four layers of its shape, not a separate small model) and the target's first half of layers, untrained, on other models")
def sequoia(dec, *, budget: int = 0, max_nodes: int = 32, max_depth: int = 6, width: int = 8,
            draft: str = "default"):
    """Tree from a dynamic program over per-rank acceptance, node budget chosen from measured latency (0 = auto)."""
    if min(max_nodes, max_depth, width) < 1 or budget < 0:
        raise LabError("sequoia needs max_nodes, max_depth and width >= 1 and budget >= 0 (0: choose it)")
    drafter = SequoiaTree(dec.lab.draft(draft), budget=max(budget, 0), max_nodes=max(max_nodes, budget),
                          max_depth=max_depth, width=width)
    yield from speculate(dec, drafter)
