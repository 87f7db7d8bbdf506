"""Draft while the target verifies: the pre-verify / post-verify pipeline of PEARL, shared with DuoDecoding.

Paper: "Parallel Speculative Decoding with Adaptive Draft Length" (Liu et al., 2024). Each round the target
forwards the root and the drafts still `pending`, while the draft, in a thread beside that forward (the loop's
`alongside` hook), drafts what comes after them. With nothing pending this is PEARL's pre-verify (the target
checks the first new draft token while the draft keeps drafting); with drafts pending it is post-verify (the
draft drafts on while the target verifies). The newly drafted sequences' first tokens hang below the last pending
node with no row of their own: the target's last row checks them. When every pending draft and one new first
token are accepted, the rest of that sequence becomes the next round's pending chain, and the round commits no
token of the target's own. Drafting thus never waits for the target, and the verified length adapts by itself.
Verification is the shared exact one, so the output is lossless.
"""
from __future__ import annotations

from typing import Callable

from ..backends import Backend
from ..decoding import Decoding
from ..tree import Tree
from .drafter import Drafter
from .expand import Draft, draft_token
from .verify import Verdict

Propose = Callable[[list[int], int], list[list[Draft]]]  # (context, most tokens) -> sequences drafted after context


def draft_chain(dec: Decoding, runner: Backend, context: list[int], length: int) -> list[Draft]:
    """`length` tokens drafted one by one after `context` (the runner's cache follows the chain)."""
    logits = runner.sync(context)
    chain: list[Draft] = []
    for i in range(length):
        chain.append(draft_token(dec, logits))
        if i + 1 < length:
            logits = runner.decode(chain[-1][0])
    return chain


class Pace:
    """How many draft forwards fit in one target forward, measured (PEARL sets gamma to this ratio; DuoDecoding's
    hardware-aware draft budget is the same idea)."""

    def __init__(self, guess: int = 4):
        self.guess = guess
        self.target_s: float | None = None
        self.draft_s: float | None = None

    def record(self, overlap: dict, draft_forwards: int) -> None:
        target = overlap["target_s"][1] - overlap["target_s"][0]
        self.target_s = target if self.target_s is None else 0.7 * self.target_s + 0.3 * target
        if draft_forwards > 0:
            each = (overlap["draft_s"][1] - overlap["draft_s"][0]) / draft_forwards
            self.draft_s = each if self.draft_s is None else 0.7 * self.draft_s + 0.3 * each

    def fit(self, low: int, high: int) -> int:
        if not self.target_s or not self.draft_s:
            return max(low, min(high, self.guess))
        return max(low, min(high, round(self.target_s / self.draft_s)))


class AheadDrafter(Drafter):
    """Pending drafts are proposed as a chain; new sequences are drafted alongside the target's forward by
    `draft(context, room)` (the method's idea) and their first tokens grafted under the chain, unscored."""

    def __init__(self, runner: Backend, pace: Pace):
        self.runner, self.pace = runner, pace
        self.pending: list[Draft] = []
        self.sequences: list[list[Draft]] = []
        self.firsts: list[int] = []
        self.info: dict = {}
        self.drafted = 0
        self.learns_from_plain_steps = True  # every round updates what is pending

    @property
    def forwards(self) -> int:
        return self.runner.forwards

    def draft(self, context: list[int], room: int) -> list[list[Draft]]:
        raise NotImplementedError

    def propose(self, dec: Decoding, root: int) -> Tree:
        tree = Tree()
        for token, prob, q in self.pending:
            tree.add(token, len(tree) - 1, prob, q)
        return tree

    def alongside(self, dec: Decoding, root: int, tree: Tree):
        room = dec.remaining - len(self.pending)  # tokens the draft may add after the pending ones
        self.sequences, self.firsts = [], []
        tree.scored = len(tree)
        if room <= 0:
            return None
        context = dec.context + [t for t, _, _ in self.pending]
        before = self.runner.forwards

        def work() -> None:
            self.sequences = [seq[:room] for seq in self.draft(context, room) if seq]
            self.firsts = [tree.add(seq[0][0], len(self.pending) - 1, seq[0][1], seq[0][2]) for seq in self.sequences]
            self.drafted = self.runner.forwards - before

        return work

    def accepted(self, dec: Decoding, tree: Tree, verdict: Verdict, logits, taps) -> None:
        chosen = next((j for j, node in enumerate(self.firsts) if node in verdict.accepted), None)
        mode = "post-verify" if self.pending else "pre-verify"
        overlap = verdict.info.get("overlap")
        if overlap is not None and self.firsts:
            self.pace.record(overlap, self.drafted)
        self.pending = list(self.sequences[chosen][1:]) if chosen is not None else []
        self.info = {"mode": mode, "sequences": len(self.firsts), "chosen": chosen,
                     "drafted_ahead": sum(len(s) for s in self.sequences), "carried": len(self.pending)}
