"""SpecBranch: draft while the target verifies, and hedge the verdict with branches, so a rollback waits for nothing.

Paper: "Speculative Decoding via Hybrid Drafting and Rollback-Aware Branch Parallelism" (Shen et al., 2025).
The idea it adds: like a processor's branch predictor, speculate on the verification outcome instead of waiting
for it. The draft length adapts to a hybrid signal: the draft model's confidence (its top probability) and an
n-gram continuation found in the context (what the target itself wrote before); a chain goes on while the draft
is confident and the n-gram does not contradict it, and stops at the first doubt. While the target verifies that
chain (lab/speculative/overlap.py's pipeline, shared with PEARL: a thread beside the target's forward, on a GPU a
CUDA stream of its own), the draft prepares for both verdicts:
- acceptance: at the doubt after the chain it branches into its top alternatives (plus the n-gram's token when it
  disagrees) and continues each (`tail` tokens, then while sure); their first tokens hang below the chain's last
  node, unscored, and the target's last row checks them. The branch it accepts goes on as the next chain;
- rejection: at the chain's weakest position (lowest draft probability) it takes the draft's top alternatives to
  the chain's token (plus the n-gram's) and drafts a chain after each. If the target accepts exactly the chain up
  to there and its correction is one of them, that branch's chain is the next round's draft.
Only when neither matches does the next round draft its chain first (`sequential` draft forwards), as plain
speculative decoding does after every verdict.

Exactness. Every proposal is a draft for the context that actually results: the branches at the doubt are drawn
without replacement from q at T > 0 (each carrying its conditional q; the n-gram's token a fixed candidate tried
last) and verified by the shared exact rejection; a branch for the rejection point is keyed by a token fixed
before the verdict (a top alternative, never a draw), and the chain after it is drawn from q given exactly
context + accepted prefix + that token. Its draws come from the generator before the verification's, and the
correction depends only on the target, the rejected token and the verification's uniforms, so given "the
correction equals the key" the chain is still a fresh draft from that context. (A chain used under the wrong
key would still be verified exactly, only rejected more: the tests check the context, not just the tokens.)
`parallel=False` runs the same
rounds with the draft before the target's forward (same tokens), to compare.

Departures from the paper: the explicit signal is prompt lookup (lab/speculative/drafters/pld.py's `lookup`), not
target features; branches hedge one rejection point per round (the weakest position); the draft runs in a thread
and a second CUDA stream on the same GPU (the paper: parallel processes); the default draft is the lab's default.
"""
from __future__ import annotations

import torch

from ...backends import Backend
from ...decoding import Decoding
from ...errors import LabError
from ...registry import method
from ..expand import Draft, TreeGrower, draft_token, sample_children, top_children
from ..loop import speculate
from ..overlap import AheadDrafter, Pace
from .pld import lookup


class BranchAhead(AheadDrafter):
    """Hybrid chains; branches at the doubt (checked by the target) and at the weakest position (kept for its
    correction), both drafted beside the target's forward."""

    def __init__(self, dec: Decoding, runner: Backend, max_length: int = 8, confidence: float = 0.6,
                 branches: int = 2, tail: int = 2, max_ngram: int = 3, min_ngram: int = 1, parallel: bool = True):
        super().__init__(runner, Pace(), parallel)
        self.dec, self.max_length, self.confidence = dec, max_length, confidence
        self.branches, self.tail, self.max_ngram, self.min_ngram = branches, tail, max_ngram, min_ngram
        self.prepared: dict[int, list[Draft]] = {}  # correction token -> the chain drafted after it
        self.weak = -1  # the pending position whose rejection `prepared` hedges
        self.sequential = 0  # draft forwards of this round spent before the target's forward

    def hint(self, context: list[int]) -> list[int]:
        return lookup(context, self.max_ngram, self.min_ngram, 1)

    def certain(self, logits: torch.Tensor, hint: list[int]) -> bool:
        """Hybrid signal: the draft is confident and the context's n-gram (if any) predicts the same token."""
        shown = logits.float().softmax(-1)
        top = int(shown.argmax())
        return float(shown[top]) >= self.confidence and (not hint or hint[0] == top)

    def extend(self, grower: TreeGrower, prefixes: list[list[int]], seqs: list[list[Draft]], tails: list[int],
               limit: int, floor: int) -> None:
        """Grow each sequence (after its prefix; its last node `tails[j]`) one draft forward per level: always up
        to `floor` tokens, then while the hybrid signal is sure, up to `limit`."""
        live = list(range(len(seqs)))
        while live:
            live = [j for j in live if len(seqs[j]) < limit]
            grower.run([tails[j] for j in live if tails[j] not in grower.logits])
            going = []
            for j in live:
                logits = grower.logits[tails[j]]
                if len(seqs[j]) >= floor and not self.certain(logits, self.hint(prefixes[j] + [t for t, _, _ in seqs[j]])):
                    continue
                token = draft_token(self.dec, logits)
                seqs[j].append(token)
                tails[j] = grower.add(token[0], tails[j], token[1], token[2])
                going.append(j)
            live = going

    def alternatives(self, logits: torch.Tensor, hint: list[int]) -> list[Draft]:
        """Branches at a doubt: the draft's top tokens (T = 0) or draws without replacement from q, each with its
        conditional q (T > 0); then the n-gram's token as a fixed candidate when it is not among them."""
        dec, shown = self.dec, logits.float().softmax(-1)
        if dec.greedy:
            kids = [(t, p, None) for t, p in top_children(logits, min(self.branches, len(shown)))]
        else:
            drawn = sample_children(dec.probs(logits), self.branches, dec.rng, replacement=False)
            kids = [(t, float(shown[t]), q) for t, q in drawn]
        if hint and hint[0] not in {t for t, _, _ in kids}:
            kids.append((hint[0], float(shown[hint[0]]), None))
        return kids

    def chain(self, runner: Backend, context: list[int], limit: int) -> list[Draft]:
        """The hybrid chain after `context`: drafted while sure, at most `limit` tokens."""
        grower = TreeGrower(runner, context)
        seqs = [[]]
        self.extend(grower, [context], seqs, [-1], limit, 0)
        grower.done()
        return seqs[0]

    def draft(self, context: list[int], room: int) -> list[list[Draft]]:
        """Beside the target: after the pending chain, one sure sequence, or at a doubt its branches."""
        grower = TreeGrower(self.runner, context)
        hint = self.hint(context)
        if self.certain(grower.root_logits, hint):
            seqs, tails, floor = [[]], [-1], 1
        else:
            seqs = [[kid] for kid in self.alternatives(grower.root_logits, hint)]
            tails, floor = [grower.add(t, -1, p, q) for (t, p, q), in seqs], 1 + self.tail
        self.extend(grower, [context] * len(seqs), seqs, tails, min(self.max_length, room), floor)
        grower.done()
        return seqs

    def prepare(self, context: list[int], pending: list[Draft], remaining: int) -> None:
        """Beside the target: a chain after each likely correction at the pending chain's weakest position."""
        self.prepared, self.weak = {}, -1
        if not pending or self.branches < 1:
            return
        weak = min(range(len(pending)), key=lambda i: pending[i][1])
        room = min(self.max_length, remaining - weak - 1)  # what the round after such a verdict may draft
        if room < 1:
            return
        here = context + [t for t, _, _ in pending[:weak]]
        grower = TreeGrower(self.runner, here)
        shown, hint, rejected = grower.root_logits.float().softmax(-1), self.hint(here), pending[weak][0]
        keys = [t for t in torch.topk(shown, min(self.branches + 1, len(shown))).indices.tolist() if t != rejected]
        keys = keys[:self.branches] + [t for t in hint[:1] if t != rejected and t not in keys[:self.branches]]
        seqs = [[] for _ in keys]
        self.extend(grower, [here + [k] for k in keys], seqs, [grower.add(k, -1) for k in keys], room, 1)
        grower.done()
        self.prepared, self.weak = dict(zip(keys, seqs)), weak

    def propose(self, dec: Decoding, root: int):
        self.sequential = 0
        if not self.pending:  # nothing prepared matched the verdict: draft the chain now, before the target
            before = self.runner.forwards
            with self.timeline.span("sequential", self.runner.device):
                self.pending = self.chain(self.runner.bare, dec.context, min(self.max_length, dec.remaining))
            self.sequential = self.runner.forwards - before
        return super().propose(dec, root)

    def alongside(self, dec: Decoding, root: int, tree):
        work = super().alongside(dec, root, tree)
        self.prepared, self.weak = {}, -1
        if work is None:
            return None
        context, pending, remaining = list(dec.context), list(self.pending), dec.remaining

        def both() -> list[torch.Tensor]:
            handed = work()
            before = self.runner.forwards
            self.prepare(context, pending, remaining)
            self.drafted += self.runner.forwards - before
            return handed + [q for seq in self.prepared.values() for _, _, q in seq if q is not None]

        return both

    def accepted(self, dec: Decoding, tree, verdict, logits, taps) -> None:
        super().accepted(dec, tree, verdict, logits, taps)
        kind = "acceptance" if self.chosen is not None else None
        if kind is None and self.weak >= 0 and len(verdict.accepted) == self.weak and verdict.bonus in self.prepared:
            self.pending, kind = list(self.prepared[verdict.bonus]), "branch"
        self.info.update(hit=kind is not None, kind=kind, sequential=self.sequential, weak=self.weak,
                         prepared=sum(len(s) for s in self.prepared.values()), carried=len(self.pending))


@method("specbranch", family="speculative", lossless=True, training_free=True,
        paper="Speculative Decoding via Hybrid Drafting and Rollback-Aware Branch Parallelism",
        departures="the draft runs in a Python thread beside the target forward, on a second CUDA stream of the "
                   "same GPU (the paper: parallel processes); the explicit signal is prompt lookup, not target "
                   "features; branches hedge one rejection point per round (the weakest draft position); the default draft is the lab's trained FastDraft on the default model (four layers of its shape, not a separate small model) and the target's first half of layers, untrained, on other models")
def specbranch(dec: Decoding, *, max_length: int = 8, confidence: float = 0.6, branches: int = 2, tail: int = 2,
               max_ngram: int = 3, min_ngram: int = 1, draft: str = "default", parallel: bool = True):
    """Chain while draft confidence and n-gram agree; beside the target's verification, branch at the doubt and
    at the likely rejection point, so the next draft is ready. `parallel=False`: the same rounds serialized."""
    if max_length < 1 or branches < 0 or tail < 0:
        raise LabError(f"specbranch: max_length must be >= 1, branches and tail >= 0, got max_length={max_length}, "
                       f"branches={branches}, tail={tail}")
    if not isinstance(parallel, bool):
        raise LabError(f"specbranch: parallel must be true or false, got {parallel!r}")
    yield from speculate(dec, BranchAhead(dec, dec.lab.draft(draft), max_length, confidence, branches, tail,
                                          max_ngram, min_ngram, parallel))
