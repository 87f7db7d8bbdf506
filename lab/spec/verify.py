"""Verify a draft tree against the target's distributions: which path is accepted, and the bonus token.

Greedy: follow the children that equal the target's argmax (token identity with greedy decoding).
Stochastic: at each node, try its children in order; child c (drawn from q_c) is accepted with
probability min(1, p(c) / q_c(c)); on rejection the target distribution becomes the residual
norm(max(p - q_c, 0)) for the next child ("Fast Inference from Transformers via Speculative Decoding";
for several children, SpecInfer's multi-round rejection). When no child is accepted the next token is
drawn from what is left (recovered); after an accepted leaf it is drawn from p (bonus). This keeps the
target distribution exactly when the children were drawn i.i.d. from q, or are fixed tokens (q one-hot).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..sampling import draw
from .tree import Tree


@dataclass
class Verdict:
    """`accepted`: node indices of the accepted root-to-node path; `bonus`: the target's next token."""

    accepted: list[int]
    bonus: int
    recovered: bool = False

    @property
    def tokens(self) -> int:
        return len(self.accepted) + 1

    def committed(self, tree: Tree) -> tuple[list[int], list[str]]:
        """Tokens to commit (accepted drafts, then the bonus) and their origins."""
        return ([tree.tokens[i] for i in self.accepted] + [self.bonus],
                ["draft"] * len(self.accepted) + ["bonus"])


def verify_greedy(tree: Tree, logits: torch.Tensor) -> Verdict:
    """Longest path whose tokens equal the target's argmax. `logits[0]` is the root's, `logits[i+1]` node i's."""
    best = logits.argmax(-1).tolist()
    children: dict[int, list[int]] = {}
    for i, p in enumerate(tree.parents):
        children.setdefault(p, []).append(i)
    node, path = -1, []
    while True:
        want = best[node + 1]
        nxt = next((c for c in children.get(node, []) if tree.tokens[c] == want), None)
        if nxt is None:
            return Verdict(path, int(want))
        path.append(nxt)
        node = nxt


def verify_stochastic(tree: Tree, probs: torch.Tensor, rng: torch.Generator | None) -> Verdict:
    """Multi-round rejection sampling down the tree. `probs[i]` is the target distribution at row i."""
    children: dict[int, list[int]] = {}
    for i, p in enumerate(tree.parents):
        children.setdefault(p, []).append(i)
    node, path = -1, []
    while True:
        p = probs[node + 1].float()
        kids = children.get(node, [])
        accepted = None
        for c in kids:
            token = tree.tokens[c]
            q = tree.q[c]
            q_token = float(q[token]) if q is not None else 1.0
            p_token = float(p[token])
            u = float(torch.rand((), generator=rng))
            if q_token > 0 and u * q_token < p_token:  # u < p/q, without dividing
                accepted = c
                break
            if q is None:
                residual = p.clone()
                residual[token] = 0.0
            else:
                residual = (p - q.to(p.device).float()).clamp_min(0.0)
            total = float(residual.sum())
            if total <= 0.0:  # p == q on this node: rejection had probability 0; keep p
                continue
            p = residual / total
        if accepted is None:
            return Verdict(path, int(draw(p, rng)), recovered=bool(kids))
        path.append(accepted)
        node = accepted
