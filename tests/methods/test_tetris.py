"""TETRIS: the verification budget goes to the draft tokens with the highest chance of acceptance."""
from __future__ import annotations

import itertools
import random

import pytest

from lab.api import Lab
from lab.models import tiny
from lab.speculative.drafters.tetris import expected_accepted, select_tokens

from ..conftest import hf_greedy, use_draft


def brute_force(estimates, budget):
    """The best expected accepted count over every prefix length per row that fits the budget."""
    best = 0.0
    for counts in itertools.product(*[range(len(row) + 1) for row in estimates]):
        if sum(counts) <= budget:
            best = max(best, expected_accepted(estimates, list(counts)))
    return best


@pytest.mark.parametrize("seed", range(40))
def test_selection_is_optimal_against_brute_force(seed):
    rng = random.Random(seed)
    rows, depth = rng.randint(1, 4), rng.randint(1, 4)
    estimates = [[rng.choice([rng.random(), 1.0, 0.5, rng.random() ** 3]) for _ in range(rng.randint(0, depth))]
                 for _ in range(rows)]
    total = sum(len(r) for r in estimates)
    for budget in range(0, total + 2):
        counts = select_tokens(estimates, budget)
        assert sum(counts) == min(budget, total)
        assert all(0 <= c <= len(r) for c, r in zip(counts, estimates))
        assert expected_accepted(estimates, counts) == pytest.approx(brute_force(estimates, budget), abs=1e-12)


def test_cumulative_chance_not_the_single_token_estimate_decides():
    """A likely token behind an unlikely one is worth less than a moderately likely first token."""
    estimates = [[0.5, 0.99], [0.6, 0.1]]
    assert select_tokens(estimates, 2) == [1, 1]  # by single estimates it would be row 0's second token
    assert select_tokens(estimates, 3) == [2, 1]


def test_rows_share_the_budget_in_a_batch():
    lab_ = Lab(model_obj=tiny("llama", vocab_size=64, seed=11))
    use_draft(lab_, lab_.target.view([0]))
    prompts = [[(5 * r + 3 * i) % 60 + 1 for i in range(4 + 5 * r)] for r in range(4)]
    results = lab_.generate_batch("tetris", prompts, max_new_tokens=30, depth=5, budget=8)
    assert [r.tokens for r in results] == [hf_greedy(lab_.model, p, 30) for p in prompts]
    ragged = False
    for k in range(1, max(len(r.trace.steps) for r in results)):
        steps = [r.trace.steps[k] for r in results if len(r.trace.steps) > k]
        drafted = sum(s.info["drafted"] for s in steps)
        assert sum(len(s.proposed) for s in steps) == min(8, drafted)  # the whole budget, never more
        assert all(len(s.proposed) == s.info["verified"] <= s.info["drafted"] for s in steps)
        ragged |= len({len(s.proposed) for s in steps}) > 1
    assert ragged  # rows got different draft lengths in the same step
