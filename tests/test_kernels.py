"""Every Triton kernel against its torch reference on random inputs, in Triton's interpreter on the CPU (exact
where it must be), and the references against the distributions they promise (chi-square, with rejections)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from scipy.stats import chisquare

os.environ["TRITON_INTERPRET"] = "1"  # before the kernels are defined: they run on CPU tensors
triton = pytest.importorskip("triton")

from lab.dllm import rules  # noqa: E402
from lab import kernels  # noqa: E402
from lab.kernels import bitmask, dllm_commit, rejection, sampling, topk_topp, tree_attention  # noqa: E402
from lab.sampling import Sampling  # noqa: E402
from lab.tree import ancestor_mask  # noqa: E402


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


@pytest.mark.parametrize("rows,vocab,words", [(2, 9000, 282), (1, 4096, 128), (2, 4099, 130), (1, 70, 5)])
def test_bitmask_kernel_over_several_programs(rows, vocab, words):
    """3 programs of 4096 tokens a row (the last short, a word cut by V), one whole program, a tail of 3 tokens, and
    more words than V needs (ignored); words allowing nothing (written, not read) and everything (left alone), the
    last word too; a 1-D row. Values and -inf are compared bit for bit (NaN kept)."""
    g = torch.Generator().manual_seed(rows + vocab)
    logits = torch.randn(rows, vocab, generator=g)
    logits[0, [5, 40]] = float("nan")
    mask = torch.randint(-2**31, 2**31 - 1, (rows, words), generator=g, dtype=torch.int64).to(torch.int32)
    mask[0, 0], mask[0, 1], mask[-1, (vocab - 1) // 32] = -1, 0, 0  # NaN kept at 5, -inf at 40
    want = bitmask.apply_token_bitmask_reference(logits.clone(), mask)
    got = bitmask.apply_token_bitmask(logits.clone(), mask)
    assert torch.equal(got.view(torch.int32), want.view(torch.int32)) and got[0, 5].isnan() and got[0, 40] < 0
    one = bitmask.apply_token_bitmask(logits[-1].clone(), mask[-1])
    assert torch.equal(one.view(torch.int32), want[-1].view(torch.int32))


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


@pytest.mark.parametrize("vocab", [1000, 300])
@pytest.mark.parametrize("drawn", [True, False])
def test_chain_rejection_kernel_over_several_blocks(drawn, vocab):
    """Rows split over 8 blocks of 128 or 3 (the last of 44): row 0 accepts every draft and its bonus race ties
    across blocks (the first token wins); row 1 is rejected at its first draft with a residual of zero everywhere (p
    <= q: the race runs on p); the other rows are rejected here and there."""
    g = torch.Generator().manual_seed(12 + vocab)
    rows, k = 6, 3
    p = (torch.randn(rows, k + 1, vocab, generator=g) * 2).softmax(-1)
    q = (torch.randn(rows, k, vocab, generator=g) * 2).softmax(-1) if drawn else None
    drafts = torch.multinomial(q.reshape(-1, vocab), 1, generator=g).reshape(rows, k) if drawn else p[:, :k].argmax(-1)
    u, e = torch.rand(rows, k, generator=g), noise(rows, vocab, g)
    u[0] = 0.0  # row 0: every draft accepted
    p[0, k, [5, vocab - 7]] = 0.5
    e[0, [5, vocab - 7]] = 1e-3  # equal ratios in the first and the last block
    u[1, 0] = 0.9
    p[1, 0] = 0.5 * q[1, 0] if drawn else 0.5 * torch.nn.functional.one_hot(drafts[1, 0], vocab)
    want = rejection.chain_rejection_reference(drafts, q, p, u, e)
    got = rejection.chain_rejection(drafts, q, p, u, e)
    assert want[1][0] == k and want[0][0, k] == 5 and want[1][1] == 0
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_chain_rejection_kernel_again():
    """Calls in a row over several blocks, row counts interleaved: each row's last program sets its kept counter
    (kernels.counters) back to 0, so every call takes each row's result once, after all its blocks."""
    g = torch.Generator().manual_seed(5)
    for rows in (6, 6, 9, 4, 9):
        p = (torch.randn(rows, 3, 700, generator=g) * 2).softmax(-1)
        q = (torch.randn(rows, 2, 700, generator=g) * 2).softmax(-1)
        drafts = torch.multinomial(q.reshape(-1, 700), 1, generator=g).reshape(rows, 2)
        u, e = torch.rand(rows, 2, generator=g), noise(rows, 700, g)
        want = rejection.chain_rejection_reference(drafts, q, p, u, e)
        got = rejection.chain_rejection(drafts, q, p, u, e)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), rows
    assert not kernels.counters(torch.device("cpu"), 16).any()


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


@pytest.mark.parametrize("splits,block", [(None, sampling.BLOCK), (1, 256), (5, 256)])
def test_min_p_kernel_is_the_reference(splits, block):
    """The plan's split (two ranges of 2048 here), one range of 12 blocks, 4 ranges of 3 blocks (the last one past
    V); rows of -inf, partly -inf, with tied maxima; min_p 0 skips the maximum's launch."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(16, 3000, generator=g) * 3
    logits[3] = float("-inf")
    logits[5, 1000:] = float("-inf")
    logits[7, ::5] = logits[7].max()
    e = noise(16, 3000, g)
    for temperature, min_p in ((0.7, 0.0), (1.3, 0.05), (1.0, 0.5), (0.9, 1.0)):  # 1: the tied maxima alone
        assert torch.equal(sampling.sample_min_p(logits, temperature, min_p, e, splits=splits, block=block),
                           sampling.sample_min_p_reference(logits, temperature, min_p, e))
    one = sampling.sample_min_p(logits[5:6], 0.9, 0.1, e[5:6], splits=splits, block=block)  # B=1
    assert torch.equal(one, sampling.sample_min_p_reference(logits[5:6], 0.9, 0.1, e[5:6]))


def test_min_p_kernel_again_and_interleaved():
    """Calls in a row and shapes interleaved (more rows, other ranges a row, one range, min_p 0): each row's last
    range sets its kept counter (kernels.counters) back to 0, so every call takes each row's winner once, after all
    its ranges."""
    g = torch.Generator().manual_seed(13)
    for rows, vocab, splits, min_p in ((6, 1000, 4, 0.05), (6, 1000, 4, 0.05), (9, 700, 3, 0.1), (6, 1000, 4, 0.0),
                                       (3, 500, 1, 0.1), (9, 700, 2, 0.05), (6, 1000, 4, 0.05)):
        logits, e = torch.randn(rows, vocab, generator=g) * 3, noise(rows, vocab, g)
        assert torch.equal(sampling.sample_min_p(logits, 0.8, min_p, e, splits=splits, block=128),
                           sampling.sample_min_p_reference(logits, 0.8, min_p, e)), (rows, vocab, splits, min_p)
    assert not kernels.counters(torch.device("cpu"), 1).any()


def test_min_p_plan_fills_an_h200():
    """WAVES waves of programs (4 an SM of 132) from 64 rows on, or one per block of a row; whole blocks per range."""
    for rows, vocab in ((64, 128256), (1, 128256), (64, 49152), (1, 49152), (256, 128256), (2000, 128256)):
        splits, split = sampling.plan(rows, vocab, 132)
        assert split % sampling.BLOCK == 0 and (splits - 1) * split < vocab <= splits * split
        assert rows * splits <= max(rows, sampling.WAVES * sampling.RESIDENT * 132)
        assert rows * splits >= min(rows * -(-vocab // sampling.BLOCK), sampling.WAVES * sampling.RESIDENT * 132 // 2)


def test_min_p_reference_samples_the_truncated_distribution():
    g = torch.Generator().manual_seed(3)
    row, n, t, m = torch.randn(8, generator=g) * 1.5, 20000, 0.8, 0.1
    draws = sampling.sample_min_p_reference(row[None].expand(n, -1), t, m, noise(n, 8, g))
    probs = (row / t).softmax(-1)
    probs = torch.where(probs >= m * probs.max(), probs, 0.0)
    counts = torch.bincount(draws, minlength=8).double()
    kept = probs > 0
    assert (counts[~kept] == 0).all() and kept.sum() < 8  # min-p removed some tokens
    expected = probs[kept].double() / probs[kept].double().sum() * n
    assert chisquare(counts[kept].numpy(), expected.numpy()).pvalue > 1e-3


def test_races_tie_to_the_lowest_token():
    """Equal scores (equal kept logits, equal noise) in different blocks and ranges: the lowest token wins, as
    argmax's first maximum."""
    logits = torch.full((2, 1000), -5.0)
    logits[:, [300, 600, 900]] = 2.0
    logits[1, 900] = 3.0
    e = torch.ones(2, 1000)
    e[:, 900] = 5.0  # token 900's score: 3 - log 5 < 2 in row 1
    want = torch.tensor([300, 300])
    assert torch.equal(sampling.sample_min_p_reference(logits, 1.0, 0.01, e), want)
    assert torch.equal(sampling.sample_min_p(logits, 1.0, 0.01, e, splits=4, block=128), want)
    assert torch.equal(topk_topp.sample_top_k_top_p_reference(logits, 1.0, 2, 1.0, e), want)
    for slots, capacity in ((topk_topp.SLOTS, topk_topp.CAPACITY), (16, 2)):  # pairwise, bisected
        assert torch.equal(topk_topp.sample_top_k_top_p(logits, 1.0, 2, 1.0, e, slots, capacity), want)


def top_k_top_p_rows():
    """Rows with ties at the top and everywhere, -inf entries, a row of -inf, and plain random ones."""
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(6, 700, generator=g) * 3
    logits[1, ::7] = logits[1].max()
    logits[2] = (logits[2] * 2).round() / 2
    logits[3, 100:] = float("-inf")
    logits[4] = float("-inf")
    return logits, noise(6, 700, g)


# (slots, capacity, chunk): the defaults (700 tokens in one chunk, the candidates ranked pairwise); and a small plan:
# 16 slots (top-k over 16: a floor from the 128 lane maxima), at most 4 candidates ranked pairwise (more
# are bisected: the 100 tied maxima of row 1, top-p alone, top-k over 16), chunks of 128 tokens (passes of 6 chunks)
PLANS = {"default-plan": (topk_topp.SLOTS, topk_topp.CAPACITY, topk_topp.CHUNK), "small-plan": (16, 4, 128)}


@pytest.fixture(params=list(PLANS))
def plan(request, monkeypatch):
    slots, capacity, chunk = PLANS[request.param]
    monkeypatch.setattr(topk_topp, "CHUNK", chunk)
    return dict(slots=slots, capacity=capacity)


@pytest.mark.parametrize("temperature,k,p", [(0.7, 0, 0.9), (1.0, 50, 1.0), (1.3, 1, 1.0), (0.9, 20, 0.5),
                                             (1.0, 0, 1e-6), (1.0, 700, 0.95), (0.8, 3, 0.3), (1.0, 16, 1.0),
                                             (1.1, 1000, 0.8), (1.0, 0, 1.0)])
def test_top_k_top_p_kernel_is_the_reference(temperature, k, p, plan):
    logits, e = top_k_top_p_rows()
    assert torch.equal(topk_topp.sample_top_k_top_p(logits, temperature, k, p, e, **plan),
                       topk_topp.sample_top_k_top_p_reference(logits, temperature, k, p, e))


def test_top_k_top_p_kernel_one_row(plan):
    """B=1 and a vocabulary of no power of two, both paths: top-k and top-p (about 55 candidates), top-p alone,
    top-k of 300 (over the small plan's 16 slots)."""
    g = torch.Generator().manual_seed(11)
    logits, e = torch.randn(1, 1000, generator=g) * 2, noise(1, 1000, g)
    for temperature, k, p in ((0.8, 50, 0.9), (1.0, 0, 0.9), (1.2, 300, 1.0)):
        assert torch.equal(topk_topp.sample_top_k_top_p(logits, temperature, k, p, e, **plan),
                           topk_topp.sample_top_k_top_p_reference(logits, temperature, k, p, e))


def kept_by_kernel(logits, temperature, k, p, plan=None):
    """Which tokens the kernel (plan None: the reference) keeps, exactly: row v of the probe gives token v noise so
    small that it wins if kept."""
    rows, vocab = logits.shape
    probe = logits.repeat_interleave(vocab, 0)
    e = torch.ones(rows * vocab, vocab)
    e[torch.arange(rows * vocab), torch.arange(vocab).repeat(rows)] = 1e-30
    drawn = (topk_topp.sample_top_k_top_p_reference(probe, temperature, k, p, e) if plan is None else
             topk_topp.sample_top_k_top_p(probe, temperature, k, p, e, **plan))
    return (drawn == torch.arange(vocab).repeat(rows)).reshape(rows, vocab)


def test_top_k_top_p_kernel_keeps_the_reference_tokens(monkeypatch):
    """The kept sets themselves, on rows of 48 where 16 slots hold 3 tokens each, so more tokens than top-k's pass
    the floor and the count above each decides (ranked pairwise: a planted count <= k fails here); ties, -inf."""
    monkeypatch.setattr(topk_topp, "CHUNK", 32)
    plan = dict(slots=16, capacity=64)
    g = torch.Generator().manual_seed(12)
    logits = torch.randn(2, 48, generator=g) * 2
    logits[1, ::5] = logits[1, 7]
    logits[1, 40:] = float("-inf")
    for temperature, k, p in ((0.9, 6, 1.0), (1.1, 10, 0.8), (1.0, 0, 0.6), (0.8, 20, 0.95)):
        kept = kept_by_kernel(logits, temperature, k, p, plan)
        assert torch.equal(kept, kept_by_kernel(logits, temperature, k, p)), (temperature, k, p)


def test_top_k_top_p_kernel_samples_the_truncated_distribution(plan):
    """The kernel's kept set, read off exactly, gives lab.sampling's top-k/top-p distribution (its ties included);
    the reference's race draws follow that distribution (chi-square)."""
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 16, generator=g) * 2
    logits[2, 3] = logits[2, 9] = logits[2].max() + 0.5  # tied top tokens: top-k 1 keeps both
    for temperature, k, p in ((0.8, 5, 1.0), (1.2, 0, 0.7), (0.9, 6, 0.6), (1.0, 1, 1.0)):
        kept = kept_by_kernel(logits, temperature, k, p, plan)
        want = Sampling(temperature=temperature, top_k=k, top_p=p).probs(logits)
        want[2] = torch.where(logits[2] >= logits[2].max(), want[2], 0.0) if k == 1 else want[2]
        got = torch.where(kept, logits / temperature, float("-inf")).softmax(-1)
        assert torch.allclose(got, want, atol=1e-6), (temperature, k, p)
        assert 1 <= kept[0].sum() < 16
    assert kept[2].sum() == 2
    row, n = logits[0], 20000
    draws = topk_topp.sample_top_k_top_p_reference(row[None].expand(n, -1), 0.9, 6, 0.6, noise(n, 16, g))
    probs = Sampling(temperature=0.9, top_k=6, top_p=0.6).probs(row)
    counts = torch.bincount(draws, minlength=16).double()
    assert (counts[probs == 0] == 0).all()
    expected = probs[probs > 0].double() / probs[probs > 0].double().sum() * n
    assert chisquare(counts[probs > 0].numpy(), expected.numpy()).pvalue > 1e-3


def window(g):
    """A window [12, 300]: ties in confidence (equal rows), tied argmax, -inf entries, a sure row."""
    logits = torch.randn(12, 300, generator=g) * 2
    logits[4] = logits[1]
    logits[7, 10] = logits[7, 20] = logits[7].max() + 1
    logits[8, 150:] = float("-inf")
    logits[10, 42] += 30
    return logits, torch.rand(12, generator=g) < 0.7


@pytest.mark.parametrize("threshold,k,block_size", [(0.9, 1, 0), (1.1, 1, 0), (0.0, 1, 0), (0.05, 1, 0),
                                                    (float("inf"), 2, 0), (float("inf"), 2, 4), (0.3, 1, 5)])
def test_dllm_commit_kernel_is_the_reference(threshold, k, block_size):
    g = torch.Generator().manual_seed(6)
    logits, masked = window(g)
    masked[1] = masked[4] = True
    got = dllm_commit.commit_rows(logits, masked, threshold, k, block_size)
    want = dllm_commit.commit_rows_reference(logits, masked, threshold, k, block_size)
    assert torch.equal(got[0], want[0]) and torch.equal(got[2], want[2])
    assert torch.allclose(got[1], want[1], rtol=1e-6, atol=0)
    assert torch.allclose(got[1].double(), rules.confidence(logits, got[0]), rtol=1e-5, atol=0)  # lab's float64
    conf, rows = want[1].tolist(), masked.nonzero()[:, 0].tolist()
    if block_size == 0:  # the reference is the lab's rule
        chosen = rules.above_threshold(conf, rows, threshold) if k == 1 else rules.rank(conf, rows)[:k]
        assert sorted(chosen) == want[2].nonzero()[:, 0].tolist()


@pytest.mark.parametrize("rows,vocab", [(1, 4099), (5, 1000), (3, 100)])
def test_dllm_commit_kernel_over_several_blocks(rows, vocab):
    """Rows split over 5 blocks of 1024 (the last of 3 logits), 8 of 128 and 1 short block: a row's maximum tied
    across blocks (the first is the argmax), a maximum in the last block, a row of -inf (token 0, NaN as softmax)."""
    g = torch.Generator().manual_seed(11 + vocab)
    logits = torch.randn(rows, vocab, generator=g) * 3
    logits[0, [vocab // 2, 3, vocab - 1]] = logits[0].max() + 1  # ties in the middle, the first block, the last
    if rows > 1:
        logits[1, -1] = logits[1].max() + 0.5
        logits[2] = float("-inf")
    masked = torch.ones(rows, dtype=torch.bool)
    masked[2:3] = False
    got = dllm_commit.commit_rows(logits, masked, 0.2, 1, 2)
    want = dllm_commit.commit_rows_reference(logits, masked, 0.2, 1, 2)
    assert got[0][0] == 3 and (rows == 1 or (got[0][1] == vocab - 1 and got[0][2] == 0 and got[1][2].isnan()))
    assert torch.equal(got[0], want[0]) and torch.equal(got[2], want[2])
    assert torch.allclose(got[1], want[1], rtol=1e-6, atol=0, equal_nan=True)


def test_dllm_commit_ties_and_empty_windows():
    g = torch.Generator().manual_seed(7)
    logits, _ = window(g)
    masked = torch.zeros(12, dtype=torch.bool)
    masked[[1, 4, 8]] = True  # rows 1 and 4 are equal: the left-most of a tie is the surer
    tokens, conf, commit = dllm_commit.commit_rows(logits, masked, 1.1)
    assert tokens[7] == 10 and conf[1] == conf[4]
    assert commit.nonzero()[:, 0].tolist() == ([1] if conf[1] >= conf[8] else [8])
    assert not dllm_commit.commit_rows(logits, torch.zeros(12, dtype=torch.bool), 0.0)[2].any()


def test_dllm_commit_kernel_again_and_interleaved():
    """Calls in a row and shapes interleaved: the last program sets the kept counter (kernels.counters) back to 0,
    so every call merges once, after all its blocks."""
    g = torch.Generator().manual_seed(12)
    for rows, vocab in ((5, 1000), (5, 1000), (3, 4099), (5, 1000), (1, 100), (3, 4099), (3, 4099)):
        logits = torch.randn(rows, vocab, generator=g) * 3
        masked = torch.rand(rows, generator=g) < 0.7
        got = dllm_commit.commit_rows(logits, masked, 0.2, 1, 2)
        want = dllm_commit.commit_rows_reference(logits, masked, 0.2, 1, 2)
        assert torch.equal(got[0], want[0]) and torch.equal(got[2], want[2]), (rows, vocab)
        assert torch.allclose(got[1], want[1], rtol=1e-6, atol=0)
    assert not kernels.counters(torch.device("cpu"), 1).any()


def test_bench_gpu_kernel_cases_run_on_the_cpu():
    """`python -m lab bench gpu --kernels`'s cases, small: every kernel (interpreted) agrees with its reference."""
    from lab.bench.gpu import agree, kernel_cases

    cases = kernel_cases("cpu", rows=2, vocab=300, small=200, k=2, window=6, columns=100, tree=8, long=160,
                         prefill=3)
    assert len(cases) == 17
    for name, shape, nbytes, kernel, reference, tolerance in cases:
        assert agree(kernel(), reference(), tolerance), name
    assert [c[5] for c in cases] == [None] * 6 + [2e-2] * 4 + [5e-2, None, 5e-2, 5e-2, 1e-4, 5e-2, None]  # bf16 rows only
    assert not agree((torch.tensor([1, 2]), torch.ones(2)), (torch.tensor([1, 3]), torch.ones(2)))
    assert not agree(torch.ones(2), torch.ones(2) + 1e-3)
    assert agree(torch.ones(2), torch.ones(2) + 1e-2, 2e-2) and not agree(torch.ones(2), torch.ones(2) + 0.1, 2e-2)


def tree_mask(k, columns, g):
    """[k, columns]: a causal prefix of columns - k (some of its columns hidden from the odd rows) and a random tree
    over the last columns (each row sees itself and its ancestors); with fewer columns than rows, row i is node
    i % n."""
    prefix = max(columns - k, 0)
    n = columns - prefix
    parents = [int(torch.randint(-1, i, (), generator=g)) if i else -1 for i in range(n)]
    among = ancestor_mask(parents)[torch.arange(k) % n]
    seen = torch.ones(k, prefix, dtype=torch.bool)
    seen[1::2] = torch.rand(len(range(1, k, 2)), prefix, generator=g) > 0.3
    return torch.cat([seen, among], 1)


def attention_inputs(k, columns, heads, kv_heads, dtype, g, dim=64):
    """q as the fast backend makes it ([k, H, D] transposed) and keys/values as the first columns of a bigger cache."""
    q = torch.randn(k, heads, dim, generator=g).to(dtype).transpose(0, 1)
    cache = torch.randn(2, 3, kv_heads, columns + 11, dim, generator=g).to(dtype)
    keys, values = cache[0, 1, :, :columns], cache[1, 2, :, :columns]
    assert not keys.is_contiguous() and keys.data_ptr() == cache[0, 1].data_ptr()
    return q, keys, values


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (6, 2)])
@pytest.mark.parametrize("columns", [7, 300])
@pytest.mark.parametrize("k", [1, 5, 17])
def test_tree_attention_kernel_is_the_reference(k, columns, heads, kv_heads, dtype, atol):
    """At 300 columns the CPU's plan (8 SMs) gives 2 to 10 splits of 1 to 4 tiles (k=17 in float32: 2 or 3 splits
    of 4 or 2 tiles of 64 columns, the last one past C; 4 blocks of 16 rows with groups of 3); the override 3 splits
    of 4 tiles of 32 columns (the last split's last two past C) and blocks of 32 rows, run in float32 only
    (bfloat16 takes the same path; the interpreter is slow)."""
    g = torch.Generator().manual_seed(8 + k + columns)
    q, keys, values = attention_inputs(k, columns, heads, kv_heads, dtype, g)
    mask = tree_mask(k, columns, g)
    want = tree_attention.tree_attention_reference(q, keys, values, mask)
    assert want.shape == (k, heads * 64) and want.dtype == dtype and not want.isnan().any()
    overrides = [{}, dict(block=(32, 32), splits=2)] if columns > 64 and dtype == torch.float32 else [{}]
    for extra in overrides:
        got = tree_attention.tree_attention(q, keys, values, mask, **extra)
        assert got.dtype == dtype and torch.allclose(got.float(), want.float(), atol=atol, rtol=0), extra
    if columns == 300:
        assert tree_attention.plan(k, columns, heads, kv_heads, 8, dtype)[2] >= 2
        assert tree_attention.plan(k, columns, heads, kv_heads, block=(32, 32), splits=2)[2:] == (3, 4)


def test_tree_attention_rows_that_see_nothing_are_zeros():
    g = torch.Generator().manual_seed(9)
    q, keys, values = attention_inputs(5, 300, 6, 2, torch.float32, g)
    mask = tree_mask(5, 300, g)
    mask[2] = False
    mask[4, :200] = False  # sees columns from 200 on only: the first splits see nothing of it
    for extra in ({}, dict(block=(32, 32), splits=2)):
        got = tree_attention.tree_attention(q, keys, values, mask, **extra)
        assert torch.equal(got[2], torch.zeros(6 * 64)) and not got.isnan().any()
        assert torch.allclose(got, tree_attention.tree_attention_reference(q, keys, values, mask), atol=1e-5, rtol=0)
    none = torch.zeros(5, 300, dtype=torch.bool)
    assert torch.equal(tree_attention.tree_attention(q, keys, values, none), torch.zeros(5, 6 * 64))
    half = [t.half() for t in (q, keys, values)]  # float16 too
    got = tree_attention.tree_attention(*half, mask)
    assert got.dtype == torch.float16 and torch.equal(got[2], torch.zeros_like(got[2]))
    assert torch.allclose(got.float(), tree_attention.tree_attention_reference(*half, mask).float(), atol=1e-2, rtol=0)


def test_tree_attention_merges_more_splits_than_a_step():
    """38 splits of 16 columns: the second kernel merges in two steps of 32 (rescaling the first); row 1 sees only
    columns in the second step, row 2 only in the first."""
    g = torch.Generator().manual_seed(10)
    q, keys, values = attention_inputs(3, 600, 6, 2, torch.float32, g)
    mask = tree_mask(3, 600, g)
    mask[1, :520] = False
    mask[2, 500:] = False
    assert tree_attention.plan(3, 600, 6, 2, block=(16, 16), splits=38)[2] == 38
    got = tree_attention.tree_attention(q, keys, values, mask, block=(16, 16), splits=38)
    assert torch.allclose(got, tree_attention.tree_attention_reference(q, keys, values, mask), atol=1e-5, rtol=0)


def test_tree_attention_merges_in_the_kernel_or_in_a_second():
    """The same 51 rows (17 tokens x 3 heads a kv head) merged by each block's last split (10 splits: 2 steps of 8
    splits x 4 of 16 rows) and by the second kernel (19 splits); row 1 sees only the last split's columns, row 2
    nothing, row 3 only the first split's."""
    g = torch.Generator().manual_seed(13)
    q, keys, values = attention_inputs(17, 600, 6, 2, torch.float32, g)
    mask = tree_mask(17, 600, g)
    mask[1, :580] = False
    mask[2] = False
    mask[3, 40:] = False
    want = tree_attention.tree_attention_reference(q, keys, values, mask)
    for block, splits, fused in (((64, 32), 10, True), ((64, 16), 19, False)):
        block_m, _, count, _ = tree_attention.plan(17, 600, 6, 2, block=block, splits=splits)
        assert count == splits and tree_attention.merging(count, block_m, 51, 64) == (fused, 16, 8)
        got = tree_attention.tree_attention(q, keys, values, mask, block=block, splits=splits)
        assert torch.equal(got[2], torch.zeros(6 * 64)) and torch.allclose(got, want, atol=1e-5, rtol=0), fused


@pytest.mark.parametrize("splits", [1, 3])
def test_tree_attention_skips_the_mask_of_the_visible_prefix(splits):
    """A verification's shape: a prefix every row sees, then a tree. Told the prefix (`visible`, on the device), the
    kernel reads no mask on tiles below it, so a prefix that ends inside a tile, on a tile's edge or before the
    start gives the reference's output; each row sees its own ancestors, so a count that reaches into the tree
    changes it (tiles of 32 columns: the prefix, 260, ends inside the ninth; the tree's columns 260-287 are in that
    tile, whose mask must be read, and the tenth)."""
    g = torch.Generator().manual_seed(23)
    k, columns = 40, 300
    q, keys, values = attention_inputs(k, columns, 8, 2, torch.float32, g)
    mask = tree_mask(k, columns, g)
    mask[:, :columns - k] = True
    want = tree_attention.tree_attention_reference(q, keys, values, mask)
    for visible in (None, 0, 256, columns - k):
        shown = None if visible is None else torch.tensor([visible])
        got = tree_attention.tree_attention(q, keys, values, mask, visible=shown, block=(16, 32), splits=splits)
        assert torch.allclose(got, want, atol=1e-5, rtol=0), visible
    wrong = tree_attention.tree_attention(q, keys, values, mask, visible=torch.tensor([columns]), block=(16, 32),
                                          splits=splits)
    assert not torch.allclose(wrong, want, atol=1e-3, rtol=0)  # told every column: the tree's are all seen


def test_tree_attention_again_and_interleaved():
    """Calls in a row and shapes interleaved, merged in the kernel: each block's last split sets its kept counter
    (kernels.counters) back to 0, so every call merges each block once, after all its splits."""
    g = torch.Generator().manual_seed(21)
    for k, columns, splits in ((3, 300, 5), (3, 300, 5), (5, 192, 3), (3, 300, 5), (1, 256, 4), (5, 192, 3)):
        q, keys, values = attention_inputs(k, columns, 6, 2, torch.float32, g)
        mask = tree_mask(k, columns, g)
        block_m, _, count, _ = tree_attention.plan(k, columns, 6, 2, block=(16, 32), splits=splits)
        assert count == splits and tree_attention.merging(count, block_m, k * 3, 64)[0]
        got = tree_attention.tree_attention(q, keys, values, mask, block=(16, 32), splits=splits)
        want = tree_attention.tree_attention_reference(q, keys, values, mask)
        assert torch.allclose(got, want, atol=1e-5, rtol=0), (k, columns, splits)
    assert not kernels.counters(torch.device("cpu"), 64).any()


@pytest.mark.parametrize("heads,kv_heads,dim", [(9, 3, 64), (32, 8, 128)])
def test_tree_attention_merges_decodes_in_one_launch(heads, kv_heads, dim):
    """On an H200 a decode's splits (32 of 128 columns at C = 4096 for SmolLM2, 16 of 256 for Llama-8B) are merged
    by the last of them, in one step; verifying 64 tokens (8 or 32 splits of 64 rows) takes the second kernel."""
    for k, fused in ((1, True), (64, False)):
        block_m, _, count, _ = tree_attention.plan(k, 4096, heads, kv_heads, 132)
        merge, merge_m, chunk = tree_attention.merging(count, block_m, k * heads // kv_heads, dim)
        assert merge == fused and (not fused or -(-count // chunk) == 1 and merge_m == 4)


@pytest.mark.parametrize("heads,kv_heads", [(9, 3), (32, 8)])
def test_tree_attention_plan_fills_an_h200(heads, kv_heads):
    """From 1024 columns (decode) or 256 (verification of 64 tokens) on, SmolLM2's and Llama-8B's shapes give 1 to 4
    programs per SM of an H200 (132), or 1/2 to 2 for at most 32 rows over at most 4096 columns, each split a power
    of two of whole tiles, the last one reaching C."""
    for k, columns in [(1, c) for c in (1024, 4096, 4097, 32768)] + [(64, c) for c in (256, 4096, 32768)]:
        block_m, block_n, splits, tiles = tree_attention.plan(k, columns, heads, kv_heads, 132)
        programs = kv_heads * -(-k * heads // kv_heads // block_m) * splits
        one = k * heads // kv_heads <= 32 and columns <= 4096  # one program per SM wanted
        assert (66 if one else 132) <= programs <= (2 if one else 4) * 132, (k, columns, programs)
        assert tiles & (tiles - 1) == 0 and (splits - 1) * tiles * block_n < columns <= splits * tiles * block_n
    assert tree_attention.plan(1, 256, heads, kv_heads, 132)[1] == 32  # short: tiles of 32 columns for a decode
    assert tree_attention.plan(64, 256, heads, kv_heads, 132)[1] <= 32  # and narrower for a tree


def test_kernels_compile_for_an_h200():
    """The vocabulary and attention kernels compile for sm_90 with the bench's shapes (no GPU needed:
    tests/hopper_compile.py, outside the interpreter): nothing spilled, the bitmask's loads and stores 16-byte
    vectors, verification's registers within half an SM's 65,536 (2 programs an SM, as `plan` counts on) and
    min-p's race within 64 (4 an SM, sampling.RESIDENT)."""
    if not (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas").exists():
        pytest.skip("Triton without its NVIDIA backend")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, str(Path(__file__).parent / "hopper_compile.py")], env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    got = {r["name"]: r for r in map(json.loads, run.stdout.splitlines())}
    assert len(got) == 16 and all(r["spilled"] == 0 for r in got.values()), got
    assert got["bitmask"]["loads_v4"] == got["bitmask"]["stores_v4"] == 8
    verify = got["attention k=64 H=32"]
    assert 2 * verify["warps"] * 32 * verify["registers"] <= 65536, verify
    assert got["min-p race"]["registers"] <= 64


def test_tree_rejection_kernels_match_their_reference():
    """Random trees (`tree_rejection.random_inputs`: drawn and fixed nodes, bushy trees of drafts near the target,
    rows where q == p so that a rejection leaves the residual as it was, nodes without rows of their own) over
    vocabularies of one block and of several: the kernels' path and token are the reference's."""
    from lab.kernels import tree_rejection as tr

    g = torch.Generator().manual_seed(0)
    seen = set()
    for trial in range(160):
        vocab = int(torch.randint(3, 40, (), generator=g)) if trial % 6 else 2 * tr.BLOCK + 5
        args = tr.random_inputs(g, vocab, trial)
        want = tr.tree_rejection_reference(*args)
        assert torch.equal(tr.tree_rejection(*args), want), (trial, want)
        seen.add((int(want[1]), int(want[3]) < 0))
    assert len(seen) >= 5  # paths of several depths, with and without a token after them
