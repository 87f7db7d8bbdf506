"""Token Recycling: draft trees from the target's own discarded candidates.

Paper: "Turning Trash into Treasure: Accelerating Inference of Large Language Models with Token Recycling"
(Luo et al., 2024). Every verification forward yields the target's top-k next tokens at the root and at
every draft node, accepted or not. Instead of throwing them away, an adjacency matrix [V, k] keeps, for
each token, the top-k the target most recently predicted after it. The matrix belongs to the model, not to
one generation: it persists across generations, so later prompts start with what earlier ones recycled. The
next draft tree is the paper's static tree of 80 nodes (depth 6, wide near the root, a deep spine of first
choices), filled by a breadth-first walk through the matrix from the last committed token. No draft model,
no corpus, under 2 MB of state.
"""
from __future__ import annotations

import threading
import weakref

import torch

from ...decoding import Decoding
from ...errors import LabError
from ...registry import method
from ...tree import Tree
from ..drafter import Drafter
from ..loop import speculate
from ..verify import Verdict

# Token Recycling's static tree: how many children each node has, level by level, breadth first from the root
# (the children of a node are its matrix row's ranks 0, 1, ...). 80 nodes, 6 levels.
PAPER_TREE = (
    (8,),
    (8, 4, 3, 2, 1, 1, 1, 1),
    (8, 3, 2, 1, 1, 1, 1, 1, 2, 1, 0, 0, 1, 0, 0, 1, 0, 1, 1, 0, 0),
    (5, 2, 1, 1, 1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 1, 0, 0),
    (3, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 1, 0, 0),
    (2, 0, 0, 1, 0, 0, 0, 0),
    (0, 0, 0),
)


def paper_template(nodes: int = 80) -> list[tuple[int, int]]:
    """The first `nodes` nodes of the paper's tree (breadth first, so parents come first) as (parent slot,
    rank) pairs; parent -1 is the root."""
    counts = [c for level in PAPER_TREE for c in level]  # node 0 is the root, node n the template's slot n - 1
    template = [(n - 1, rank) for n, c in enumerate(counts) for rank in range(c)]
    return template[:nodes]


_MATRICES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model weights -> {(V, k): [V, k] matrix}
_LOCK = threading.Lock()


def model_matrix(weights, vocab_size: int, k: int) -> torch.Tensor:
    """The adjacency matrix of a model (shared by every generation on its weights); -1: never predicted yet."""
    with _LOCK:
        per_model = _MATRICES.setdefault(weights, {})
        if (vocab_size, k) not in per_model:
            per_model[(vocab_size, k)] = torch.full((vocab_size, k), -1, dtype=torch.long)
        return per_model[(vocab_size, k)]


class TokenRecycler(Drafter):
    """The adjacency matrix of recycled candidates and the static tree it fills."""

    def __init__(self, vocab_size: int, k: int = 8, nodes: int = 80, successors: torch.Tensor | None = None):
        self.template = paper_template(nodes)
        if k <= max((rank for _, rank in self.template), default=0):
            raise LabError(f"token-recycling: the tree uses ranks up to {max(r for _, r in self.template)}, "
                           f"so k must be larger; got k={k}")
        self.k = k
        self.successors = successors if successors is not None else torch.full((vocab_size, k), -1, dtype=torch.long)
        self.root = -1
        self.learns_from_plain_steps = True  # a draft-less step still fills the root's row

    def propose(self, dec: Decoding, root: int) -> Tree:
        """Breadth-first over the template: slot (parent, rank) takes the rank-th successor of its parent."""
        self.root = root
        tree = Tree()
        placed = {-1: -1}  # template slot -> tree node
        token_of = {-1: root}
        depth = {-1: 0}
        table = self.successors.numpy()  # a view on the host matrix: indexing it costs ~0.1 us, a tensor's ~5 us
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


def recycler_for(dec: Decoding, k: int = 8, nodes: int = 80, persist: bool = True) -> TokenRecycler:
    """A TokenRecycler on the model's own matrix (`persist`), or on a fresh one."""
    shared = model_matrix(dec.target.weights, dec.target.vocab_size, k) if persist else None
    return TokenRecycler(dec.target.vocab_size, k, nodes, shared)


@method("token-recycling", family="speculative", lossless=True, training_free=True,
        paper="Turning Trash into Treasure: Accelerating Inference of Large Language Models with Token Recycling",
        departures="none: the paper's static 80-node tree and a [V, 8] matrix kept per model across generations "
                   "(persist=false starts each generation empty)")
def token_recycling(dec, *, k: int = 8, nodes: int = 80, persist: bool = True):
    """Token Recycling: the target's past top-k candidates, kept per model in a [V, k] matrix, fill a static tree."""
    yield from speculate(dec, recycler_for(dec, k, nodes, persist))
