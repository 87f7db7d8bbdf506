"""Chains for B rows at once: a draft model in its own backend of B rows, one batched draft forward per depth.

Batched drafters (bass, tetris, the batched sps) draft through `ChainDrafter`; each row gets a chain of its own
length, drawn with the target's sampling rule, and the one speculative loop verifies all rows in one target
forward (lab/speculative/loop.py `speculate_rows`).
"""
from __future__ import annotations

from ..backends import Backend
from ..batch import Rows
from ..tree import Tree
from .drafter import Drafter


class ChainDrafter(Drafter):
    """Chains from a draft model run in its own backend of B rows: one batched draft forward per depth."""

    def __init__(self, runner: Backend):
        self.runner = runner.for_rows()

    @property
    def forwards(self) -> int:
        return self.runner.forwards

    def accepted_rows(self, rows, trees: list[Tree], verdicts, logits) -> None:
        """Nothing to learn by default (TETRIS); BASS and the batched sps adapt their chain lengths here."""

    def accepted(self, dec, tree: Tree, verdict, logits, taps=None) -> None:
        """One prompt runs as a batch of one, which the loop scores on its single-row path: same rule."""
        self.accepted_rows(Rows.of_one(dec), [tree], [verdict], [logits])

    def select(self, kept: list[int]) -> None:
        if self.runner.rows > max(kept, default=-1):  # a draft that has not drafted yet holds no rows to drop
            self.runner.select(kept)

    def draft(self, batch, lengths: list[int], confidence: float = 0.0) -> tuple[list[Tree], list[list[float]]]:
        """A chain of up to lengths[b] tokens (and the row's remaining budget) per live row b, drawn with the
        target's sampling rule; also the draft's top probability at each depth. That number is known before
        the token is drawn, so a selection made with it keeps sampling lossless (TETRIS)."""
        rows = batch.live_rows()
        trees, tops = [Tree() for _ in rows], [[] for _ in rows]
        want = [max(0, min(int(n), dec.remaining)) for n, dec in zip(lengths, rows)]
        if not any(want):
            return trees, tops
        logits = self.runner.sync_rows([dec.context for dec in rows])
        going = [b for b in range(len(rows)) if want[b]]
        for depth in range(max(want)):
            following = []
            for b in going:
                dec = rows[b]
                token = dec.choose(logits[b])
                shown = logits[b].float().softmax(-1)  # the draft's own belief, for the views and the estimates
                trees[b].add(token, depth - 1, float(shown[token]), None if dec.greedy else dec.probs(logits[b]))
                tops[b].append(float(shown.max()))
                if depth + 1 < want[b] and not (confidence and float(shown.max()) < confidence):
                    following.append(b)
            if not following:
                break
            out = self.runner.forward_rows([[trees[b].tokens[-1]] if b in following else [] for b in range(len(rows))])
            logits = logits.clone()
            for b in following:
                logits[b] = out[b][-1]
            going = following
        return trees, tops
