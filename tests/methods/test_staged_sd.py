"""Staged SD: the n-gram stage speeds up the draft without changing what the draft proposes.

The draft here ignores attention (its attention output is zeroed), so its greedy text is a walk on a
next-token map that soon cycles: repetitive text whose n-grams predict the draft, as in code or copying.
"""
from __future__ import annotations

import torch
from scipy.stats import chisquare

from lab.backends.hf import HFBackend
from lab.decoding import Decoding
from lab.models import tiny
from lab.sampling import Sampling
from lab.speculative.drafters.sps import DraftModel
from lab.speculative.drafters.staged_sd import StagedDrafter

from ..conftest import hf_greedy


def repetitive_draft(vocab: int, seed: int):
    model = tiny("llama", vocab_size=vocab, layers=1, hidden=32, seed=seed, init_std=0.3)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
    return model


def decoding(context: list[int], temperature: float = 0.0, seed: int = 0) -> Decoding:
    target = HFBackend(tiny("llama", vocab_size=8, seed=1))  # not used by the drafters
    return Decoding(target, context, Sampling(temperature=temperature), torch.Generator().manual_seed(seed),
                    max_new_tokens=64, eos=set())


def test_inner_stage_drafts_the_same_tokens_with_fewer_draft_forwards():
    saved = 0
    for seed in range(3):
        model = repetitive_draft(64, seed)
        prompt = [(seed * 11 + 5 * i) % 64 for i in range(6)]
        for context in (prompt, prompt + hf_greedy(model, prompt, 30)):  # fresh text, then repetitive text
            dec = decoding(context)
            plain, staged = HFBackend(model), HFBackend(model)  # fresh caches: the context is prefilled, not counted
            want = DraftModel(plain, length=8, adaptive=False).propose(dec, context[-1]).tokens
            got, _ = StagedDrafter(staged, length=8).chain(dec, 8)
            assert got == want, seed
            assert plain.forwards == 7 and staged.forwards <= plain.forwards
            assert staged.ids == context  # the rejected guesses left the draft's cache
            saved += plain.forwards - staged.forwards
    assert saved >= 3 * 4  # on repetitive text most of the draft forwards go away


def test_tree_siblings_are_the_drafts_next_best_tokens():
    model = repetitive_draft(32, 0)
    context = [1, 5, 9, 2, 5, 9]
    dec = decoding(context)
    runner = HFBackend(model)
    tree = StagedDrafter(runner, length=5, width=3).propose(dec, context[-1])
    main = [c for c in tree.children(-1)][:1]
    while tree.children(main[-1]):
        main.append(tree.children(main[-1])[0])
    assert len(main) == 5 and len(tree) == 15
    for i, node in enumerate(main):
        with torch.no_grad():
            logits = model(torch.tensor([context + [tree.tokens[n] for n in main[:i]]])).logits[0, -1]
        siblings = [tree.tokens[c] for c in tree.children(tree.parents[node])]
        assert siblings == torch.topk(logits, 3).indices.tolist()


def test_sampled_chain_follows_the_drafts_distribution_through_the_guess_check():
    """At T > 0 a guessed token is kept with probability q(guess), else replaced by a draw from q without it:
    the second draft token (the first one the n-gram stage guesses) must be distributed as the draft's q."""
    vocab, runs = 8, 1500
    model = tiny("llama", vocab_size=vocab, layers=1, hidden=32, seed=6, init_std=0.15)
    context = [1, 2, 3, 1, 2, 3, 1]  # the lookup guesses 2 then 3 ...
    dec = decoding(context, temperature=0.8, seed=5)
    drafter = StagedDrafter(HFBackend(model), length=2)
    counts = torch.zeros(vocab * vocab)
    carried = {}
    for _ in range(runs):
        tree = drafter.propose(dec, context[-1])
        first, second = tree.tokens[0], tree.tokens[tree.children(0)[0]]
        counts[first * vocab + second] += 1
        carried[first] = tree.q[tree.children(0)[0]]
    with torch.no_grad():
        q1 = dec.probs(model(torch.tensor([context])).logits[0, -1])
        q2 = dec.probs(model(torch.tensor([context + [v] for v in range(vocab)])).logits[:, -1])
    for first, q in carried.items():  # each node carries the draft's own q
        assert torch.allclose(q, q2[first], atol=1e-5)
    exact = (q1[:, None] * q2).flatten().double()
    keep = exact * runs >= 5
    observed = counts[keep].double()
    expected = exact[keep] / exact[keep].sum() * observed.sum()
    assert chisquare(observed.numpy(), expected.numpy()).pvalue > 1e-3
