"""The Drafter: what a speculative method adds to the one loop (lab/speculative/loop.py).

A drafter proposes a Tree of draft tokens hanging from the root (the last committed token, not yet in the
target's cache); the loop scores it in one target forward, a Verifier decides the accepted path and the token
after it, the backend keeps the accepted rows, and the drafter hears the outcome. Everything but `propose` is
optional; the defaults describe a drafter that only proposes.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Callable

import torch

from ..decoding import Decoding
from ..tree import Tree
from .verify import Verdict

Layout = tuple[list[int], torch.Tensor, list[int]]  # forward tokens, who-sees-whom [k, k], positions


class Drafter:
    """Base class of every drafter. Subclasses implement `propose` (one row) or `propose_rows` (a batch)."""

    taps: tuple[str, ...] = ()  # what `accepted` wants from the verification forward, e.g. ("hidden",)
    learns_from_plain_steps = False  # `accepted` also sees steps with nothing proposed (an empty tree)
    info = MappingProxyType({})  # what the drafter chose for the last proposal (exit layer, budget ...): copied into the Step

    forwards: int = 0  # draft forwards spent so far (the Trace's draft cost); often a property of the draft
    timeline = None  # a speculative.timeline.Timeline in which `alongside` work and the target forward are timed
    stream = None  # a torch.cuda.Stream the `alongside` work runs on (None: the thread's default stream)
    parallel = True  # False: `alongside` work runs before the target forward, not beside it (for comparison)

    # -- proposing ---------------------------------------------------------------------------------
    def propose(self, dec: Decoding, root: int) -> Tree:
        """Draft tokens after `root`, given the committed context `dec.context` (root is its last token)."""
        raise NotImplementedError(f"{type(self).__name__} proposes nothing")

    def propose_rows(self, rows, roots: list[int]) -> list[Tree]:
        """One Tree per live row of a batch (lab.batch.Rows). By default each row on its own, which is right
        for a drafter without per-row state, and for a batch of one."""
        return [self.propose(dec, root) for dec, root in zip(rows.live_rows(), roots)]

    def layout(self, dec: Decoding, root: int, tree: Tree) -> Layout | None:
        """The verification forward, when it carries more than the root and the tree (Lookahead's window):
        tokens, mask and positions whose first 1 + tree.rows rows are the root and the tree. None: just the tree."""
        return None

    def visible(self, dec: Decoding) -> torch.Tensor | None:
        """What of the cached context the verification forward sees (bool [dec.target.length]). None, the default,
        is all of it, which exact verification needs; SpecPV's partial verification hides part of it (lossy)."""
        return None

    def kept(self, rows: list[int]) -> list[int]:
        """Rows of the verification forward the cache keeps, in order, given the accepted path's (the root's row 0
        first). By default just those; a layout whose extra rows belong before the root adds them (SpecPV
        re-forwards the tokens it verified partially)."""
        return rows

    def alongside(self, dec: Decoding, root: int, tree: Tree) -> Callable[[], None] | None:
        """Work to run in a thread while the target verifies `tree` (PEARL's drafting ahead); it may then add
        nodes that have no row of their own (see Tree.scored). None: nothing runs alongside."""
        return None

    # -- hearing the outcome -------------------------------------------------------------------------
    def accepted(self, dec: Decoding, tree: Tree, verdict: Verdict, logits: torch.Tensor, taps: dict) -> None:
        """After verification. `logits[0]` is the target's row at the root, `logits[i + 1]` at node i (and any
        layout rows after them); `taps` holds what `self.taps` asked for."""

    def accepted_rows(self, rows, trees: list[Tree], verdicts: list[Verdict], logits: list[torch.Tensor]) -> None:
        """After verifying a batch: by default `accepted` row by row (steps with a tree, or all steps when the
        drafter learns from plain ones)."""
        for dec, tree, verdict, row in zip(rows.live_rows(), trees, verdicts, logits):
            if len(tree) or self.learns_from_plain_steps:
                self.accepted(dec, tree, verdict, row, {})

    def select(self, kept: list[int]) -> None:
        """Batch rows `kept` (old row order) are all that is left: drop per-row state of the others."""

    def row_info(self, b: int) -> dict:
        """Extra Step.info for batch row b."""
        return {}
