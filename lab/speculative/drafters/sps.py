"""Speculative sampling with a draft model, in chains of adaptive length.

Papers: "Fast Inference from Transformers via Speculative Decoding" (Leviathan et al., 2023) and
"Accelerating Large Language Model Decoding with Speculative Sampling" (Chen et al., 2023).
A small draft model proposes a chain; the target scores it in one forward and keeps the accepted
prefix plus one token of its own. The chain length adapts: it grows by 2 after a fully accepted chain
and shrinks by 1 otherwise, and drafting stops early when the draft's top probability falls below
`confidence` (the schedule of transformers' assisted generation). With no draft model at hand the
draft is the target's own first `layers:N` layers (shared weights, own cache).
"""
from __future__ import annotations

from ...backends import Backend
from ...decoding import Decoding
from ...errors import LabError
from ...registry import batched, method
from ...trace import Step
from ...tree import Tree
from ..chains import ChainDrafter
from ..drafter import Drafter
from ..expand import draft_token
from ..loop import speculate, speculate_rows
from ..verify import Verdict


class DraftModel(Drafter):
    """Chains drawn from a draft model's own distribution (the same sampling rule as the target)."""

    def __init__(self, runner: Backend, length: int = 4, adaptive: bool = True, confidence: float = 0.0,
                 max_length: int = 16, bursts: bool = True, siblings: bool = False):
        if siblings and (adaptive or confidence):
            raise LabError("siblings need a fixed chain length (adaptive=False) and no confidence stop")
        self.runner = runner
        self.siblings = siblings  # at T = 0, the draft's second choice at each depth too (a static tree)
        self.bursts = bursts  # at T = 0, draft the chain with `greedy_chain` (False: a method needs every step's logits)
        self.length = length
        self.adaptive = adaptive
        self.confidence = confidence
        self.max_length = max_length

    @property
    def forwards(self) -> int:
        return self.runner.forwards

    def propose(self, dec: Decoding, root: int) -> Tree:
        n = min(self.length, dec.remaining)
        tree = Tree()
        if n <= 0:
            return tree
        siblings = self.siblings and dec.greedy
        if self.bursts and dec.greedy and not self.confidence and not siblings and len(dec.context) > 1:  # the draft's greedy chain: bursts of steps
            self.runner.hold(dec.context[:-1])  # on a GPU, the first one feeding the last context token
            tokens, beliefs = self.runner.greedy_chain(dec.context[-1], n)
            for i, (token, belief) in enumerate(zip(tokens, beliefs)):
                tree.add(token, i - 1, belief, None)
            return tree
        logits = self.runner.sync(dec.context)
        parent = -1
        for i in range(n):
            token, belief, q = draft_token(dec, logits)
            node = tree.add(token, parent, belief, q)
            if siblings:  # the second choice, a leaf beside it
                probs = logits.float().softmax(-1)
                second = int(probs.topk(2).indices[1])
                tree.add(second, parent, float(probs[second]), None)
            parent = node
            if i + 1 < n:
                if self.confidence and float(logits.float().softmax(-1).max()) < self.confidence:
                    break
                logits = self.runner.decode(token)
        return tree

    def accepted(self, dec: Decoding, tree: Tree, verdict: Verdict, logits=None, taps=None) -> None:
        if self.adaptive:
            if len(verdict.accepted) == len(tree):
                self.length = min(self.length + 2, self.max_length)
            else:
                self.length = max(1, self.length - 1)


ROUNDS = 4  # greedy rounds per call of the backend's device path (the fast backend: one graph, one readback)
LONGEST_CHAIN = 8  # on the device path (a graph per chain length)


def draft_model_decoding(dec: Decoding, drafter: DraftModel):
    """`speculate(dec, drafter)`. At temperature 0 with bursts, where the target has a device path for greedy
    rounds with this draft (`Backend.greedy_rounds`: the fast backend), ROUNDS rounds go to the device at a time
    with the chain length the adaptive schedule reached (at most 8) and the schedule is applied per round
    afterwards: at a fixed length, the very drafts and verdicts of the host loop."""
    if not (dec.greedy and drafter.bursts and not drafter.confidence and dec.target.rounds_with(drafter.runner)):
        yield from speculate(dec, drafter)
        return
    drafter.max_length = min(drafter.max_length, LONGEST_CHAIN)
    root = dec.choose(dec.prefill())
    yield Step(committed=[root], origin=["plain"], forwards=0, prefill=True)
    runner = drafter.runner
    while not dec.done:
        k = min(drafter.length, dec.remaining)
        runner.hold(dec.context[:-1])
        got = dec.target.greedy_rounds(runner, root, k, ROUNDS if dec.remaining > 2 * (k + 1) else 1,
                                       drafter.siblings)
        for r in got:
            committed = r.committed
            root = committed[-1]
            if drafter.siblings:  # the host loop's node order: d1, s1, d2 (under d1), s2 (under d1), ...
                proposed = [t for pair in zip(r.drafts, r.siblings) for t in pair]
                parents = [2 * (i // 2) - 2 if i >= 2 else -1 for i in range(2 * k)]
                probs = [p for pair in zip(r.beliefs, r.sibling_beliefs) for p in pair]
                accepted = [2 * i for i in range(r.accepted)] + ([2 * r.accepted + 1] if r.sibling_hit else [])
            else:
                proposed, parents, probs = r.drafts, list(range(-1, k - 1)), r.beliefs
                accepted = list(range(r.accepted))
            yield Step(committed=committed, origin=["draft"] * len(accepted) + ["bonus"], proposed=proposed,
                       parents=parents, draft_probs=[round(p, 4) for p in probs], accepted=accepted, bonus=root,
                       draft_forwards=k, info={"recovered": False, "device_rounds": len(got)})
            drafter.accepted(dec, r.drafts, Verdict(accepted, root))
            if dec.done:
                return


@method("sps", family="speculative", lossless=True, training_free=True,
        paper="Fast Inference from Transformers via Speculative Decoding",
        departures="the adaptive chain length (grow by 2 after a full acceptance, shrink by 1 otherwise) is "
                   "transformers' assisted-generation schedule, not the papers'; the default draft is the lab's trained FastDraft on the default model (four layers of its shape, not a separate small model) and the target's first half of layers, untrained, on other models; at temperature 0 on the fast backend (a GPU) 4 rounds run on the device per call, so the schedule moves between calls and chains are at most 8 long")
def sps(dec, *, draft: str = "default", length: int = 4, adaptive: bool = True, confidence: float = 0.0):
    """Draft-model speculative sampling with adaptive chain length (draft: 'layers:N' or a model)."""
    yield from draft_model_decoding(dec, DraftModel(dec.lab.draft(draft), length, adaptive, confidence))


class SpsRows(ChainDrafter):
    """Batched `sps`: each row keeps its own adaptive chain length (sps's schedule, one DraftModel per row)."""

    def __init__(self, runner: Backend, length: int, adaptive: bool, confidence: float):
        super().__init__(runner)
        self.length, self.adaptive, self.confidence = length, adaptive, confidence
        self.schedules: list[DraftModel] | None = None

    def propose_rows(self, rows, roots: list[int]) -> list[Tree]:
        if self.schedules is None:
            self.schedules = [DraftModel(None, self.length, self.adaptive, self.confidence) for _ in roots]
        return self.draft(rows, [s.length for s in self.schedules], self.confidence)[0]

    def accepted_rows(self, rows, trees: list[Tree], verdicts: list[Verdict], logits) -> None:
        for schedule, dec, tree, verdict in zip(self.schedules, rows.live_rows(), trees, verdicts):
            if tree:
                schedule.accepted(dec, tree, verdict)

    def select(self, kept: list[int]) -> None:
        super().select(kept)
        self.schedules = [self.schedules[b] for b in kept] if self.schedules else None


@batched("sps")
def sps_batch(rows, *, draft: str = "default", length: int = 4, adaptive: bool = True, confidence: float = 0.0):
    """Batched draft-model speculative sampling; every row adapts its own chain length."""
    yield from speculate_rows(rows, SpsRows(rows.lab.draft(draft), length, adaptive, confidence))
