"""TETRIS: Optimal Draft Token Selection for Batch Speculative Decoding.

The idea: the batch has a fixed verification budget of draft tokens per step, and it should be spent where
drafts are most likely to be accepted. Every row drafts a chain of `depth` tokens; the j-th token of a row is
accepted only if all before it are, so its chance is estimated by the cumulative product of the draft's
acceptance estimates along the row. Picking the `budget` tokens with the largest cumulative products
maximises the expected number of accepted tokens, and the pick is prefix-closed per row by itself (a product
only shrinks along a row). Rows thus get different draft lengths each step: a confident row verifies its
whole chain, a hesitant one little or nothing.

Departure: the paper estimates a token's acceptance by the draft's probability of that token. Here it is
the draft's top probability at that depth: the same number at temperature 0 (the drafted token is the
argmax), but known before the token is drawn, so at T > 0 the choice of what to verify does not depend on
the token itself and sampling stays exactly lossless.
"""
from __future__ import annotations

from ...batch import batch_of_one
from ...errors import LabError
from ...registry import batched, method
from ...tree import Tree
from ..chains import ChainDrafter
from ..loop import speculate_rows


def select_tokens(estimates: list[list[float]], budget: int) -> list[int]:
    """How many leading draft tokens of each row to verify: the `budget` positions whose cumulative product
    of acceptance estimates is largest (ties go to the shallower token, so the pick stays prefix-closed)."""
    ranked = []
    for row, row_estimates in enumerate(estimates):
        survival = 1.0
        for depth, estimate in enumerate(row_estimates):
            survival *= estimate
            ranked.append((-survival, depth, row))
    ranked.sort()
    counts = [0] * len(estimates)
    for _, _, row in ranked[:max(0, budget)]:
        counts[row] += 1
    return counts


def expected_accepted(estimates: list[list[float]], counts: list[int]) -> float:
    """Expected accepted draft tokens when row b verifies its first counts[b] tokens (TETRIS's objective)."""
    total = 0.0
    for row_estimates, count in zip(estimates, counts):
        survival = 1.0
        for estimate in row_estimates[:count]:
            survival *= estimate
            total += survival
    return total


class Tetris(ChainDrafter):
    """Draft `depth` tokens per row, verify the budget's best prefix of each row."""

    def __init__(self, runner, depth: int, budget: int):
        super().__init__(runner)
        self.depth, self.budget = depth, budget
        self.counts: list[int] = []
        self.drafted: list[int] = []

    def propose_rows(self, batch, roots: list[int]) -> list[Tree]:
        chains, estimates = self.draft(batch, [self.depth] * len(roots))
        self.counts = select_tokens(estimates, self.budget)
        self.drafted = [len(c) for c in chains]
        return [Tree.from_chain(c.tokens[:n], c.draft_probs[:n], c.q[:n]) for c, n in zip(chains, self.counts)]

    def row_info(self, b: int) -> dict:
        return {"drafted": self.drafted[b], "verified": self.counts[b]}


@method("tetris", family="speculative", lossless=True, training_free=True,
        paper="TETRIS: Optimal Draft Token Selection for Batch Speculative Decoding",
        departures="a token's acceptance is estimated by the draft's top probability at that depth (known before "
                   "the draw, so sampling stays exact), not the drawn token's probability; the default draft is the lab's trained FastDraft on the default model (four layers of its shape, not a separate small model) and the target's first half of layers, untrained, on other models")
@batch_of_one
@batched("tetris")
def tetris(batch, *, draft: str = "default", depth: int = 6, budget: int = 12):
    """Batch speculative decoding that verifies the budget's most promising draft tokens across rows."""
    if depth < 1 or budget < 1:
        raise LabError("tetris needs depth >= 1 and budget >= 1 (draft tokens verified per step in the batch)")
    yield from speculate_rows(batch, Tetris(batch.lab.draft(draft), depth, budget))
