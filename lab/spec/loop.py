"""The speculative loop shared by every drafter: propose a tree, score it in one forward, commit a path.

A drafter is an object with `propose(dec, root) -> Tree` (draft tokens hanging from `root`, the last
committed token, not yet in the target's cache) and optionally `accepted(dec, tree, verdict, logits)` to
learn from the outcome (`logits[0]` is the target's at the root, `logits[i + 1]` at node i). Optional
attributes: `info` (a dict of what the drafter chose this step: exit layer, budget ...; copied into the
Step for the views), `wants_hidden` (then `accepted` also gets `hidden=`, every layer's hidden states of the
verification forward), `learns_from_plain_steps` (then `accepted` also sees the target's logits of steps
with no draft, as an empty tree). The loop is the same for chains and trees, greedy or stochastic.
"""
from __future__ import annotations

from typing import Iterator, Protocol

import torch

from ..decoding import Decoding
from ..runner import Forward
from ..trace import Step
from .tree import Tree
from .verify import Verdict, verify_greedy, verify_stochastic


class Drafter(Protocol):
    def propose(self, dec: Decoding, root: int) -> Tree: ...


def score(dec: Decoding, root: int, tree: Tree, hidden: bool = False) -> tuple[Verdict, Forward]:
    """One target forward over the root and the tree; verify; keep the accepted path in the cache."""
    tokens, parents = tree.with_root(root)
    out = dec.target.forward(tokens, parents, hidden=hidden)
    logits = out.logits
    if dec.greedy:
        verdict = verify_greedy(tree, logits)
    else:
        verdict = verify_stochastic(tree, dec.probs(logits), dec.rng)
    dec.target.keep([0] + [i + 1 for i in verdict.accepted])
    return verdict, out


def speculate(dec: Decoding, drafter) -> Iterator[Step]:
    """Prefill, then propose -> score -> commit until the output is done."""
    root = dec.choose(dec.prefill())
    yield Step(committed=[root], origin=["plain"], forwards=0, prefill=True)
    while not dec.done:
        draft_forwards = getattr(drafter, "forwards", 0)
        tree = drafter.propose(dec, root)
        if len(tree) == 0:  # nothing to propose: a plain autoregressive step
            logits = dec.target.decode(root)
            root = dec.choose(logits)
            if getattr(drafter, "learns_from_plain_steps", False):
                drafter.accepted(dec, tree, Verdict([], root), logits[None])
            yield Step(committed=[root], origin=["plain"],
                       draft_forwards=getattr(drafter, "forwards", 0) - draft_forwards)
            continue
        hidden = getattr(drafter, "wants_hidden", False)
        verdict, out = score(dec, root, tree, hidden)
        if hasattr(drafter, "accepted"):
            extra = {"hidden": out.hidden} if hidden else {}
            drafter.accepted(dec, tree, verdict, out.logits, **extra)
        committed, origin = verdict.committed(tree)
        root = verdict.bonus
        yield Step(committed=committed, origin=origin, proposed=list(tree.tokens), parents=list(tree.parents),
                   draft_probs=[round(p, 4) for p in tree.draft_probs], accepted=list(verdict.accepted),
                   bonus=verdict.bonus, draft_forwards=getattr(drafter, "forwards", 0) - draft_forwards,
                   info={"recovered": verdict.recovered, **dict(getattr(drafter, "info", {}))})
