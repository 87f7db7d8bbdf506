"""Lookahead decoding: Jacobi trajectories feed an n-gram pool; one forward both looks ahead and verifies.

Paper: "Break the Sequential Dependency of LLM Inference Using Lookahead Decoding" (Fu et al., 2024).
The one idea: Jacobi iteration rarely puts a right token at the right position, but the tokens it generates
along the way are good n-grams. A 2-D lookahead window keeps the last N - 1 Jacobi iterates of W future
positions; each forward adds one more iterate, and every column's trajectory (one token per level, plus the
new output) is an n-gram, stored in a pool keyed by its first token. In the same forward a verification
branch checks up to G pooled n-grams that start with the current token. The two branches cannot see each
other, so the verified tokens get exactly the logits a plain tree forward would give them.

Attention in the lookahead branch (level j, column c sits at position root + j + c): the first level is a
chain that starts at the root; a token of a later level sees the first level up to its column and the
tokens of its own column in the levels before it, so each column is one contiguous trajectory.

How it departs from the paper:
- Window tokens start as random context tokens and every level is forwarded from the first step; n-grams
  are collected once every level holds the target's outputs (the paper grows the levels during warm-up).
- The lookahead branch always takes the target's argmax, also at temperature > 0 (n-grams are only
  proposals; the verification branch samples exactly, verifying them as fixed candidates).
- After several tokens are accepted the window is kept as is: it is only a source of n-grams.
- The n-grams sharing a prefix are merged into one tree, so a shared prefix is forwarded once.
"""
from __future__ import annotations

import torch

from ...decoding import Decoding
from ...errors import LabError
from ...registry import method
from ...tree import Tree
from ..drafter import Drafter
from ..jacobi_window import fill_from_context
from ..loop import speculate
from ..verify import Verdict


class NgramPool:
    """n-grams keyed by their first token: at most `per_key` continuations each, the most recent first."""

    def __init__(self, per_key: int):
        self.per_key = per_key
        self.table: dict[int, list[tuple[int, ...]]] = {}

    def add(self, ngram: list[int]) -> None:
        first, rest = int(ngram[0]), tuple(int(t) for t in ngram[1:])
        known = self.table.setdefault(first, [])
        if rest in known:
            known.remove(rest)
        known.insert(0, rest)
        del known[self.per_key:]

    def continuations(self, token: int) -> list[tuple[int, ...]]:
        return list(self.table.get(int(token), []))

    def __len__(self) -> int:
        return sum(len(v) for v in self.table.values())


def candidate_tree(continuations: list[tuple[int, ...]], depth: int) -> Tree:
    """The verification branch: the continuations (cut to `depth`) merged into a tree hanging from the root."""
    tree, node_of = Tree(), {}
    for continuation in continuations:
        parent = -1
        for token in continuation[:depth]:
            if (parent, token) not in node_of:
                node_of[(parent, token)] = tree.add(token, parent)
            parent = node_of[(parent, token)]
    return tree


def combined_inputs(root: int, tree: Tree, levels: list[list[int]]) -> tuple[list[int], torch.Tensor, list[int], dict]:
    """Tokens, who-sees-whom mask and position offsets (from the root's position) of the combined forward.

    Rows: the root, the tree's nodes (node i at row i + 1), then the lookahead window level by level (the
    root stands for the first level's first column). Returns also `row_of[(level, column)]`.
    """
    tokens, parents = tree.with_root(root)
    offsets = [0] + tree.depths()
    row_of = {(0, 0): 0}
    width = len(levels[0])
    for j, level in enumerate(levels):
        for c in range(width):
            if (j, c) != (0, 0):
                row_of[(j, c)] = len(tokens)
                tokens.append(int(level[c]))
                offsets.append(j + c)
    k = len(tokens)
    among = torch.zeros(k, k, dtype=torch.bool)
    for i, p in enumerate(parents):  # the verification branch: root, ancestors, self
        among[i, i] = True
        if p >= 0:
            among[i] |= among[p]
    for (j, c), row in row_of.items():  # the lookahead branch: first level up to c, then its own column
        among[row, [row_of[(0, i)] for i in range(c + 1)]] = True
        among[row, [row_of[(i, c)] for i in range(1, j + 1)]] = True
    return tokens, among, offsets, row_of


class Lookahead(Drafter):
    """The 2-D window and the n-gram pool: proposes the pooled n-grams, lays the window out beside them."""

    learns_from_plain_steps = True  # the window advances with every forward, drafts or not

    def __init__(self, window: int, ngram: int, candidates: int, seed: int = 0):
        if window < 1 or ngram < 2 or candidates < 0:
            raise LabError(f"lookahead needs window >= 1, ngram >= 2 and candidates >= 0; got window={window}, "
                           f"ngram={ngram}, candidates={candidates}")
        self.window, self.ngram, self.candidates = window, ngram, candidates
        self.pool = NgramPool(max(candidates, 1))
        self.levels: list[list[int]] = []
        self.steps = 0
        self.filler = torch.Generator().manual_seed(seed)
        self.info: dict = {}

    def propose(self, dec: Decoding, root: int) -> Tree:
        if not self.levels:  # N - 1 levels of W random context tokens
            self.levels = [fill_from_context(dec.context, self.window, self.filler) for _ in range(self.ngram - 1)]
        self.now = [[root] + self.levels[0][1:]] + self.levels[1:]
        self.pooled = len(self.pool)  # n-grams the candidates were chosen from
        return candidate_tree(self.pool.continuations(root)[: self.candidates], min(self.ngram - 1, dec.remaining))

    def layout(self, dec: Decoding, root: int, tree: Tree):
        tokens, among, offsets, self.row_of = combined_inputs(root, tree, self.now)
        start = dec.target.length
        limit = getattr(dec.lab, "context_length", None) or 1 << 30
        self.info = {"lookahead": len(tokens) - len(tree) - 1, "pool": self.pooled}
        return tokens, among, [min(start + o, limit - 1) for o in offsets]

    def accepted(self, dec: Decoding, tree: Tree, verdict: Verdict, logits: torch.Tensor, taps=None) -> None:
        rows = [self.row_of[(self.ngram - 2, c)] for c in range(self.window)]
        self.advance(self.now, logits[rows].argmax(-1).tolist())

    def advance(self, levels: list[list[int]], outputs: list[int]) -> None:
        """Collect each column's trajectory as an n-gram, then drop the oldest level and add the outputs."""
        if self.steps >= self.ngram - 2:  # every level past the first already holds the target's outputs
            for c in range(self.window):
                self.pool.add([level[c] for level in levels] + [outputs[c]])
        self.levels = levels[1:] + [outputs]
        self.steps += 1


@method("lookahead", family="speculative", lossless=True, training_free=True,
        paper="Break the Sequential Dependency of LLM Inference Using Lookahead Decoding",
        departures="the window starts as random context tokens with every level forwarded from the first step; the "
                   "lookahead branch takes the argmax also at T > 0; the window is kept after multi-token "
                   "acceptance; n-grams sharing a prefix are merged into one tree")
def lookahead(dec, *, window: int = 5, ngram: int = 3, candidates: int = 5):
    """Lookahead decoding: a Jacobi window fills an n-gram pool; pooled n-grams are verified in the same forward."""
    yield from speculate(dec, Lookahead(window, ngram, candidates))
