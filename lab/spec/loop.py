"""The speculative loop shared by every drafter: propose a tree, score it in one forward, commit a path.

A drafter is an object with `propose(dec, root) -> Tree` (draft tokens hanging from `root`, the last
committed token, not yet in the target's cache) and optionally `accepted(dec, tree, verdict, logits)` to
learn from the outcome (`logits[0]` is the target's at the root, `logits[i + 1]` at node i). The loop is the same for chains and trees, for greedy and stochastic acceptance.
"""
from __future__ import annotations

from typing import Iterator, Protocol

import torch

from ..decoding import Decoding
from ..trace import Step
from .tree import Tree
from .verify import Verdict, verify_greedy, verify_stochastic


class Drafter(Protocol):
    def propose(self, dec: Decoding, root: int) -> Tree: ...


def score(dec: Decoding, root: int, tree: Tree) -> tuple[Verdict, torch.Tensor]:
    """One target forward over the root and the tree; verify; keep the accepted path in the cache."""
    tokens, parents = tree.with_root(root)
    logits = dec.target.forward(tokens, parents).logits
    if dec.greedy:
        verdict = verify_greedy(tree, logits)
    else:
        verdict = verify_stochastic(tree, dec.probs(logits), dec.rng)
    dec.target.keep([0] + [i + 1 for i in verdict.accepted])
    return verdict, logits


def speculate(dec: Decoding, drafter) -> Iterator[Step]:
    """Prefill, then propose -> score -> commit until the output is done."""
    root = dec.choose(dec.prefill())
    yield Step(committed=[root], origin=["plain"], forwards=0, prefill=True)
    while not dec.done:
        draft_forwards = getattr(drafter, "forwards", 0)
        tree = drafter.propose(dec, root)
        if len(tree) == 0:  # nothing to propose: a plain autoregressive step
            root = dec.choose(dec.target.decode(root))
            yield Step(committed=[root], origin=["plain"],
                       draft_forwards=getattr(drafter, "forwards", 0) - draft_forwards)
            continue
        verdict, logits = score(dec, root, tree)
        if hasattr(drafter, "accepted"):
            drafter.accepted(dec, tree, verdict, logits)
        committed, origin = verdict.committed(tree)
        root = verdict.bonus
        yield Step(committed=committed, origin=origin, proposed=list(tree.tokens), parents=list(tree.parents),
                   draft_probs=[round(p, 4) for p in tree.draft_probs], accepted=list(verdict.accepted),
                   bonus=verdict.bonus, draft_forwards=getattr(drafter, "forwards", 0) - draft_forwards,
                   info={"recovered": verdict.recovered})
