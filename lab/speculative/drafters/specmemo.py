"""SpecMemo: the draft tree's size is chosen from a memory budget, by modelling what a verification allocates.

Paper: "SpecMemo: Speculative Decoding is in Your Pocket". The idea it adds: speculation trades memory
for speed, and on a small device the memory is the limit. SpecMemo models the memory footprint of one
speculative step as a function of the number of candidate tokens and picks the most candidates that fit
the device's budget. Here one step with n tree nodes (r of them run through the draft, d of them drawn)
allocates

    target KV   (n + 1) rows x 2 x layers x kv_heads x head_dim x dtype bytes   (root and nodes)
    target logits (n + 1) x V x 4 bytes   (and as much again for the target's probabilities at T > 0)
    draft KV    r rows of the draft's own layers;  draft logits  r x V x 4 bytes
    draft q     d x V x 4 bytes           (the distribution each drawn node carries, T > 0 only)

The largest n whose worst case (r = d = n) fits `memory_mb` is the node budget, and the tree is grown
best-first within it (lab/speculative/best_first.py, without eviction, so that no draft row is spent on a node
that leaves the tree). Each step reports its own estimate in `Step.info["memory"]`.

Departures from the paper: SpecMemo manages a real GPU allocator (and batched, multi-GPU serving); here
the budget only sizes the tree, and covers the memory speculation adds on top of plain decoding (not the
weights, not the context's KV cache). 1 MB here is 2**20 bytes.
"""
from __future__ import annotations

from ...backends import Backend
from ...decoding import Decoding
from ...registry import method
from ..best_first import BestFirstDrafter
from ..loop import speculate

FLOAT32 = 4  # logits and distributions are float32 whatever the model's dtype


class MemoryModel:
    """Bytes a speculative step allocates, as a function of the tree it verifies."""

    def __init__(self, target: Backend, draft: Backend, stochastic: bool):
        self.target_kv, self.draft_kv = target.describe().kv_bytes_per_token, draft.describe().kv_bytes_per_token
        self.target_row, self.draft_row = target.vocab_size * FLOAT32, draft.vocab_size * FLOAT32
        self.stochastic = stochastic

    def estimate(self, nodes: int, draft_rows: int, drawn: int) -> dict[str, int]:
        rows = nodes + 1  # the root goes through the target with the tree
        parts = {"target_kv": rows * self.target_kv, "target_logits": rows * self.target_row,
                 "target_probs": rows * self.target_row if self.stochastic else 0,
                 "draft_kv": draft_rows * self.draft_kv, "draft_logits": draft_rows * self.draft_row,
                 "draft_q": drawn * self.draft_row}
        return {**parts, "total": sum(parts.values())}

    def max_nodes(self, budget_bytes: float) -> int:
        """The most nodes whose worst case (every node run through the draft, every node drawn) fits."""
        fixed = self.estimate(0, 0, 0)["total"]
        per_node = self.estimate(1, 1, int(self.stochastic))["total"] - fixed
        return max(0, int((budget_bytes - fixed) // per_node))


class MemoryBoundDrafter(BestFirstDrafter):
    """Best-first trees within the node budget the memory model allows; remembers each step's estimate."""

    def __init__(self, runner: Backend, memory: MemoryModel, budget_bytes: float, max_nodes: int, max_depth: int):
        self.memory, self.budget_bytes = memory, budget_bytes
        self.node_budget = min(max_nodes, memory.max_nodes(budget_bytes))
        super().__init__(runner, nodes=self.node_budget, max_depth=max_depth, exact=False)
        self.last: dict[str, int] = {}

    def propose(self, dec: Decoding, root: int):
        tree = super().propose(dec, root)
        drawn = sum(q is not None for q in tree.q)
        self.last = self.memory.estimate(len(tree), self.draft_rows, drawn)
        return tree


@method("specmemo", family="speculative", lossless=True, training_free=True,
        paper="SpecMemo: Speculative Decoding is in Your Pocket",
        departures="no real allocator: the memory budget only sizes the tree (memory speculation adds on top of "
                   "plain decoding, modelled); one GPU, batch 1; the default draft is the lab's trained FastDraft on the default model (four layers of its shape, not a separate small model) and the target's first half of layers, untrained, on other models")
def specmemo(dec: Decoding, *, memory_mb: float = 8.0, max_nodes: int = 32, max_depth: int = 8,
             draft: str = "default"):
    """Best-first draft tree as large as a memory budget allows (memory_mb per step, modelled)."""
    runner = dec.lab.draft(draft)
    budget = memory_mb * 2**20
    drafter = MemoryBoundDrafter(runner, MemoryModel(dec.target, runner, not dec.greedy), budget,
                                 max_nodes, max_depth)
    for step in speculate(dec, drafter):
        if step.proposed:
            step.info.update(memory=dict(drafter.last), memory_bytes=drafter.last["total"],
                             node_budget=drafter.node_budget, memory_budget_bytes=int(budget))
        yield step
