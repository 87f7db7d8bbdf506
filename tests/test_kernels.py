"""Every Triton kernel against its torch reference on random inputs, in Triton's interpreter on the CPU (exact
where it must be), and the references against the distributions they promise (chi-square, with rejections)."""
from __future__ import annotations

import os

import pytest
import torch
from scipy.stats import chisquare

os.environ["TRITON_INTERPRET"] = "1"  # before the kernels are defined: they run on CPU tensors
triton = pytest.importorskip("triton")

from lab.kernels import bitmask, rejection, sampling  # noqa: E402


def noise(rows, vocab, g):
    return torch.empty(rows, vocab).exponential_(generator=g)


def test_bitmask_kernel_is_the_reference():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1000, generator=g)
    mask = torch.randint(-2**31, 2**31 - 1, (3, 32), generator=g, dtype=torch.int64).to(torch.int32)
    want = bitmask.apply_token_bitmask_reference(logits.clone(), mask)
    got = bitmask.apply_token_bitmask(logits.clone(), mask)
    assert torch.equal(torch.isinf(got), torch.isinf(want)) and torch.equal(got[~torch.isinf(got)], want[~torch.isinf(want)])
    assert 0.3 < torch.isinf(want).float().mean() < 0.7  # about half of the tokens were masked
    token = 31 + 32 * 2  # the sign bit of a word: bit 31 of word 2
    assert bool(torch.isinf(want[0, token])) == (int(mask[0, 2]) >= 0)


@pytest.mark.parametrize("drawn", [True, False])
def test_chain_rejection_kernel_is_the_reference(drawn):
    g = torch.Generator().manual_seed(1)
    rows, k, vocab = 64, 4, 50
    p = (torch.randn(rows, k + 1, vocab, generator=g) * 2).softmax(-1)
    q = (torch.randn(rows, k, vocab, generator=g) * 2).softmax(-1) if drawn else None
    if drawn:
        p[::2, :k] = 0.95 * q[::2] + 0.05 * p[::2, :k]  # half the rows: a draft close to the target
        drafts = torch.multinomial(q.reshape(-1, vocab), 1, generator=g).reshape(rows, k)
    else:
        drafts = p[:, :k].argmax(-1)
        drafts[::3, 1] = (drafts[::3, 1] + 1) % vocab  # some fixed drafts are wrong
    u, e = torch.rand(rows, k, generator=g), noise(rows, vocab, g)
    want = rejection.chain_rejection_reference(drafts, q, p, u, e)
    got = rejection.chain_rejection(drafts, q, p, u, e)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert len(set(want[1].tolist())) >= 3  # rows rejected at the first draft, later, and not at all


def test_chain_rejection_keeps_the_target_distribution():
    """Two drafts from q far from p: the first committed token follows p_0, and the second (after an accepted
    first draft) follows p_1, with many rejections, recovered tokens and bonus tokens on the way."""
    g = torch.Generator().manual_seed(2)
    vocab, n = 6, 20000
    p = (torch.randn(3, vocab, generator=g) * 1.2).softmax(-1)
    q = (torch.randn(2, vocab, generator=g) * 1.2).softmax(-1)
    drafts = torch.stack([torch.multinomial(q[j], n, replacement=True, generator=g) for j in range(2)], 1)
    tokens, accepted = rejection.chain_rejection_reference(
        drafts, q[None].expand(n, -1, -1), p[None].expand(n, -1, -1), torch.rand(n, 2, generator=g), noise(n, vocab, g))
    assert (accepted == 0).sum() > n // 10 and (accepted == 2).sum() > n // 10  # rejections and bonus tokens

    def fits(observed, probs):
        counts = torch.bincount(observed, minlength=vocab).double()
        expected = probs.double() / probs.double().sum() * counts.sum()
        return chisquare(counts.numpy(), expected.numpy()).pvalue > 1e-3

    assert fits(tokens[:, 0], p[0])
    assert fits(tokens[accepted >= 1, 1], p[1])
    assert not fits(tokens[accepted >= 1, 1], p[2])  # the test has the power to see a wrong row


def test_min_p_kernel_is_the_reference_and_samples_the_truncated_distribution():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(16, 3000, generator=g) * 3
    e = noise(16, 3000, g)
    for temperature, min_p in ((0.7, 0.0), (1.3, 0.05)):
        assert torch.equal(sampling.sample_min_p(logits, temperature, min_p, e),
                           sampling.sample_min_p_reference(logits, temperature, min_p, e))
    row, n, t, m = torch.randn(8, generator=g) * 1.5, 20000, 0.8, 0.1
    draws = sampling.sample_min_p_reference(row[None].expand(n, -1), t, m, noise(n, 8, g))
    probs = (row / t).softmax(-1)
    probs = torch.where(probs >= m * probs.max(), probs, 0.0)
    counts = torch.bincount(draws, minlength=8).double()
    kept = probs > 0
    assert (counts[~kept] == 0).all() and kept.sum() < 8  # min-p removed some tokens
    expected = probs[kept].double() / probs[kept].double().sum() * n
    assert chisquare(counts[kept].numpy(), expected.numpy()).pvalue > 1e-3
