"""Lookahead decoding: one combined forward gives the verification branch a plain tree forward's logits and
each lookahead column its own trajectory's logits; the pool's n-grams get accepted; sampling stays exact
when pooled n-grams are verified stochastically."""
from __future__ import annotations

import torch

from lab.speculative.drafters.lookahead import (
    NgramPool,
    candidate_tree,
    combined_inputs,
)

from ..conftest import hf_greedy, tiny_lab
from ..two_tokens import chi_square_p
from .test_sjd import PROMPT as DIST_PROMPT
from .test_sjd import T, exact_three_token_distribution, sampling_lab

PROMPT = [1, 2, 3, 4] * 3


def test_pool_keeps_the_most_recent_distinct_ngrams_per_first_token():
    pool = NgramPool(per_key=2)
    for ngram in ([5, 1, 2], [5, 3, 4], [5, 1, 2], [5, 6, 7], [9, 1, 1]):
        pool.add(ngram)
    assert pool.continuations(5) == [(6, 7), (1, 2)]
    assert pool.continuations(9) == [(1, 1)] and pool.continuations(4) == [] and len(pool) == 3


def test_candidate_tree_merges_shared_prefixes_and_cuts_depth():
    continuations = [(1, 2, 3), (1, 2, 4), (1, 5, 6), (7, 8, 9)]
    tree = candidate_tree(continuations, depth=3)
    prefixes = {c[:d] for c in continuations for d in (1, 2, 3)}
    assert len(tree) == len(prefixes)
    assert sorted(tuple(tree.tokens[i] for i in path) for path in tree.paths()) == sorted(continuations)
    assert max(candidate_tree(continuations, depth=2).depths()) == 2


def test_combined_forward_matches_separate_forwards():
    """Verification rows equal a plain tree forward; lookahead rows equal forwarding their own trajectory."""
    for arch in ("llama", "gpt2"):
        lab_ = tiny_lab(arch, vocab_size=32, seed=1)
        runner = lab_.target
        g = torch.Generator().manual_seed(0)
        tree = candidate_tree([tuple(torch.randint(32, (3,), generator=g).tolist()) for _ in range(4)], depth=3)
        levels = [torch.randint(32, (4,), generator=g).tolist() for _ in range(3)]  # W = 4, N = 4
        root = 7
        levels[0][0] = root
        tokens, among, offsets, row_of = combined_inputs(root, tree, levels)
        runner.prefill(PROMPT)
        start = runner.length
        combined = runner.forward(tokens, among=among, positions=[start + o for o in offsets]).logits

        runner.prefill(PROMPT)
        plain = runner.forward(*tree.with_root(root)).logits
        torch.testing.assert_close(combined[: len(tree) + 1], plain, atol=1e-4, rtol=1e-4)
        for (j, c), row in row_of.items():
            trajectory = levels[0][: c + 1] + [levels[i][c] for i in range(1, j + 1)]
            runner.prefill(PROMPT)
            alone = runner.forward(trajectory).logits[-1]
            torch.testing.assert_close(combined[row], alone, atol=1e-4, rtol=1e-4)


def test_pooled_ngrams_are_accepted_and_output_is_greedy():
    """Without a verification branch every forward commits one token; with the pool it commits more."""
    gained = 0.0
    for arch in ("llama", "qwen2", "gpt2"):
        lab_ = tiny_lab(arch, vocab_size=8, seed=2)
        want = hf_greedy(lab_.model, PROMPT, 48)
        trace = lab_.generate("lookahead", PROMPT, max_new_tokens=48).trace
        assert trace.tokens == want, arch
        assert any(len(s.accepted) >= 2 for s in trace.steps), arch  # whole pooled n-grams were accepted
        blind = lab_.generate("lookahead", PROMPT, max_new_tokens=48, candidates=0).trace
        assert blind.tokens == want and blind.forwards == 47  # one token per forward (the first is the prefill's)
        gained += trace.tokens_per_forward
    assert gained / 3 > 1.5


def test_three_token_distribution_with_pooled_candidates():
    """With bigrams (ngram=2) the pool fills from the first step, so the third token is verified stochastically."""
    lab_ = sampling_lab()
    exact = exact_three_token_distribution(lab_.model, DIST_PROMPT, T)
    rng = torch.Generator().manual_seed(99)
    counts, verified = torch.zeros(len(exact)), 0
    for _ in range(3000):
        trace = lab_.generate("lookahead", DIST_PROMPT, max_new_tokens=3, temperature=T, rng=rng, ngram=2).trace
        a, b, c = trace.tokens
        counts[(a * 8 + b) * 8 + c] += 1
        verified += any(s.proposed for s in trace.steps)
    assert verified > 1000
    assert chi_square_p(counts, exact) > 1e-3
