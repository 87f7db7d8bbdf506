"""Sequoia: the dynamic program finds the best tree (against brute force), the per-rank acceptance estimate is
unbiased with or without censoring, the budget follows the latency profile, and the drafter fills the DP shape
with the draft's top-ranked tokens."""
from __future__ import annotations

import itertools

import numpy as np
import torch

from lab.decoding import Decoding
from lab.sampling import Sampling
from lab.speculative.drafters.sequoia import RankAcceptance, SequoiaTree
from lab.speculative.shapes.sequoia import (
    LatencyProfile,
    acceptance_by_rank,
    best_trees,
    choose_budget,
    expected_accepted,
)

from ..conftest import tiny_lab


def ordered_trees(nodes: int, depth: int, width: int):
    """Every tree of exactly `nodes` nodes below a root, at most `depth` levels, children in rank order, as
    nested lists of child subtrees."""
    if nodes == 0:
        yield []
        return
    if depth == 0:
        return
    for k in range(1, width + 1):
        for sizes in itertools.product(range(1, nodes + 1), repeat=k):
            if sum(sizes) != nodes:
                continue
            for subtrees in itertools.product(*(list(ordered_trees(s - 1, depth - 1, width)) for s in sizes)):
                yield list(subtrees)


def nested_value(children, a) -> float:
    return sum(a[rank] * (1.0 + nested_value(sub, a)) for rank, sub in enumerate(children))


def test_the_dynamic_program_matches_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(4):
        a = np.sort(rng.dirichlet(np.ones(4)))[::-1][:3]  # three ranks; mass left over is "none accepted"
        table = best_trees(a, max_nodes=6, max_depth=4)
        for depth in (1, 2, 4):
            for nodes in range(1, 7):
                values = [nested_value(t, a) for t in ordered_trees(nodes, depth, 3)]
                if not values:
                    assert not np.isfinite(table.value[depth + 1][nodes + 1])
                    continue
                assert abs(table.expected(nodes, depth) - max(values)) < 1e-9, (trial, depth, nodes)
                shape = table.shape(nodes, depth)
                assert len(shape) == nodes
                assert abs(expected_accepted(shape, a) - max(values)) < 1e-9


def test_a_flat_acceptance_grows_wide_trees_and_a_confident_draft_grows_chains():
    flat = best_trees([0.2, 0.2, 0.2, 0.2], max_nodes=4, max_depth=4).shape(4, 4)
    assert flat == [-1, -1, -1, -1]
    sure = best_trees([0.9, 0.05, 0.02, 0.01], max_nodes=4, max_depth=4).shape(4, 4)
    assert sure == [-1, 0, 1, 2]


def test_acceptance_estimate_is_unbiased_with_and_without_censoring():
    rank_probs = np.array([0.5, 0.2, 0.1, 0.05])  # the rest: the target's token is ranked past the width
    rng = np.random.default_rng(1)
    exact, censored = RankAcceptance(4, prior_weight=1e-9), RankAcceptance(4, prior_weight=1e-9)
    for _ in range(40000):
        rank = rng.choice(5, p=np.append(rank_probs, 0.15))
        exact.observe_rank(int(rank))
        tried = int(rng.integers(1, 5))  # a tree only tries as many children as it has
        censored.observe(tried, int(rank) if rank < tried else None)
    assert np.allclose(exact.vector(), rank_probs, atol=0.01)
    assert np.allclose(censored.vector(), rank_probs, atol=0.015)
    assert np.allclose(acceptance_by_rank(exact.hazard), exact.vector())


def test_the_budget_follows_the_hardware():
    table = best_trees([0.5, 0.2, 0.1, 0.05], max_nodes=32, max_depth=6)
    sizes = [1, 8, 33]
    free = LatencyProfile(sizes, [1.0, 1.0, 1.0])
    nodes, depth = choose_budget(table, free, LatencyProfile(sizes, [0.0, 0.0, 0.0]), 32, 6)
    assert nodes == 32  # free nodes and free drafting: the largest tree, as deep as it likes
    assert table.value[depth + 1][33] == table.value[7][33]
    steep = LatencyProfile(sizes, [1.0, 8.0, 33.0])  # cost grows with every token
    small, _ = choose_budget(table, steep, LatencyProfile(sizes, [0.1, 0.1, 0.1]), 32, 6)
    assert small < 8
    costly_draft = LatencyProfile(sizes, [1.0, 1.0, 1.0])
    _, shallow = choose_budget(table, free, costly_draft, 32, 6)
    assert shallow < 6  # each level costs a draft forward as slow as the target's


def test_the_drafter_fills_the_dp_shape_with_the_draft_top_tokens():
    tl = tiny_lab("llama", vocab_size=96, seed=1)
    draft = tl.target.view([0])
    prompt = [(i * 3) % 50 + 1 for i in range(12)] * 2
    dec = Decoding(tl.target, prompt, Sampling(0.0), torch.Generator().manual_seed(0), 20, set(), lab=tl)
    dec.tokens = [7]
    drafter = SequoiaTree(draft, budget=10, max_nodes=10, max_depth=4, width=4)
    tree = drafter.propose(dec, 7)
    nodes, depth, _ = drafter.chosen[-1]
    assert nodes == 10 == len(tree)
    assert tree.parents == best_trees(drafter.stats.vector(), 10, 4).shape(10, depth)
    for parent in [-1, *range(len(tree))]:
        kids = tree.children(parent)
        if kids:
            path = [tree.tokens[n] for n in tree.path(parent)] if parent >= 0 else []
            with torch.no_grad():
                logits = draft.model(torch.tensor([dec.context + path])).logits[0, -1]
            assert [tree.tokens[k] for k in kids] == torch.topk(logits, len(kids)).indices.tolist()
