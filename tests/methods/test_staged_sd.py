"""Staged SD: a best-first tree that branches where the draft is unsure; n-gram guesses save draft forwards
without changing the tree (T = 0) or the distribution each node is drawn from (T > 0).

A draft that ignores attention (its attention output is zeroed) is a walk on a next-token map that soon cycles:
repetitive text whose n-grams predict the draft, as in code or copying; its sharpened head makes it
confident. A draft with small weights is unsure.
"""
from __future__ import annotations

import copy

import torch
from scipy.stats import chisquare

from lab.api import Lab
from lab.backends.hf import HFBackend
from lab.decoding import Decoding
from lab.models import tiny
from lab.sampling import Sampling
from lab.speculative.best_first import BestFirstDrafter
from lab.speculative.drafters.staged_sd import StagedDrafter
from lab.speculative.ngram import KatzModel

from ..conftest import hf_greedy, use_draft


def repetitive_draft(vocab: int, seed: int):
    model = tiny("llama", vocab_size=vocab, layers=1, hidden=32, seed=seed, init_std=0.3)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
        model.lm_head.weight.mul_(5.0)  # confident: best-first growth goes deep along its chain
    return model


def decoding(context: list[int], temperature: float = 0.0, seed: int = 0) -> Decoding:
    target = HFBackend(tiny("llama", vocab_size=8, seed=1))  # not used by the drafters
    return Decoding(target, context, Sampling(temperature=temperature), torch.Generator().manual_seed(seed),
                    max_new_tokens=64, eos=set())


def paths(tree) -> dict[tuple[int, ...], float]:
    """Each node as its token path from the root, with its draft probability."""
    return {tuple(tree.tokens[i] for i in tree.path(n)): round(tree.draft_probs[n], 5) for n in range(len(tree))}


def test_guesses_save_draft_forwards_and_leave_the_greedy_tree_as_it_is():
    saved = used = 0
    for seed in range(3):
        model = repetitive_draft(64, seed)
        prompt = [(seed * 11 + 5 * i) % 64 for i in range(6)]
        context = prompt + hf_greedy(model, prompt, 30)  # repetitive text: its n-grams predict the draft
        dec = decoding(context)
        plain, staged = HFBackend(model), HFBackend(model)  # fresh caches: the context is prefilled, not counted
        want = BestFirstDrafter(plain, nodes=12, max_depth=8).propose(dec, context[-1])
        drafter = StagedDrafter(staged, KatzModel(3), nodes=12, max_depth=8)
        got = drafter.propose(dec, context[-1])
        assert paths(got) == paths(want), seed
        assert staged.ids == context  # the guesses left the draft's cache
        assert staged.forwards <= plain.forwards
        saved += plain.forwards - staged.forwards
        used += drafter.info["guesses_used"]
    assert used >= 3 * 4 and saved >= 3 * 2  # on repetitive text most of the draft's levels come guessed


def test_the_tree_branches_at_several_depths_where_the_draft_is_unsure():
    for seed in range(3):
        model = tiny("llama", vocab_size=32, layers=1, hidden=32, seed=seed, init_std=0.5)  # unsure, not flat
        context = [1, 5, 9, 2, 5, 9]
        tree = StagedDrafter(HFBackend(model), KatzModel(3), nodes=16, max_depth=6).propose(decoding(context), 9)
        depths = tree.depths()
        branching = {depths[p] if p >= 0 else 0 for p in range(-1, len(tree)) if len(tree.children(p)) >= 2}
        assert len(tree) == 16 and len(branching) >= 3 and max(depths) >= 4, (seed, branching)


def test_sampled_nodes_follow_the_drafts_distribution_through_the_guesses():
    """At T > 0 the root's first child c0 is drawn from q(. | context) and c0's first child c1 from q(. | c0);
    c1 reuses the node of the n-gram guess when the draw equals it. Given c0, c1 must be distributed as q(. | c0)
    and carry it. (Whether c1 exists depends only on c0, so conditioning on c0 is fair.)"""
    vocab, runs = 8, 1500
    model = tiny("llama", vocab_size=vocab, layers=1, hidden=32, seed=6, init_std=0.3)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()  # a Markov draft, unsure (its top q is 0.4 to 0.9)
    context = [1, 2, 3] + hf_greedy(model, [1, 2, 3], 8)  # ... 5, 0, 7, 6: the n-gram model guesses the cycle
    dec = decoding(context, temperature=0.8, seed=5)
    drafter = StagedDrafter(HFBackend(model), KatzModel(3), nodes=4, max_depth=3)
    counts = torch.zeros(vocab, vocab)
    used = 0
    with torch.no_grad():
        q2 = dec.probs(model(torch.tensor([context + [v] for v in range(vocab)])).logits[:, -1])
    for _ in range(runs):
        tree = drafter.propose(dec, context[-1])
        used += drafter.info["guesses_used"]
        if tree.children(0):
            c1 = tree.children(0)[0]
            counts[tree.tokens[0], tree.tokens[c1]] += 1
            assert torch.allclose(tree.q[c1], q2[tree.tokens[0]], atol=1e-5)  # each node carries the draft's q
    assert used >= runs // 2  # most runs use a guessed node
    groups = [c0 for c0 in range(vocab) if counts[c0].sum() >= 100]
    observed = torch.cat([counts[c0] for c0 in groups]).double()
    expected = torch.cat([q2[c0] * counts[c0].sum() for c0 in groups]).double()
    keep = expected >= 5
    assert len(groups) >= 2
    assert chisquare(observed[keep].numpy(), expected[keep].numpy() * observed[keep].sum().item()
                     / expected[keep].sum().item(), ddof=len(groups) - 1).pvalue > 1e-3


def test_method_matches_greedy_with_fewer_draft_forwards_than_dyspec():
    """Same tree rule without the guesses is DySpec: same tokens, and the guesses cut the draft's forwards. The
    target repeats itself; the draft is the target with a perturbed head, so it is often, not always, right."""
    target = repetitive_draft(64, 0)
    draft = copy.deepcopy(target)
    with torch.no_grad():
        noise = torch.randn(draft.lm_head.weight.shape, generator=torch.Generator().manual_seed(0))
        draft.lm_head.weight.add_(0.3 * noise)
    tl = Lab(model_obj=target, tokenizer=None)
    use_draft(tl, HFBackend(draft))
    for prompt in ([5, 9, 13, 2, 7], [40, 41, 42, 43]):
        want = hf_greedy(target, prompt, 40)
        staged = tl.generate("staged-sd", prompt, max_new_tokens=40, nodes=8, max_depth=6)
        dyspec = tl.generate("dyspec", prompt, max_new_tokens=40, nodes=8, max_depth=6)
        assert staged.tokens == want == dyspec.tokens
        assert staged.trace.forwards == dyspec.trace.forwards
        assert staged.trace.draft_forwards < dyspec.trace.draft_forwards, prompt
