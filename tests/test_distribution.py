"""At temperature T > 0, every lossless method samples exactly from softmax(logits / T).

A tiny random model with an 8-token vocabulary makes the target distribution of two new tokens
enumerable (64 outcomes); thousands of seeded runs are compared with it by a chi-square test.
"""
from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare

from lab import registry
from lab.api import Lab
from lab.backends.hf import HFBackend
from lab.models import tiny

from .conftest import use_draft

VOCAB, T, RUNS = 8, 0.8, 3000
PROMPT = [1, 2, 3, 1, 2, 3, 1, 2]  # repeats, so that lookup drafters propose something
LOSSLESS = sorted(name for name, m in registry.load_all().items() if m.lossless)


def exact_two_token_distribution(model, prompt, temperature) -> torch.Tensor:
    with torch.no_grad():
        first = (model(torch.tensor([prompt])).logits[0, -1] / temperature).softmax(-1)
        seqs = torch.tensor([prompt + [v] for v in range(VOCAB)])
        second = (model(seqs).logits[:, -1] / temperature).softmax(-1)
    return (first[:, None] * second).flatten().double()


def chi_square_p(counts: torch.Tensor, expected_probs: torch.Tensor) -> float:
    """Chi-square p-value after pooling outcomes whose expected count is below 5."""
    n = counts.sum()
    expected = expected_probs * n
    order = torch.argsort(expected)
    obs_bins, exp_bins, acc_o, acc_e = [], [], 0.0, 0.0
    for i in order.tolist():
        acc_o += float(counts[i]); acc_e += float(expected[i])
        if acc_e >= 5:
            obs_bins.append(acc_o); exp_bins.append(acc_e); acc_o = acc_e = 0.0
    if acc_e > 0:
        obs_bins[-1] += acc_o; exp_bins[-1] += acc_e
    exp_bins = [e * sum(obs_bins) / sum(exp_bins) for e in exp_bins]  # exact totals, as scipy requires
    return float(chisquare(obs_bins, exp_bins).pvalue)


def empirical(lab_, name, runs=RUNS, **opts) -> torch.Tensor:
    rng = torch.Generator().manual_seed(1234)
    counts = torch.zeros(VOCAB * VOCAB)
    for _ in range(runs):
        toks = lab_.generate(name, PROMPT, max_new_tokens=2, temperature=T, rng=rng, **opts).tokens
        counts[toks[0] * VOCAB + toks[1]] += 1
    return counts


@pytest.fixture(scope="module")
def target_lab():
    model = tiny("llama", vocab_size=VOCAB, layers=2, hidden=32, seed=3, init_std=0.15)
    lab_ = Lab(model_obj=model)
    # a draft that disagrees with the target: another random model over the same vocabulary
    use_draft(lab_, HFBackend(tiny("llama", vocab_size=VOCAB, layers=1, hidden=32, seed=4, init_std=0.15)))
    return lab_


@pytest.mark.parametrize("name", sorted(set(LOSSLESS) | {"sample"}))
def test_two_token_distribution_is_the_target(target_lab, name):
    exact = exact_two_token_distribution(target_lab.model, PROMPT, T)
    assert exact.max() < 0.5  # the test is only meaningful on a spread distribution
    counts = empirical(target_lab, name)
    p = chi_square_p(counts, exact)
    assert p > 1e-3, f"{name}: p = {p:.2e}"


def test_the_chi_square_test_has_power(target_lab):
    """The same test rejects a sampler whose temperature is off by a little."""
    exact_wrong_t = exact_two_token_distribution(target_lab.model, PROMPT, T * 1.25)
    counts = empirical(target_lab, "greedy")
    assert chi_square_p(counts, exact_wrong_t) < 1e-3
