"""Recursive Speculative Decoding: siblings are distinct, each carries q with its earlier siblings removed, and
recursive rejection sampling over such siblings keeps the target distribution (chi-square)."""
from __future__ import annotations

import torch
from scipy.stats import chisquare

from lab.backends.hf import HFBackend
from lab.decoding import Decoding
from lab.sampling import Sampling
from lab.speculative.draft_trees import ShapeDrafter, branching_shape
from lab.speculative.expand import sample_children
from lab.speculative.verify import verify_stochastic
from lab.tree import Tree

from ..conftest import tiny_lab

V, N = 6, 8000
PROMPT = [5, 1, 4, 2, 7, 5, 1, 4]


def dist(seed: int, scale: float = 1.2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(V, generator=g) * scale).softmax(-1)


def first_token_counts(p, q, conditional: bool, children: int = 3, seed: int = 0) -> torch.Tensor:
    """First committed token over N verifications of root children drawn from q without replacement."""
    rng = torch.Generator().manual_seed(seed)
    counts = torch.zeros(V)
    for _ in range(N):
        tree = Tree()
        for token, q_i in sample_children(q, children, rng, replacement=False):
            tree.add(token, -1, q=q_i if conditional else q)
        verdict = verify_stochastic(tree, p.expand(len(tree) + 1, V), rng)
        counts[tree.tokens[verdict.accepted[0]] if verdict.accepted else verdict.bonus] += 1
    return counts


def pvalue(counts, p) -> float:
    p = p.double() / p.double().sum()
    return float(chisquare(counts.double().numpy(), (p * counts.sum()).numpy()).pvalue)


# the draft puts most of its mass on a token the target dislikes: later siblings matter
P_SKEWED = torch.tensor([0.02, 0.3, 0.3, 0.2, 0.1, 0.08])
Q_SKEWED = torch.tensor([0.6, 0.1, 0.1, 0.1, 0.05, 0.05])


def test_recursive_rejection_with_distinct_siblings_keeps_the_target_distribution():
    for p, q in [(dist(4, 1.5), dist(5, 2.0)), (P_SKEWED, Q_SKEWED)]:
        assert pvalue(first_token_counts(p, q, conditional=True), p) > 1e-3


def test_verifying_against_the_unconditioned_q_would_not():
    """The conditional q_i is what makes it exact: the same siblings checked against q drift off p."""
    assert pvalue(first_token_counts(P_SKEWED, Q_SKEWED, conditional=False), P_SKEWED) < 1e-3


def draft_probs(runner: HFBackend, tokens: list[int], sampling: Sampling) -> torch.Tensor:
    with torch.no_grad():
        return sampling.probs(runner.model(torch.tensor([tokens])).logits[0, -1].float())


def test_siblings_are_distinct_and_carry_q_without_their_elder_siblings():
    tl = tiny_lab("llama", vocab_size=8, seed=3, init_std=0.15)
    draft, sampling = HFBackend(tl.model), Sampling(0.8)
    drafter = ShapeDrafter(draft, branching_shape([4, 2]), replacement=False)
    for seed in range(30):
        dec = Decoding(tl.target, PROMPT, sampling, torch.Generator().manual_seed(seed), 10, set(), lab=tl)
        dec.tokens = [3]
        tree = drafter.propose(dec, 3)
        assert len(tree) == 4 + 8
        for parent in [-1, *range(4)]:
            kids = tree.children(parent)
            tokens = [tree.tokens[k] for k in kids]
            assert len(set(tokens)) == len(tokens)
            path = [tree.tokens[n] for n in tree.path(parent)] if parent >= 0 else []
            q = draft_probs(draft, dec.context + path, sampling)
            for i, kid in enumerate(kids):
                want = q.clone()
                want[tokens[:i]] = 0.0
                assert torch.allclose(tree.q[kid], want / want.sum(), atol=1e-5)
