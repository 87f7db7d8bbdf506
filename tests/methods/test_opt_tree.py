"""OPT-Tree: the proposed tree is the global top-n of all draft paths by cumulative draft probability, and it
stops growing exactly when another level would add less than `min_gain` to the expected acceptance length."""
from __future__ import annotations

import torch

from lab.backends.hf import HFBackend
from lab.decoding import Decoding
from lab.sampling import Sampling
from lab.speculative.draft_trees import path_probs
from lab.speculative.drafters.opt_tree import OptimalTree

from ..conftest import tiny_lab

V = 8
PROMPT = [1, 2, 3, 1, 2, 3, 1, 2]


def decoding(lab_, temperature=0.0) -> Decoding:
    dec = Decoding(lab_.target, PROMPT, Sampling(temperature), torch.Generator().manual_seed(0), 20, set(),
                   lab=lab_)
    dec.tokens = [4]
    return dec


def all_path_probs(runner: HFBackend, context: list[int], depth: int, sampling: Sampling) -> dict[tuple, float]:
    """Cumulative draft probability of every token path up to `depth`, by plain forwards of the draft."""
    out, level = {}, {(): 1.0}
    for _ in range(depth):
        paths = list(level)
        with torch.no_grad():
            logits = runner.model(torch.tensor([context + list(p) for p in paths])).logits[:, -1].float()
        probs = logits.softmax(-1) if sampling.greedy else sampling.probs(logits)
        level = {p + (t,): level[p] * float(probs[i, t]) for i, p in enumerate(paths) for t in range(V)}
        out.update(level)
    return out


def tree_paths(tree) -> list[tuple]:
    return [tuple(tree.tokens[n] for n in tree.path(node)) for node in range(len(tree))]


def test_the_tree_is_the_global_top_n_by_path_probability():
    tl = tiny_lab("llama", vocab_size=V, seed=3, init_std=0.3)
    draft = HFBackend(tiny_lab("llama", vocab_size=V, layers=1, seed=4, init_std=0.3).model)
    for temperature, nodes in [(0.0, 6), (0.0, 11), (0.8, 9)]:
        dec = decoding(tl, temperature)
        tree = OptimalTree(draft, nodes=nodes, max_depth=3, min_gain=0.0).propose(dec, 4)
        scores = all_path_probs(draft, dec.context, 3, dec.sampling)
        best = sorted(scores, key=scores.get, reverse=True)[:nodes]
        assert sorted(tree_paths(tree)) == sorted(best), temperature
        got = path_probs(tree)  # the probabilities the tree carries are the draft's, through the tree mask
        assert all(abs(g - scores[p]) < 1e-4 for g, p in zip(got, tree_paths(tree)))
        assert all(q is None for q in tree.q)  # fixed candidates: lossless at any temperature


def test_growth_stops_when_a_level_gains_less_than_min_gain():
    tl = tiny_lab("qwen2", vocab_size=V, seed=5, init_std=0.3)
    draft = tl.target.view([0])
    dec = decoding(tl)
    for min_gain in (0.02, 0.1, 0.3):
        drafter = OptimalTree(draft, nodes=8, max_depth=6, min_gain=min_gain)
        tree = drafter.propose(dec, 4)
        depth = max(tree.depths(), default=0)
        deeper = OptimalTree(draft, nodes=8, max_depth=depth + 1, min_gain=0.0)
        deeper_tree = deeper.propose(dec, 4)
        assert abs(drafter.expected[-1] - sum(path_probs(tree))) < 1e-5
        if depth < 6 and max(deeper_tree.depths()) > depth:  # another level was possible but gained too little
            assert deeper.expected[-1] - drafter.expected[-1] < min_gain
        if depth > 1:  # and the last level it took was worth it
            shallower = OptimalTree(draft, nodes=8, max_depth=depth - 1, min_gain=0.0)
            shallower.propose(dec, 4)
            assert drafter.expected[-1] - shallower.expected[-1] >= min_gain
