"""SpecMemo: the draft tree's size is chosen from a memory budget, modelled first, then measured on the device.

Paper: "SpecMemo: Speculative Decoding is in Your Pocket". The idea it adds: speculation trades memory
for speed, and on a small device the memory is the limit. SpecMemo models the memory footprint of one
speculative step as a function of the number of candidate tokens and picks the most candidates that fit
the device's budget. Here one step with n tree nodes (r of them run through the draft, d of them drawn)
allocates

    target KV   (n + 1) rows x 2 x layers x kv_heads x head_dim x dtype bytes   (root and nodes)
    target logits (n + 1) x V x 4 bytes   (and as much again for the target's probabilities at T > 0)
    draft KV    r rows of the draft's own layers;  draft logits  r x V x 4 bytes
    draft q     d x V x 4 bytes           (the distribution each drawn node carries, T > 0 only)

The largest n whose worst case (r = d = n) fits `memory_mb` is the first node budget, and the tree is grown
best-first within it (lab/speculative/best_first.py, without eviction, so that no draft row is spent on a node
that leaves the tree).

On CUDA each step (draft, verify, commit) is also measured: the allocator's peak above what was allocated when
the step began (`reset_peak_memory_stats` / `max_memory_allocated`: host-side counters, no device sync). The
measurements replace the model (`Calibration`): bytes for a plain step and bytes per node, each the largest
seen, so the node budget follows the real peak (activations, attention scores, cache copies the model omits);
a step whose peak went over the budget caps every later tree below its size. On the CPU there are no allocator
statistics and the node budget stays the model's (`memory_source` says which). The fast backend writes the tree
into a KV cache and CUDA-graph buffers allocated up front (per bucket of 1, 2, 4 .. 64 new tokens): there the
budget governs the bucket a step may use (n + 1 is rounded down to a bucket) and the KV terms are 0; the one-off
allocations (a graph captured for a new bucket, a bigger cache) stay allocated after their step: a step that made
one (`memory_one_off`: counted by the backend's `graphs.one_offs`, or more than the budget still allocated after
the step) is not calibrated on. Calibration lives for one generation.

Departures from the paper: SpecMemo manages the GPU allocator itself (and batched, multi-GPU serving); here the
budget sizes the tree and covers what a step allocates above the memory in use when it begins (not the weights,
not the context's KV cache). 1 MB here is 2**20 bytes.
"""
from __future__ import annotations

import torch

from ...backends import Backend
from ...backends.fast.graphs import NEW_TOKENS, one_offs
from ...decoding import Decoding
from ...registry import method
from ..best_first import BestFirstDrafter
from ..loop import speculate

FLOAT32 = 4  # logits and distributions are float32 whatever the model's dtype


class MemoryModel:
    """Bytes a speculative step allocates, as a function of the tree it verifies."""

    def __init__(self, target: Backend, draft: Backend, stochastic: bool):
        self.target_kv, self.draft_kv = target.describe().kv_bytes_per_token, draft.describe().kv_bytes_per_token
        if target.describe().backend == "fast":  # tree rows go into the static cache allocated up front
            self.target_kv = self.draft_kv = 0
        self.target_row, self.draft_row = target.vocab_size * FLOAT32, draft.vocab_size * FLOAT32
        self.stochastic = stochastic

    def estimate(self, nodes: int, draft_rows: int, drawn: int) -> dict[str, int]:
        rows = nodes + 1  # the root goes through the target with the tree
        parts = {"target_kv": rows * self.target_kv, "target_logits": rows * self.target_row,
                 "target_probs": rows * self.target_row if self.stochastic else 0,
                 "draft_kv": draft_rows * self.draft_kv, "draft_logits": draft_rows * self.draft_row,
                 "draft_q": drawn * self.draft_row}
        return {**parts, "total": sum(parts.values())}

    def fixed(self) -> int:
        return self.estimate(0, 0, 0)["total"]

    def per_node(self) -> int:
        """Worst case of one more node: run through the draft, and drawn."""
        return self.estimate(1, 1, int(self.stochastic))["total"] - self.fixed()

    def max_nodes(self, budget_bytes: float) -> int:
        """The most nodes whose worst case (every node run through the draft, every node drawn) fits."""
        return max(0, int((budget_bytes - self.fixed()) // self.per_node()))


class Calibration:
    """The node budget from measured step peaks: peak(n) <= fixed + per_node x n, both the largest seen.

    Starts from the model's two numbers; a plain step (n = 0) measures `fixed`, a tree of n nodes `per_node`.
    The rows (nodes + root) at most double per step (a fit from small trees is not trusted far beyond them);
    a peak over the budget at n nodes caps every later budget at n - 1. `sizes`: the row counts the backend
    runs in (its buckets); the budget is rounded down to fill one.
    """

    def __init__(self, budget: float, fixed: float, per_node: float, most: int, sizes=None):
        self.budget, self.fixed, self.per_node, self.most, self.sizes = budget, fixed, per_node, most, sizes
        self.ceiling, self.violations = most, 0
        self.seen_fixed = self.seen_per_node = None
        self.node_budget = self._fit(most)

    def _fit(self, limit: int) -> int:
        n = int((self.budget - self.fixed) // max(self.per_node, 1))
        n = max(0, min(n, limit, self.ceiling, self.most))
        if self.sizes:
            n = max([s - 1 for s in self.sizes if s - 1 <= n] or [0])
        return n

    def observe(self, nodes: int, peak: int) -> int:
        """Take one step's measured peak over its `nodes` tree nodes; return the next node budget."""
        if peak > self.budget:
            self.violations += 1
            self.ceiling = min(self.ceiling, nodes - 1)
        if nodes == 0:
            self.seen_fixed = max(self.seen_fixed or 0, peak)
            self.fixed = self.seen_fixed
        else:
            per_node = max(1.0, (peak - self.fixed) / nodes)
            self.seen_per_node = max(self.seen_per_node or 0.0, per_node)
            self.per_node = self.seen_per_node
        self.node_budget = self._fit(2 * self.node_budget + 1)  # rows (nodes + root) at most double
        return self.node_budget


class Gauge:
    """The allocator's peak over a window, above what was allocated when it opened (CUDA only, else None), and
    whether a one-off allocation (a static cache, a captured graph) happened in it."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.on = self.device.type == "cuda"
        self.base = self.one_offs = 0

    def open(self) -> None:
        if self.on:
            self.base, self.one_offs = torch.cuda.memory_allocated(self.device), one_offs()
            torch.cuda.reset_peak_memory_stats(self.device)

    def close(self) -> tuple[int, int, bool] | None:
        """(peak, retained, one-off): bytes above the opening at the peak, still allocated now, and whether the
        window made a one-off allocation."""
        if not self.on:
            return None
        return (torch.cuda.max_memory_allocated(self.device) - self.base,
                torch.cuda.memory_allocated(self.device) - self.base, one_offs() != self.one_offs)


class MemoryBoundDrafter(BestFirstDrafter):
    """Best-first trees within the current node budget; opens the gauge as a step begins, remembers its estimate."""

    def __init__(self, runner: Backend, memory: MemoryModel, calibration: Calibration, gauge: Gauge, max_depth: int):
        self.memory, self.calibration, self.gauge = memory, calibration, gauge
        super().__init__(runner, nodes=calibration.node_budget, max_depth=max_depth, exact=False)
        self.last: dict[str, int] = memory.estimate(0, 0, 0)

    def propose(self, dec: Decoding, root: int):
        self.gauge.open()  # the draft's catch-up, its tree, the target's verification and the commit
        self.nodes = self.calibration.node_budget
        tree = super().propose(dec, root)
        drawn = sum(q is not None for q in tree.q)
        self.last = self.memory.estimate(len(tree), self.draft_rows, drawn)
        return tree


@method("specmemo", family="speculative", lossless=True, training_free=True,
        paper="SpecMemo: Speculative Decoding is in Your Pocket",
        departures="no allocator of its own: the budget sizes the tree, from a memory model calibrated on each step's "
                   "measured CUDA peak above the memory in use when the step begins (modelled only on the CPU); on "
                   "the fast backend (static cache and graph buffers) it picks the bucket, and a step that "
                   "captures a graph, makes a cache or keeps more than the budget allocated is not calibrated on "
                   "(one-off memory); one GPU, "
                   "batch 1; the default draft is the lab's trained FastDraft on the default model (four layers of "
                   "its shape, not a separate small model) and the target's first half of layers, untrained, on "
                   "other models")
def specmemo(dec: Decoding, *, memory_mb: float = 8.0, max_nodes: int = 32, max_depth: int = 8,
             draft: str = "default"):
    """Best-first draft tree as large as a memory budget allows (memory_mb per step, measured on CUDA)."""
    runner = dec.lab.draft(draft)
    budget = memory_mb * 2**20
    memory = MemoryModel(dec.target, runner, not dec.greedy)
    sizes = NEW_TOKENS if dec.target.describe().backend == "fast" else None
    calibration = Calibration(budget, memory.fixed(), memory.per_node(), max_nodes, sizes)
    gauge = Gauge(dec.target.device)
    drafter = MemoryBoundDrafter(runner, memory, calibration, gauge, max_depth)
    for step in speculate(dec, drafter):
        if step.prefill:
            yield step
            continue
        nodes, measured = len(step.proposed), gauge.close()
        used = calibration.node_budget
        # one-off memory is not the step's own: a graph captured or a cache made (the backend counts them), or on
        # the fast backend, whose cache and graph buffers exist before the step, more than the budget kept after it
        one_off = measured is not None and (measured[2] or bool(sizes) and measured[1] > budget)
        if measured is not None and not one_off:
            calibration.observe(nodes, measured[0])
        step.info.update(memory=dict(drafter.last), memory_bytes=drafter.last["total"], node_budget=used,
                         memory_budget_bytes=int(budget), memory_source="measured" if gauge.on else "modelled",
                         memory_measured=None if measured is None else measured[0],
                         memory_retained=None if measured is None else measured[1],
                         memory_one_off=None if measured is None else one_off)
        yield step
