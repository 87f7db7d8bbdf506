"""A token tree as data: tokens, parents, draft probabilities; its attention mask, positions and paths.

Medusa's buffers and vLLM's tree attention derive the same things from a list of choices. Here node i
holds `tokens[i]`; `parents[i]` is another node's index, or -1 for the root: the last committed token,
which is not part of the tree but is forwarded with it. A chain is the tree with parents i - 1.
`buffers(parents, device)` builds what a forward and a verifier need of a shape once, on the device.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch


def depths(parents: list[int]) -> list[int]:
    """Depth of each node: 1 for a child of the root. Parents must come before their children."""
    out: list[int] = []
    for i, p in enumerate(parents):
        if p >= i:
            raise ValueError(f"node {i} has parent {p}: parents must come first")
        out.append(1 if p < 0 else out[p] + 1)
    return out


def ancestor_mask(parents: list[int]) -> torch.Tensor:
    """Bool [n, n]: entry (i, j) is True when node j is node i or one of its ancestors."""
    n = len(parents)
    mask = torch.eye(n, dtype=torch.bool)
    for i, p in enumerate(parents):
        if p >= 0:
            mask[i] |= mask[p]
    return mask


def chain(n: int) -> list[int]:
    """Parents of a chain of n nodes under the root."""
    return list(range(-1, n - 1))


@dataclass(frozen=True)
class TreeBuffers:
    """A shape's tensors on one device, for the forward of the root plus n nodes (row 0 is the root).

    `among` [n+1, n+1]: row i sees row j (j is i or an ancestor); `offsets` [n+1]: position of each row after
    the root's; `parents` [n] (-1: the root); `depth` [n]; `earlier_sibling` [n, n]: node j is an earlier
    sibling of node i (verifiers take the first child that passes); `children` [n+1]: how many children each
    row has; `rank` [n]: how many earlier siblings each node has.
    """

    among: torch.Tensor
    offsets: torch.Tensor
    parents: torch.Tensor
    depth: torch.Tensor
    earlier_sibling: torch.Tensor
    children: torch.Tensor
    rank: torch.Tensor

    @property
    def nodes(self) -> int:
        return int(self.parents.shape[0])


@functools.lru_cache(maxsize=256)
def _buffers(parents: tuple[int, ...], device: str) -> TreeBuffers:
    rows = [-1] + [p + 1 for p in parents]
    n = len(parents)
    among = ancestor_mask(rows)
    among[1:, 0] = True
    depth = torch.tensor(depths(list(parents)), dtype=torch.long)
    parent = torch.tensor(parents, dtype=torch.long)
    same = parent[:, None] == parent[None, :]
    earlier = same & (torch.arange(n)[None, :] < torch.arange(n)[:, None])
    children = torch.zeros(n + 1, dtype=torch.long).index_add_(0, parent + 1, torch.ones(n, dtype=torch.long))
    rank = earlier.sum(1)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), depth])
    return TreeBuffers(*(t.to(device) for t in (among, offsets, parent, depth, earlier, children, rank)))


def buffers(parents: list[int], device: torch.device | str = "cpu") -> TreeBuffers:
    """The shape's buffers on `device`, built once per shape and device (a static tree's cost is paid once)."""
    return _buffers(tuple(int(p) for p in parents), str(device))


@dataclass
class Tree:
    """Draft tokens hanging from the root, with what the drafter knew about each.

    `draft_probs[i]` is the drafter's probability of node i given its parent (1.0 if it does not say).
    `q[i]`, when given, is the whole draft distribution node i was sampled from: stochastic
    verification needs it. Deterministic drafters leave it None (a point mass on the token).
    `scored` is how many nodes go through the target's forward (all by default); nodes past it are checked
    against their parent's row only (PEARL's first tokens drafted while the target ran) and have no row of
    their own, so the target gives no token after them.
    """

    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    draft_probs: list[float] = field(default_factory=list)
    q: list[torch.Tensor | None] = field(default_factory=list)
    scored: int | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    def add(self, token: int, parent: int = -1, prob: float = 1.0, q: torch.Tensor | None = None) -> int:
        """Append a node and return its index."""
        self.tokens.append(int(token))
        self.parents.append(int(parent))
        self.draft_probs.append(float(prob))
        self.q.append(q)
        return len(self.tokens) - 1

    @classmethod
    def from_chain(cls, tokens: list[int], probs: list[float] | None = None,
                   q: list[torch.Tensor | None] | None = None) -> "Tree":
        n = len(tokens)
        return cls(list(map(int, tokens)), chain(n), list(probs or [1.0] * n), list(q or [None] * n))

    @property
    def rows(self) -> int:
        """Nodes that go through the target's forward."""
        return len(self) if self.scored is None else self.scored

    def children(self, node: int) -> list[int]:
        """Children of a node (-1 for the root), in the order they were added."""
        return [i for i, p in enumerate(self.parents) if p == node]

    def depths(self) -> list[int]:
        return depths(self.parents)

    def path(self, node: int) -> list[int]:
        """Node indices from the root's child down to `node`."""
        out = []
        while node >= 0:
            out.append(node)
            node = self.parents[node]
        return out[::-1]

    def leaves(self) -> list[int]:
        has_child = set(p for p in self.parents if p >= 0)
        return [i for i in range(len(self)) if i not in has_child]

    def paths(self) -> list[list[int]]:
        """Every root-to-leaf path, as node indices (Medusa's retrieve indices)."""
        return [self.path(leaf) for leaf in self.leaves()]

    def with_root(self, root: int) -> tuple[list[int], list[int]]:
        """Tokens and parents of the forward pass: the root first, node i at row i + 1 (scored nodes only)."""
        n = self.rows
        return [int(root)] + self.tokens[:n], [-1] + [p + 1 for p in self.parents[:n]]
