"""specpv verifies on a partial KV (sinks + retrieved blocks + window) and fully every `full_every` tokens, which
re-forwards the partially verified tokens so that the cache is exact again."""
from __future__ import annotations

import torch

from lab.speculative.drafters.specpv import PartialVerification, partial_view
from lab.speculative.loop import EXACT, score_one, speculate
from lab.tree import Tree

from ..conftest import hf_greedy, tiny_lab
from .test_layer_skip import started

PROMPT = [(i * 5) % 37 + 1 for i in range(40)]


def test_partial_view_keeps_sinks_the_most_attended_blocks_and_the_window():
    importance = torch.zeros(40)
    importance[[11, 21]] = 1.0  # blocks of 4 start at the sink: 2, 6, 10, 14, 18, ...
    visible = partial_view(40, sink=2, window=4, retrieval=8, block=4, importance=importance)
    assert visible.nonzero().flatten().tolist() == [0, 1, *range(10, 14), *range(18, 22), *range(36, 40)]
    assert partial_view(10, 2, 3).tolist() == [True, True] + [False] * 5 + [True] * 3  # no scores yet: no retrieval
    assert partial_view(6, 2, 8).all()


def test_a_partial_verification_is_the_model_on_the_partial_view():
    tl = tiny_lab("llama", vocab_size=64, layers=2, seed=9)
    dec, root = started(tl, PROMPT)
    drafter = PartialVerification(dec, sink=2, window=6, retrieval=8, block=4, full_every=100, length=3,
                                  exit_fraction=0.5)
    drafter.importance = torch.zeros(len(PROMPT))
    drafter.importance[20] = 1.0
    tree = drafter.propose(dec, root)
    drafter.full = False
    hidden = ~partial_view(len(PROMPT), 2, 6, 8, 4, drafter.importance)
    assert hidden.sum() == len(PROMPT) - 2 - 6 - 8
    verdict, out = score_one(dec, drafter, EXACT, root, tree)
    ids = torch.tensor([PROMPT + [root] + tree.tokens])
    n = ids.shape[1]
    mask = torch.ones(n, n, dtype=torch.bool).tril()
    mask[len(PROMPT):, :len(PROMPT)] &= ~hidden  # the root and the drafts do not see the hidden middle
    with torch.no_grad():
        partial = tl.model(ids, attention_mask=mask[None, None]).logits[0, len(PROMPT):]
        full = tl.model(ids).logits[0, len(PROMPT):]
    assert torch.allclose(out.logits, partial, atol=1e-4)
    assert not torch.allclose(out.logits, full, atol=1e-3)  # hiding the middle changed the verification
    assert drafter.info == {"verification": "partial", "hidden": int(hidden.sum()), "cached": len(PROMPT)}


def test_a_full_verification_makes_the_cache_exact_again():
    tl = tiny_lab("llama", vocab_size=64, layers=2, seed=9)
    dec, root = started(tl, PROMPT, max_new_tokens=40)
    dec.tokens.pop()  # speculate prefills and draws the first token itself
    drafter = PartialVerification(dec, sink=2, window=6, retrieval=8, block=4, full_every=5, length=3,
                                  exit_fraction=0.5)
    kinds, rectified, drift = [], 0, []
    for step in speculate(dec, drafter):
        dec.commit(step)
        kinds.append(step.info.get("verification"))
        fresh = dec.target.fork()
        fresh.prefill(dec.target.tokens())  # the cache as the full model computes it
        error = max(float((a.keys - b.keys).abs().max()) for a, b in zip(dec.target.cache.layers, fresh.cache.layers))
        if kinds[-1] == "full":
            assert error < 1e-3 and drafter.exact == dec.target.length, step.info  # all saw the whole context
            rectified += step.info["rectified"]
        elif kinds[-1] == "partial":
            drift.append(error)
        if dec.done:
            break
    assert kinds.count("partial") > kinds.count("full") > 1 and rectified > 0
    assert max(drift) > 1.0  # partially verified tokens were cached from the partial view


def test_with_nothing_hidden_it_is_greedy():
    tl = tiny_lab("qwen2", vocab_size=64, layers=2, seed=9)
    trace = tl.generate("specpv", PROMPT, max_new_tokens=16, sink=0, window=64, full_every=4).trace
    assert trace.tokens == hf_greedy(tl.model, PROMPT, 16)
    assert {s.info["verification"] for s in trace.steps[1:]} == {"full", "partial"}
    assert all(s.info.get("hidden", 0) == 0 for s in trace.steps[1:])


def test_hiding_the_middle_changes_the_output_a_little_not_all_of_it():
    tl = tiny_lab("llama", vocab_size=64, layers=2, seed=9)
    want = hf_greedy(tl.model, PROMPT, 24)
    got = tl.generate("specpv", PROMPT, max_new_tokens=24, sink=2, window=12, retrieval=16, full_every=4).tokens
    assert got != want  # lossy
    assert got[:2] == want[:2]  # the first tokens are verified on the whole cache
