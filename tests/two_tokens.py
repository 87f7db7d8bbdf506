"""The exact distribution of two new tokens over an 8-token vocabulary, and a chi-square against it.

A small check for one mechanism at a time (batched rows, a lookup pool, a trimmed vocabulary); the thorough,
long-run check of every lossless method is tests/distribution.py.
"""
from __future__ import annotations

import torch
from scipy.stats import chisquare

VOCAB, T, RUNS = 8, 0.8, 3000
PROMPT = [1, 2, 3, 1, 2, 3, 1, 2]  # repeats, so that lookup drafters propose something


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
        acc_o += float(counts[i])
        acc_e += float(expected[i])
        if acc_e >= 5:
            obs_bins.append(acc_o)
            exp_bins.append(acc_e)
            acc_o = acc_e = 0.0
    if acc_e > 0:
        obs_bins[-1] += acc_o
        exp_bins[-1] += acc_e
    exp_bins = [e * sum(obs_bins) / sum(exp_bins) for e in exp_bins]  # exact totals, as scipy requires
    return float(chisquare(obs_bins, exp_bins).pvalue)


def empirical(lab_, name, runs=RUNS, **opts) -> torch.Tensor:
    rng = torch.Generator().manual_seed(1234)
    counts = torch.zeros(VOCAB * VOCAB)
    for _ in range(runs):
        toks = lab_.generate(name, PROMPT, max_new_tokens=2, temperature=T, rng=rng, **opts).tokens
        counts[toks[0] * VOCAB + toks[1]] += 1
    return counts
