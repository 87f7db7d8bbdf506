"""Grow a draft tree best-first: always expand the candidate the target is most likely to accept.

Shared by DySpec (a fixed node budget) and SpecMemo (a node budget derived from a memory budget).
A node's `value` is the product of the draft's probabilities along its path, DySpec's estimate of the
chance that the target accepts the whole path. A max-heap holds each node's next child as a candidate:

- T = 0: children are the draft's top tokens in order; a candidate's key is its exact value. Growth keeps
  the `nodes` best nodes found so far (a better newcomer evicts the worst leaf), so the final tree is
  exactly the `nodes` most valuable paths: what popping one node at a time would build.
- T > 0: children are drawn one at a time without replacement, each carrying the renormalised q it was
  drawn from; the key of a node's next draw is value x draft mass not drawn yet. A pop decides a draw
  before the token is seen (never afterwards from its value), so verification stays exact.

Growth goes in rounds, one draft forward per round over all the nodes the round added (T = 0) or
reserved a child of (T > 0): within a round pops follow the heap's order, and the tree deepens by one
level per round, so the draft cost is one forward per level, not one per node. With `exact=False` the
T = 0 tree is grown like the T > 0 one (a node without logits gets its child's slot reserved at the upper
bound `value`): no eviction, so no draft row is spent on a node that leaves the tree (SpecMemo).
A subclass may run nodes ahead of need (staged-sd's guessed chains): `_place` then reuses such a node when it
is chosen, and a chosen node whose logits are known is opened (T = 0) or drawn from (T > 0) at once, without
waiting for the next round's forward.
"""
from __future__ import annotations

import heapq
import itertools

import torch

from ..backends import Backend
from ..decoding import Decoding
from ..sampling import draw
from ..tree import Tree
from .drafter import Drafter
from .expand import TreeGrower


class _Children:
    """The children a node can still get: ranked top tokens (T = 0) or undrawn draft mass (T > 0)."""

    def __init__(self, dec: Decoding, logits: torch.Tensor, most: int):
        self.shown = logits.float().softmax(-1)  # the draft's own belief: values and draft_probs
        if dec.greedy:
            self.ranked = torch.topk(self.shown, min(most, self.shown.shape[-1])).indices.tolist()
        else:
            self.q = dec.probs(logits).float()
            self.left = self.q.clone()

    def next_mass(self) -> float:
        """Probability of the next child (T = 0) or the mass the next child is drawn from (T > 0)."""
        if hasattr(self, "ranked"):
            return float(self.shown[self.ranked[0]]) if self.ranked else 0.0
        return float(self.left.sum())

    def take(self, dec: Decoding) -> tuple[int, float, torch.Tensor | None]:
        """The next child: its token, its probability (for its value), the q it was drawn from."""
        if hasattr(self, "ranked"):
            token = self.ranked.pop(0)
            return token, float(self.shown[token]), None
        dist = self.left / self.left.sum()
        token = int(draw(dist, dec.rng))
        self.left[token] = 0.0
        return token, float(self.q[token]), dist


class BestFirstDrafter(Drafter):
    """Draft trees of at most `nodes` nodes and `max_depth` levels, grown by estimated acceptance.

    After each `propose`: `rounds` holds the keys popped in each round, in pop order; `values` the estimated
    acceptance of each proposed node; `draft_rows` how many nodes went through the draft model.
    """

    def __init__(self, runner: Backend, nodes: int = 24, max_depth: int = 8, exact: bool = True):
        self.runner, self.nodes, self.max_depth, self.exact = runner, nodes, max_depth, exact
        self.rounds: list[list[float]] = []
        self.values: list[float] = []
        self.draft_rows = 0

    @property
    def forwards(self) -> int:
        return self.runner.forwards

    def propose(self, dec: Decoding, root: int) -> Tree:
        self.rounds, self.values, self.draft_rows = [], [], 0
        limit = min(self.max_depth, dec.remaining)
        if self.nodes <= 0 or limit <= 0:
            return Tree()
        grower = TreeGrower(self.runner, dec.context)
        self._grower, self._dec, self._limit = grower, dec, limit
        self._value, self._depth, self._kids = {-1: 1.0}, {-1: 0}, {}
        self._heap, self._order = [], itertools.count()
        self._open(-1)
        tree = self._keep_best() if dec.greedy and self.exact else self._in_order()
        grower.done()
        return tree

    # -- shared moves ----------------------------------------------------------------------------------
    def _push(self, key: float, node: int) -> None:
        if key > 0.0:
            heapq.heappush(self._heap, (-key, next(self._order), node))

    def _open(self, node: int) -> None:
        """The node's logits are known: queue its first child."""
        self._kids[node] = _Children(self._dec, self._grower.logits[node], self.nodes)
        self._push(self._value[node] * self._kids[node].next_mass(), node)

    def _child(self, node: int) -> int:
        """Take the node's next child into the tree and queue the node's following child."""
        kids = self._kids[node]
        token, prob, q = kids.take(self._dec)
        child = self._place(token, node, float(kids.shown[token]), q)
        self._value[child], self._depth[child] = self._value[node] * prob, self._depth[node] + 1
        self._push(self._value[node] * kids.next_mass(), node)
        return child

    def _place(self, token: int, parent: int, prob: float, q: torch.Tensor | None) -> int:
        """Put a chosen child into the grower's tree (a subclass may reuse a node the draft has already run)."""
        return self._grower.add(token, parent, prob, q)

    def _ready(self, node: int) -> bool:
        """Are the node's draft logits known already? Never for a node just placed, unless `_place` reused one."""
        return node in self._grower.logits

    def _run(self, nodes: list[int]) -> None:
        self._grower.run(nodes)
        self.draft_rows += len(nodes)

    # -- T = 0: keep the best `nodes` found, one level per round ------------------------------------------
    def _keep_best(self) -> Tree:
        kept: list[int] = []
        while True:
            self.rounds.append([])
            added: list[int] = []
            while self._heap and (len(kept) < self.nodes or -self._heap[0][0] > self._value[self._worst(kept)]):
                key, _, node = heapq.heappop(self._heap)
                if node >= 0 and node not in kept:  # its parent's slot was taken by a better node
                    continue
                child = self._child(node)
                self.rounds[-1].append(-key)
                kept.append(child)
                if not self._ready(child):
                    added.append(child)
                elif self._depth[child] < self._limit:
                    self._open(child)  # its logits came with an earlier forward: its children compete now
                if len(kept) > self.nodes:
                    worst = self._worst(kept)
                    kept.remove(worst)
                    if worst in added:
                        added.remove(worst)
            grow = [n for n in added if self._depth[n] < self._limit]
            if not grow:
                break
            self._run(grow)
            for n in grow:
                self._open(n)
        return self._subtree(kept)

    def _worst(self, kept: list[int]) -> int:
        """The least valuable kept node; on a tie the latest, so that a parent never leaves before its child."""
        return min(kept, key=lambda n: (self._value[n], -n))

    def _subtree(self, kept: list[int]) -> Tree:
        """The tree of the `kept` nodes, in the order they were placed (siblings in the order they were drawn)."""
        tree, index = Tree(), {-1: -1}
        full = self._grower.tree
        for n in kept:
            index[n] = tree.add(full.tokens[n], index[full.parents[n]], full.draft_probs[n], full.q[n])
            self.values.append(self._value[n])
        return tree

    # -- T > 0 (or not exact): children in heap order; a node without logits gets its child reserved ----
    def _in_order(self) -> Tree:
        budget, reserved = self.nodes, []
        while True:
            self.rounds.append([])
            for node in reserved:  # their logits just came: make the draws decided last round
                self._kids[node] = _Children(self._dec, self._grower.logits[node], self.nodes)
                self._after(self._child(node))
            reserved = []
            while self._heap and budget > 0:
                key, _, node = heapq.heappop(self._heap)
                self.rounds[-1].append(-key)
                budget -= 1
                if node not in self._kids and self._ready(node):  # run by an earlier forward: draw now
                    self._kids[node] = _Children(self._dec, self._grower.logits[node], self.nodes)
                if node in self._kids:
                    self._after(self._child(node))
                else:
                    reserved.append(node)  # decided now, drawn once the draft has run it
            if not reserved:
                break
            self._run(reserved)
        return self._subtree([n for n in self._value if n >= 0])  # placed nodes, in placement order

    def _after(self, child: int) -> None:
        """A drawn child may get children of its own: its first draw's key is its value (all mass undrawn)."""
        if self._depth[child] < self._limit:
            self._push(self._value[child], child)
