"""SpecInfer: the draft tree follows the expansion option, its children are the draft's top-k at T=0 and
i.i.d. draws from the draft's q at T>0 (each carrying q), and repeated draws are left unexpanded."""
from __future__ import annotations

import torch
from scipy.stats import chisquare

from lab.backends.hf import HFBackend
from lab.decoding import Decoding
from lab.sampling import Sampling
from lab.speculative.draft_trees import ShapeDrafter, branching_shape, parse_branching

from ..conftest import tiny_lab, use_draft

PROMPT = [5, 1, 4, 2, 7, 5, 1, 4]  # fits the 8-token vocabulary too


def decoding(lab_, temperature=0.0, seed=0, remaining=16, root=3) -> Decoding:
    dec = Decoding(lab_.target, PROMPT, Sampling(temperature), torch.Generator().manual_seed(seed),
                   remaining + 1, set(), lab=lab_)
    dec.tokens = [root]  # the root is committed: the drafter drafts after it
    return dec


def draft_logits(runner: HFBackend, tokens: list[int]) -> torch.Tensor:
    """The draft's next-token logits after `tokens`, by a plain forward (no cache, no tree mask)."""
    with torch.no_grad():
        return runner.model(torch.tensor([tokens])).logits[0, -1].float()


def level_sizes(parents: list[int]) -> list[int]:
    depth = []
    for p in parents:
        depth.append(1 if p < 0 else depth[p] + 1)
    return [depth.count(d) for d in range(1, max(depth) + 1)]


def test_the_proposed_trees_follow_the_expansion_option():
    tl = tiny_lab("llama", vocab_size=96, seed=1)
    use_draft(tl, tl.target.view([0]))
    trace = tl.generate("specinfer", PROMPT, max_new_tokens=20, expansion="3,2,1").trace
    full = [s for s in trace.steps if s.proposed and len(s.proposed) == 3 + 6 + 6]
    assert full, "no full-depth tree was proposed"
    for step in full:
        assert level_sizes(step.parents) == [3, 6, 6]
        assert [step.parents.count(n) for n in range(3)] == [2, 2, 2]
        assert [step.parents.count(n) for n in range(3, 9)] == [1] * 6
    assert parse_branching("2x2x1") == [2, 2, 1]


def test_children_are_the_draft_top_k_at_temperature_0():
    tl = tiny_lab("qwen2", vocab_size=96, seed=2)
    draft = tl.target.view([0])
    dec = decoding(tl)
    tree = ShapeDrafter(draft, branching_shape([3, 2]), replacement=True).propose(dec, dec.tokens[-1])
    assert len(tree) == 9
    for parent in [-1, *range(len(tree))]:
        kids = tree.children(parent)
        if not kids:
            continue
        path = [tree.tokens[n] for n in tree.path(parent)] if parent >= 0 else []
        want = torch.topk(draft_logits(draft, dec.context + path), len(kids)).indices.tolist()
        assert [tree.tokens[k] for k in kids] == want  # best first, computed through the tree mask
        assert all(tree.q[k] is None for k in kids)


def test_children_are_iid_draws_from_q_and_repeats_are_not_expanded():
    tl = tiny_lab("llama", vocab_size=8, seed=3, init_std=0.15)
    draft = HFBackend(tl.model)
    sampling = Sampling(0.8)
    q = sampling.probs(draft_logits(draft, PROMPT + [3]))
    drafter = ShapeDrafter(draft, branching_shape([3, 1]), replacement=True)
    counts = torch.zeros(3, 8)
    repeats = 0
    for seed in range(800):
        dec = decoding(tl, temperature=0.8, seed=seed)
        tree = drafter.propose(dec, 3)
        top = tree.children(-1)
        assert len(top) == 3
        for i, kid in enumerate(top):
            assert torch.allclose(tree.q[kid], q, atol=1e-5)  # every sibling carries the same q
            counts[i, tree.tokens[kid]] += 1
            repeated = tree.tokens[kid] in [tree.tokens[k] for k in top[:i]]
            repeats += repeated
            assert len(tree.children(kid)) == (0 if repeated else 1)
    assert repeats > 0
    q = q.double() / q.double().sum()
    for i in range(3):  # each sibling, first or third, follows q: independent draws
        assert chisquare(counts[i].double().numpy(), (q * counts[i].sum()).numpy()).pvalue > 1e-3


def test_depth_never_exceeds_the_tokens_left():
    tl = tiny_lab("gpt2", vocab_size=96, seed=1)
    dec = decoding(tl, remaining=2)
    tree = ShapeDrafter(tl.target.view([0]), branching_shape([2, 2, 2, 2]), replacement=True).propose(dec, 3)
    assert max(tree.depths()) == 2 and len(tree) == 2 + 4
