"""The verifier keeps the target distribution: chains and trees, drawn or fixed drafts (chi-square)."""
from __future__ import annotations

import torch
from scipy.stats import chisquare

from lab.speculative.verify import greedy_tree, verify_stochastic
from lab.tree import Tree

V = 6
N = 20000


def dist(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(V, generator=g) * 1.2).softmax(-1)


def first_token_counts(make_tree, p_rows, n=N, seed=0):
    """Distribution of the first committed token over n verifications of freshly drawn trees."""
    rng = torch.Generator().manual_seed(seed)
    counts = torch.zeros(V)
    for _ in range(n):
        tree = make_tree(rng)
        verdict = verify_stochastic(tree, p_rows(tree), rng)
        first = tree.tokens[verdict.accepted[0]] if verdict.accepted else verdict.bonus
        counts[first] += 1
    return counts


def assert_matches(counts, p):
    pvalue = chisquare(counts.numpy(), (p * counts.sum()).numpy()).pvalue
    assert pvalue > 1e-3, (counts / counts.sum(), p)


def test_chain_with_a_drawn_draft():
    p, q = dist(0), dist(1)

    def make(rng):
        t = Tree()
        t.add(int(torch.multinomial(q, 1, generator=rng)), -1, q=q)
        return t

    assert_matches(first_token_counts(make, lambda t: p.expand(len(t) + 1, V)), p)


def test_tree_of_iid_children_specinfer():
    p, q = dist(2), dist(3)

    def make(rng):
        t = Tree()
        for _ in range(3):
            t.add(int(torch.multinomial(q, 1, generator=rng)), -1, q=q)
        return t

    assert_matches(first_token_counts(make, lambda t: p.expand(len(t) + 1, V)), p)


def test_fixed_candidates_without_a_distribution():
    p = dist(4)

    def make(rng):
        t = Tree()
        for tok in (int(p.argmin()), 2, 3):
            t.add(tok, -1)
        return t

    assert_matches(first_token_counts(make, lambda t: p.expand(len(t) + 1, V)), p)


def test_second_token_after_acceptance_is_the_target_conditional():
    """Along a chain of two drawn drafts, the pair of committed tokens follows p(x1) p(x2 | x1)."""
    p1, q1 = dist(5), dist(6)
    p2 = torch.stack([dist(10 + v) for v in range(V)])  # p(x2 | x1)
    q2 = torch.stack([dist(30 + v) for v in range(V)])
    rng = torch.Generator().manual_seed(7)
    counts = torch.zeros(V * V)
    n = 30000
    for _ in range(n):
        a = int(torch.multinomial(q1, 1, generator=rng))
        b = int(torch.multinomial(q2[a], 1, generator=rng))
        t = Tree()
        t.add(a, -1, q=q1)
        t.add(b, 0, q=q2[a])
        rows = torch.stack([p1, p2[a], p2[b]])  # row 2 (after b) is unused for two tokens
        verdict = verify_stochastic(t, rows, rng)
        toks = [t.tokens[i] for i in verdict.accepted] + [verdict.bonus]
        if len(toks) == 1:  # a rejected first draft: draw the second token from the target, as decoding would
            toks.append(int(torch.multinomial(p2[toks[0]], 1, generator=rng)))
        counts[toks[0] * V + toks[1]] += 1
    exact = (p1[:, None] * p2).flatten()
    keep = exact * n >= 5
    pvalue = chisquare(counts[keep].numpy(), (exact[keep] / exact[keep].sum() * counts[keep].sum()).numpy()).pvalue
    assert pvalue > 1e-3


def test_greedy_follows_the_argmax_path():
    t = Tree()
    a = t.add(5, -1)
    t.add(1, a)
    b = t.add(4, a)
    t.add(2, -1)
    logits = torch.full((5, V), -1.0)
    logits[0, 5] = 1  # root -> 5 (node 0)
    logits[1, 4] = 1  # node 0 -> 4 (node 2)
    logits[3, 3] = 1  # node 2 -> 3: not drafted, so 3 is the bonus
    verdict = greedy_tree(t, logits)
    assert verdict.accepted == [a, b] and verdict.bonus == 3


def test_tree_data():
    t = Tree()
    a = t.add(10, -1)
    b = t.add(11, a)
    c = t.add(12, -1)
    assert t.depths() == [1, 2, 1]
    assert t.paths() == [[a, b], [c]]
    assert t.with_root(9) == ([9, 10, 11, 12], [-1, 0, 1, 0])


# -- the device verifiers against the reference walk --------------------------------------------------------
def random_tree(g: torch.Generator, vocab: int, nodes: int, drawn: bool) -> Tree:
    """A random tree (parents first), sometimes with repeated sibling tokens, drawn or fixed nodes."""
    tree = Tree()
    for i in range(nodes):
        parent = int(torch.randint(-1, i, (), generator=g)) if i else -1
        token = int(torch.randint(vocab, (), generator=g))
        q = (torch.randn(vocab, generator=g) * 2).softmax(-1) if drawn and bool(torch.rand((), generator=g) < 0.7) \
            else None
        tree.add(token, parent, 1.0, q)
    return tree


def tree_and_rows(g: torch.Generator, trial: int, vocab: int, most: int) -> tuple[Tree, torch.Tensor]:
    """A random tree of drawn and fixed nodes (`random_tree`, up to `most` nodes) and the target's rows for it; on
    every fifth trial its last nodes were drafted while the target ran and have no rows of their own."""
    tree = random_tree(g, vocab=vocab, nodes=int(torch.randint(0, most + 1, (), generator=g)), drawn=True)
    probs = (torch.randn(len(tree) + 1, vocab, generator=g) * 1.5).softmax(-1)
    if len(tree) > 2 and trial % 5 == 0:
        last = max(i for i, p in enumerate(tree.parents) if p < len(tree) - 2)
        tree.scored = last + 1
        probs = probs[: last + 2]
    return tree, probs


def test_rejection_tree_is_the_reference_walk_for_the_same_uniforms():
    """Same uniforms per node: the same accepted path and the same distribution for the next token, whatever
    the tree (chains, siblings, repeated siblings, fixed and drawn nodes, nodes without rows)."""
    from lab.speculative.verify import rejection_tree, stochastic_walk

    g = torch.Generator().manual_seed(1)
    outcomes = set()
    for trial in range(300):
        tree, probs = tree_and_rows(g, trial, vocab=5, most=9)
        u = torch.rand(len(tree), generator=g)
        path, final, recovered = stochastic_walk(tree, probs, lambda c: float(u[c]))
        verdict, got_final = rejection_tree(tree, probs, g, uniforms=u)
        assert verdict.accepted == path, trial
        if final is None:
            assert verdict.bonus is None
        else:
            assert torch.allclose(got_final, final, atol=1e-6) and verdict.recovered == recovered, trial
        outcomes.add((len(path), final is None, recovered))
    assert len(outcomes) >= 6  # the trials met accepted paths of several lengths, rejections and missing rows


def test_rejection_tree_keeps_the_target_distribution():
    """The device verifier, like the reference: first committed token ~ p for a 2-sibling tree of drawn drafts."""
    from lab.speculative.verify import rejection_tree

    p, q = dist(7), dist(8)
    rng = torch.Generator().manual_seed(3)
    counts = torch.zeros(V)
    rejected = 0
    for _ in range(N // 2):
        tree = Tree()
        for _ in range(2):
            tree.add(int(torch.multinomial(q, 1, generator=rng)), -1, 1.0, q)
        verdict, _ = rejection_tree(tree, torch.stack([p, p, p]), rng)
        rejected += not verdict.accepted
        counts[tree.tokens[verdict.accepted[0]] if verdict.accepted else verdict.bonus] += 1
    assert rejected > N // 20  # rejections (and residual draws) really happened
    assert_matches(counts, p)


def test_the_tree_rejection_kernels_are_the_reference_walk_for_the_same_uniforms():
    """`rejection_tree_kernel` (the Triton kernels in the interpreter): the reference walk's path for the same
    uniforms, and the token after it the race's draw from the walk's distribution, whatever the tree."""
    from lab.speculative.verify import rejection_tree_kernel, stochastic_walk

    g = torch.Generator().manual_seed(2)
    outcomes = set()
    for trial in range(150):
        tree, probs = tree_and_rows(g, trial, vocab=6, most=8)
        u, noise = torch.rand(len(tree), generator=g), torch.empty(6).exponential_(generator=g)
        path, final, recovered = stochastic_walk(tree, probs, lambda c: float(u[c]))
        verdict = rejection_tree_kernel(tree, probs, g, uniforms=u, noise=noise)
        assert verdict.accepted == path, trial
        if final is None:
            assert verdict.bonus is None, trial
        else:
            assert verdict.bonus == int((final / noise).argmax()) and verdict.recovered == recovered, trial
        outcomes.add((len(path), final is None, recovered))
    assert len(outcomes) >= 6


def test_a_later_sibling_is_tested_against_the_normalised_residual():
    """p = (.4, .3, .2, .1); child 1 (token 3, q1 = (.1, .1, .1, .7)) is rejected, leaving left = (.5, 1/3, 1/6, 0);
    child 2 (token 1, q2(1) = .6) then passes for u < (1/3) / .6 = .556: at u = .5 it is accepted, at u = .6 not,
    by the reference walk and by the kernels (a residual left unnormalised, (.3, .2, .1, 0), would reject both)."""
    from lab.speculative.verify import rejection_tree_kernel, stochastic_walk

    p = torch.tensor([[0.4, 0.3, 0.2, 0.1]])
    q1, q2 = torch.tensor([0.1, 0.1, 0.1, 0.7]), torch.tensor([0.1, 0.6, 0.2, 0.1])
    tree = Tree()
    tree.add(3, -1, 1.0, q1)
    tree.add(1, -1, 1.0, q2)
    for second, accepted in ((0.5, [1]), (0.6, [])):
        u = torch.tensor([0.99, second])
        assert stochastic_walk(tree, p, lambda c: float(u[c]))[0] == accepted
        verdict = rejection_tree_kernel(tree, p, None, uniforms=u, noise=torch.ones(4))
        assert verdict.accepted == accepted and (verdict.bonus is None) == bool(accepted)
