"""Sequoia's tree shapes: the best tree for a node budget by dynamic programming, and a hardware-aware budget.

Paper: "Sequoia: Scalable, Robust, and Hardware-aware Speculative Decoding" (Chen et al., 2024).
Under Sequoia's positional acceptance assumption the k-th ranked child of an accepted node is the accepted one
with probability a_k, whatever its depth or parent. A node then lies on the accepted path with the product of
a over the ranks along its path, and a tree's expected number of accepted tokens is the sum of that over its
nodes. `best_trees` finds, for every node count n and depth limit d at once, the tree maximising it: a node's
best subtree of n nodes is 1 plus the best split of n - 1 nodes among its children of ranks 1..k (a knapsack).
`LatencyProfile` measures how a forward's time grows with its number of tokens on this machine, and
`choose_budget` picks the (n, d) with the most expected tokens per second.
"""
from __future__ import annotations

import time
import weakref
from dataclasses import dataclass

import numpy as np

NEG = -np.inf


def acceptance_by_rank(hazard) -> np.ndarray:
    """a_k = h_k * prod_{j<k} (1 - h_j): from "rank k accepted once ranks < k were rejected" to "rank k accepted"."""
    h = np.clip(np.asarray(hazard, dtype=float), 0.0, 1.0)
    reach = np.concatenate([[1.0], np.cumprod(1.0 - h)[:-1]])
    return h * reach


def expected_accepted(shape: list[int], a) -> float:
    """Expected accepted draft tokens of a shape (parents, siblings in rank order) under acceptance vector a."""
    a = np.asarray(a, dtype=float)
    rank, seen, reach = [], {}, []
    for node, parent in enumerate(shape):
        rank.append(seen.get(parent, 0))
        seen[parent] = rank[-1] + 1
        r = a[rank[-1]] if rank[-1] < len(a) else 0.0
        reach.append(r * (reach[parent] if parent >= 0 else 1.0))
    return float(sum(reach))


@dataclass
class TreeTable:
    """The dynamic program's tables. value[d][n]: best sum for a subtree of n nodes (its top node counts 1)
    at most d levels deep. For a top node with m descendants in such a subtree, count[d][m] is how many
    children it has and split[d][k][m] the size of its rank-k child's subtree when ranks 1..k share m."""

    value: np.ndarray
    count: np.ndarray
    split: np.ndarray

    def expected(self, nodes: int, depth: int) -> float:
        """Expected accepted draft tokens of the best tree of `nodes` nodes under the root, `depth` levels deep."""
        return float(self.value[depth + 1][nodes + 1] - 1.0)

    def shape(self, nodes: int, depth: int) -> list[int]:
        """The best tree as a shape: parents in level order, each node's children in rank order."""
        if not np.isfinite(self.value[depth + 1][nodes + 1]):
            raise ValueError(f"no tree of {nodes} nodes fits in {depth} levels with this width")
        parents: list[int] = []
        queue = [(-1, depth + 1, nodes)]  # (node, depth allowed for its subtree, descendants to place)
        while queue:
            node, d, m = queue.pop(0)
            sizes, k = [], int(self.count[d][m])
            while k > 0:
                size = int(self.split[d][k][m])
                sizes.append(size)
                m, k = m - size, k - 1
            for size in reversed(sizes):  # rank 1 first
                parents.append(node)
                queue.append((len(parents) - 1, d - 1, size - 1))
        return parents


def best_trees(a, max_nodes: int, max_depth: int) -> TreeTable:
    """Sequoia's dynamic program for every budget up to `max_nodes` and depth up to `max_depth` (len(a) ranks)."""
    a = np.maximum(np.asarray(a, dtype=float), 1e-12)
    width, size = len(a), max_nodes + 2  # subtree sizes 0 .. max_nodes + 1 (the root counts)
    value = np.full((max_depth + 2, size), NEG)
    count = np.zeros((max_depth + 2, size), dtype=int)
    split = np.zeros((max_depth + 2, width + 1, size), dtype=int)
    value[1][1] = 1.0
    m = np.arange(size)[:, None]
    j = np.arange(size)[None, :]
    rest = m - j  # nodes left for the lower ranks when the rank-k child takes j
    valid = (j >= 1) & (rest >= 0)
    for d in range(2, max_depth + 2):
        below = value[d - 1]
        exact = np.full(size, NEG)  # best with exactly k children; k = 0 to start
        exact[0] = 0.0
        best, best_k = exact.copy(), np.zeros(size, dtype=int)
        for k in range(1, width + 1):
            scores = np.where(valid, exact[np.clip(rest, 0, None)] + a[k - 1] * below[j], NEG)
            split[d][k] = scores.argmax(1)
            exact = scores.max(1)
            better = exact > best
            best, best_k = np.where(better, exact, best), np.where(better, k, best_k)
        value[d][1:] = 1.0 + best[:-1]
        count[d] = best_k
    return TreeTable(value, count, split)


class LatencyProfile:
    """Seconds of one forward of n new tokens, measured on this machine (linear between measured sizes)."""

    def __init__(self, sizes: list[int], seconds: list[float]):
        self.sizes = list(sizes)
        self.seconds = list(np.maximum.accumulate(seconds))  # noise must not make a larger forward cheaper

    def __call__(self, n: float) -> float:
        return float(np.interp(n, self.sizes, self.seconds))

    @classmethod
    def measure(cls, runner, context: list[int], sizes: list[int], repeats: int = 2) -> "LatencyProfile":
        """Time forwards of each size on a private runner (same weights, own cache): the fastest of `repeats`."""
        probe = runner.fork()
        probe.prefill(context)
        base, seconds = probe.length, []
        for n in sizes:
            tokens = (context * (n // len(context) + 1))[:n]
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                probe.forward(tokens, [-1] * n)
                best = min(best, time.perf_counter() - start)
                probe.rollback(base)
            seconds.append(best)
        return cls(sizes, seconds)


_PROFILES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> {(layers, sizes): profile}


def latency(runner, context: list[int], max_tokens: int) -> LatencyProfile:
    """A runner's latency profile up to `max_tokens` tokens, measured once per model and layer subset."""
    sizes = sorted({1, 2, 4, 8, 16, 32, max_tokens} & set(range(1, max_tokens + 1)))
    per_model = _PROFILES.setdefault(runner.weights, {})
    key = (runner.describe().layer_subset, tuple(sizes))
    if key not in per_model:
        per_model[key] = LatencyProfile.measure(runner, context[-64:], sizes)
    return per_model[key]


def choose_budget(table: TreeTable, target: LatencyProfile, draft: LatencyProfile, max_nodes: int,
                  max_depth: int) -> tuple[int, int]:
    """The (nodes, depth) with the most expected tokens per second: (1 + expected accepted) over the time of one
    target forward of nodes + 1 tokens plus `depth` draft forwards of about nodes / depth tokens each."""
    best, choice = -1.0, (1, 1)
    for d in range(1, max_depth + 1):
        for n in range(d, max_nodes + 1):
            tokens = table.value[d + 1][n + 1]
            if not np.isfinite(tokens):
                continue
            rate = tokens / (target(n + 1) + d * draft(max(1.0, n / d)))
            if rate > best:
                best, choice = rate, (n, d)
    return choice
