"""DySpec: the tree is grown in priority order, so at T = 0 it holds exactly the most valuable paths.

A path's value is the product of the draft's probabilities along it; values here are recomputed from the
draft model directly (a full forward per path), not from what the drafter stored.
"""
from __future__ import annotations

import torch

from lab.backends.hf import HFBackend
from lab.decoding import Decoding
from lab.models import tiny
from lab.sampling import Sampling
from lab.speculative.best_first import BestFirstDrafter

PROMPT = [3, 9, 4, 1, 7, 2, 9, 4]
VOCAB = 24


def setup(temperature: float, seed: int = 0):
    target = HFBackend(tiny("llama", vocab_size=VOCAB, seed=1))
    draft_model = tiny("llama", vocab_size=VOCAB, layers=1, hidden=32, seed=4 + seed, init_std=0.25)
    dec = Decoding(target, PROMPT, Sampling(temperature=temperature), torch.Generator().manual_seed(seed),
                   max_new_tokens=32, eos=set())
    return dec, HFBackend(draft_model), draft_model


def next_probs(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, -1].float().softmax(-1)


def path_tokens(tree, node):
    return [tree.tokens[i] for i in tree.path(node)]


def value(model, tree, node) -> float:
    """Product of the draft's probabilities along the node's path, from fresh forwards."""
    out, ids = 1.0, list(PROMPT)
    for token in path_tokens(tree, node):
        out *= float(next_probs(model, ids)[token])
        ids.append(token)
    return out


def test_greedy_tree_is_the_most_valuable_paths_one_forward_per_level():
    for seed in range(3):
        dec, runner, model = setup(0.0, seed)
        nodes, depth = 10, 4
        drafter = BestFirstDrafter(runner, nodes=nodes, max_depth=depth)
        before = runner.forwards
        tree = drafter.propose(dec, PROMPT[-1])
        assert len(tree) == nodes
        values = [value(model, tree, i) for i in range(len(tree))]
        assert torch.allclose(torch.tensor(values), torch.tensor(drafter.values), rtol=1e-4)
        # every child not taken (the best one left under each node that may grow) is worth no more than
        # the least valuable node taken: the tree is the top-`nodes` set a one-at-a-time heap would pop
        worst = min(values)
        for node in [-1] + [i for i, d in enumerate(tree.depths()) if d < depth]:
            base = 1.0 if node < 0 else values[node]
            probs = next_probs(model, PROMPT + (path_tokens(tree, node) if node >= 0 else [])).clone()
            probs[[tree.tokens[c] for c in tree.children(node)]] = 0.0
            assert base * float(probs.max()) <= worst * (1 + 1e-4), (seed, node)
        # pops follow the heap's order within each round; one draft forward per round, one round per level
        for keys in drafter.rounds:
            assert keys == sorted(keys, reverse=True)
        assert runner.forwards - before <= max(tree.depths())


def test_greedy_tree_is_not_a_fixed_shape():
    """A confident draft and an unsure one (the same model at another scale) grow different shapes."""
    dec, runner, model = setup(0.0)
    shapes = set()
    for scale in (0.3, 3.0):
        with torch.no_grad():
            model.lm_head.weight.mul_(scale)
        runner.reset()
        tree = BestFirstDrafter(runner, nodes=10, max_depth=6).propose(dec, PROMPT[-1])
        shapes.add(tuple(tree.parents))
        with torch.no_grad():
            model.lm_head.weight.div_(scale)
    assert len(shapes) == 2


def test_sampled_children_are_drawn_without_replacement_with_their_conditional_q():
    for seed in range(3):
        dec, runner, model = setup(0.8, seed)
        drafter = BestFirstDrafter(runner, nodes=12, max_depth=4)
        tree = drafter.propose(dec, PROMPT[-1])
        assert len(tree) == 12
        for node in [-1] + list(range(len(tree))):
            kids = tree.children(node)
            if not kids:
                continue
            ids = PROMPT + (path_tokens(tree, node) if node >= 0 else [])
            with torch.no_grad():
                q = dec.probs(model(torch.tensor([ids])).logits[0, -1])
            assert len({tree.tokens[c] for c in kids}) == len(kids)  # distinct siblings
            left = q.clone()
            for c in kids:  # child j was drawn from q without the earlier siblings, renormalised
                assert torch.allclose(tree.q[c], left / left.sum(), atol=1e-5)
                left[tree.tokens[c]] = 0.0
        for keys in drafter.rounds:
            assert keys == sorted(keys, reverse=True)
