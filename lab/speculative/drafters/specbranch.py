"""SpecBranch: draft a chain while it is safe, and branch where a rejection is likely.

Paper: "Speculative Decoding via Hybrid Drafting and Rollback-Aware Branch Parallelism". The idea it adds:
like a processor's branch predictor, hedge against the likely rejection instead of waiting for it. The
draft length adapts to a hybrid signal: an implicit one, the draft model's confidence (its top
probability), and an explicit one, an n-gram continuation found in the context (what the target itself
wrote before). The chain goes on while the draft is confident and the n-gram does not contradict it. At
the first uncertain position the draft branches into its top alternatives (plus the n-gram's token when
it disagrees), and continues each branch for a few tokens, so that a rejection at the branch point still
has a ready continuation instead of a rollback. The whole tree is verified in one target forward.

The branch decision depends only on the draft's logits and the context, never on a drawn token, so at
T > 0 the chain tokens are draws from the draft's q (carrying it), the branch children are drawn from q
without replacement (each carrying its conditional q), the n-gram's token is a fixed candidate (q=None)
tried last, and the verification keeps the target's distribution.

Departures from the paper: the paper runs draft and target in parallel (branches are drafted while the
target verifies) and reuses target features for the explicit signal; here drafting and verification
alternate, the explicit signal is prompt lookup (lab/speculative/drafters/pld.py's `lookup`), and the draft is by
default the lab's default draft (FastDraft on the default model).
"""
from __future__ import annotations

import torch

from ...backends import Backend
from ...decoding import Decoding
from ...registry import method
from ...sampling import draw
from ...tree import Tree
from ..drafter import Drafter
from ..expand import TreeGrower
from ..loop import speculate
from .pld import lookup


class BranchDrafter(Drafter):
    """A confident chain, then `branches` alternatives at the first doubt, each continued `tail` tokens.

    After each `propose`, `branch_depth` is the depth of the branch point's children (0 if no branch).
    """

    def __init__(self, runner: Backend, max_length: int = 8, confidence: float = 0.6, branches: int = 2,
                 tail: int = 2, max_ngram: int = 3, min_ngram: int = 1):
        self.runner, self.max_length, self.confidence = runner, max_length, confidence
        self.branches, self.tail = branches, tail
        self.max_ngram, self.min_ngram = max_ngram, min_ngram
        self.branch_depth = 0

    @property
    def forwards(self) -> int:
        return self.runner.forwards

    def certain(self, logits: torch.Tensor, hint: list[int]) -> bool:
        """Hybrid signal: the draft is confident and the context's n-gram (if any) predicts the same token."""
        shown = logits.float().softmax(-1)
        top = int(shown.argmax())
        return float(shown[top]) >= self.confidence and (not hint or hint[0] == top)

    def _next(self, dec: Decoding, grower: TreeGrower, node: int) -> int:
        """Continue `node` by one draft token (argmax, or a draw from q carrying q)."""
        logits = grower.logits[node]
        shown = logits.float().softmax(-1)
        token = dec.choose(logits)
        return grower.add(token, node, float(shown[token]), None if dec.greedy else dec.probs(logits).float())

    def _branch(self, dec: Decoding, grower: TreeGrower, node: int, hint: list[int]) -> list[int]:
        """The branch point's children: the draft's top tokens / draws without replacement, then the n-gram's."""
        logits = grower.logits[node]
        shown = logits.float().softmax(-1)
        kids = []
        if dec.greedy:
            for token in torch.topk(shown, min(self.branches, shown.shape[-1])).indices.tolist():
                kids.append(grower.add(token, node, float(shown[token])))
        else:
            rest = dec.probs(logits).float()
            for _ in range(self.branches):
                if float(rest.sum()) <= 0.0:
                    break
                dist = rest / rest.sum()
                token = int(draw(dist, dec.rng))
                kids.append(grower.add(token, node, float(shown[token]), dist))
                rest = rest.clone()
                rest[token] = 0.0
        taken = {grower.tree.tokens[k] for k in kids}
        if hint and hint[0] not in taken:
            kids.append(grower.add(hint[0], node, float(shown[hint[0]])))
        return kids

    def propose(self, dec: Decoding, root: int) -> Tree:
        self.branch_depth = 0
        limit = min(self.max_length, dec.remaining)
        if limit <= 0:
            return Tree()
        grower = TreeGrower(self.runner, dec.context)
        node, path = -1, []
        while len(path) < limit:
            hint = lookup(dec.context + path, self.max_ngram, self.min_ngram, 1)
            if not self.certain(grower.logits[node], hint):
                frontier = self._branch(dec, grower, node, hint)
                self.branch_depth = len(path) + 1
                for _ in range(min(self.tail, limit - len(path) - 1)):
                    grower.run(frontier)
                    frontier = [self._next(dec, grower, f) for f in frontier]
                break
            node = self._next(dec, grower, node)
            path.append(grower.tree.tokens[node])
            if len(path) < limit:
                grower.run([node])
        return grower.done()


@method("specbranch", family="speculative", lossless=True, training_free=True,
        paper="Speculative Decoding via Hybrid Drafting and Rollback-Aware Branch Parallelism",
        departures="drafting and verification alternate (the paper drafts branches while the target verifies); the "
                   "explicit signal is prompt lookup, not target features; the default draft is the lab's trained FastDraft on the default model (four layers of its shape, not a separate small model) and the target's first half of layers, untrained, on other models")
def specbranch(dec: Decoding, *, max_length: int = 8, confidence: float = 0.6, branches: int = 2, tail: int = 2,
               max_ngram: int = 3, min_ngram: int = 1, draft: str = "default"):
    """Chain while draft confidence and n-gram agree; branch into alternatives at the first doubt."""
    drafter = BranchDrafter(dec.lab.draft(draft), max_length, confidence, branches, tail, max_ngram, min_ngram)
    for step in speculate(dec, drafter):
        if step.proposed:
            step.info["branch_depth"] = drafter.branch_depth
        yield step
