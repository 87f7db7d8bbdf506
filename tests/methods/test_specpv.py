"""specpv drafts with the full model on a partial view of its own cache (sinks + recent window)."""
from __future__ import annotations

import torch

from lab.speculative.drafters.specpv import PartialKV, partial_view

from ..conftest import hf_greedy, tiny_lab
from .test_layer_skip import started

PROMPT = [(i * 5) % 37 + 1 for i in range(24)]


def test_partial_view_keeps_sinks_and_the_recent_window():
    assert partial_view(10, 2, 3).tolist() == [True, True, False, False, False, False, False, True, True, True]
    assert partial_view(4, 2, 8).all()


def test_draft_really_hides_the_middle_of_the_cache():
    tl = tiny_lab("llama", vocab_size=64, layers=2, seed=9)
    dec, root = started(tl, PROMPT)
    tree = PartialKV(sink=2, window=4, length=1).propose(dec, root)
    assert dec.target.ids == PROMPT  # the draft's entries are gone before the verification
    assert all(layer.keys.shape[-2] == len(PROMPT) for layer in dec.target.cache.layers)
    n = len(PROMPT) + 1
    mask = torch.ones(n, n, dtype=torch.bool).tril()
    mask[-1, 2:len(PROMPT) - 4] = False  # the root's row sees the 2 sinks, the last 4 cached tokens and itself
    with torch.no_grad():
        ids = torch.tensor([PROMPT + [root]])
        partial = tl.model(ids, attention_mask=mask[None, None]).logits[0, -1].softmax(-1)
        full = tl.model(ids).logits[0, -1].softmax(-1)
    token = tree.tokens[0]
    assert token == int(partial.argmax())
    assert abs(tree.draft_probs[0] - float(partial[token])) < 1e-4
    assert abs(float(full[token]) - float(partial[token])) > 1e-3  # hiding the middle changed the prediction


def test_a_window_over_the_whole_context_drafts_exactly_the_target():
    tl = tiny_lab("qwen2", vocab_size=64, layers=2, seed=9)
    trace = tl.generate("specpv", PROMPT, max_new_tokens=16, sink=0, window=64, length=4).trace
    assert trace.tokens == hf_greedy(tl.model, PROMPT, 16)
    assert all(len(s.accepted) == len(s.proposed) for s in trace.steps if s.proposed)
    assert all(s.info["hidden_from_draft"] == 0 for s in trace.steps if s.proposed)


def test_a_narrow_window_is_verified_in_full():
    tl = tiny_lab("llama", vocab_size=64, layers=2, seed=9)
    trace = tl.generate("specpv", PROMPT, max_new_tokens=16, sink=1, window=2, length=4).trace
    assert trace.tokens == hf_greedy(tl.model, PROMPT, 16)
    steps = [s for s in trace.steps if s.proposed]
    assert any(len(s.accepted) < len(s.proposed) for s in steps)
    assert steps[0].info["hidden_from_draft"] == len(PROMPT) - 3
