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

On a GPU the draft's kernels go to a CUDA stream of their own (`side_stream`), so the device runs them beside the
target's forward instead of queueing them behind it; a draft on the CPU overlaps by itself. Every round's target
forward and draft forwards are timed on the device (timeline.py) into the Step's info["timeline"].
"""
from __future__ import annotations

from typing import Callable

import torch

from ..backends import Backend
from ..decoding import Decoding
from ..tree import Tree
from .drafter import Drafter
from .expand import Draft, draft_token
from .timeline import Clocked, Timeline
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
        self.asked = False  # fit() was called: the rounds' timings are worth resolving as they come

    def record(self, target_s: float, draft_s: list[float]) -> None:
        """One round's target forward time and its draft forwards' times (seconds), as the device ran them."""
        self.target_s = target_s if self.target_s is None else 0.7 * self.target_s + 0.3 * target_s
        if draft_s:
            each = sum(draft_s) / len(draft_s)
            self.draft_s = each if self.draft_s is None else 0.7 * self.draft_s + 0.3 * each

    def fit(self, low: int, high: int) -> int:
        self.asked = True
        if not self.target_s or not self.draft_s:
            return max(low, min(high, self.guess))
        return max(low, min(high, round(self.target_s / self.draft_s)))


def side_stream(target: torch.device, draft: torch.device, parallel: bool) -> bool:
    """Whether the draft gets a CUDA stream of its own: when it runs beside a target on the same CUDA device
    (a CPU draft needs none; `parallel=False` keeps it on the target's stream, one after the other)."""
    return parallel and target.type == draft.type == "cuda" and (target.index or 0) == (draft.index or 0)


class AheadDrafter(Drafter):
    """Pending drafts are proposed as a chain; new sequences are drafted alongside the target's forward by
    `draft(context, room)` (the method's idea) and their first tokens grafted under the chain, unscored."""

    def __init__(self, runner: Backend, pace: Pace, parallel: bool = True):
        self.timeline, self.parallel = Timeline(), parallel
        self.runner, self.pace = Clocked(runner, self.timeline), pace
        self.pending: list[Draft] = []
        self.sequences: list[list[Draft]] = []
        self.firsts: list[int] = []
        self.chosen: int | None = None  # the sequence whose first token the last verdict accepted
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
        if self.stream is None and side_stream(torch.device(dec.target.device), self.runner.device, self.parallel):
            self.stream = torch.cuda.Stream(self.runner.device)

        def work() -> list[torch.Tensor]:
            self.sequences = [seq[:room] for seq in self.draft(context, room) if seq]
            self.firsts = [tree.add(seq[0][0], len(self.pending) - 1, seq[0][1], seq[0][2]) for seq in self.sequences]
            self.drafted = self.runner.forwards - before
            return [q for seq in self.sequences for _, _, q in seq if q is not None]  # read on the target's stream

        return work

    def accepted(self, dec: Decoding, tree: Tree, verdict: Verdict, logits, taps) -> None:
        self.chosen = chosen = next((j for j, node in enumerate(self.firsts) if node in verdict.accepted), None)
        mode = "post-verify" if self.pending else "pre-verify"
        timed = verdict.info.get("timeline")
        if timed is not None and self.firsts and self.pace.asked:  # its events are done: the verifier read back
            self.timeline.resolve()
            (start, end), *_ = timed["target"]
            self.pace.record((end - start) / 1e3, [(b - a) / 1e3 for a, b in timed.get("draft", [])])
        self.pending = list(self.sequences[chosen][1:]) if chosen is not None else []
        self.info = {"mode": mode, "sequences": len(self.firsts), "chosen": chosen,
                     "drafted_ahead": sum(len(s) for s in self.sequences), "carried": len(self.pending)}
