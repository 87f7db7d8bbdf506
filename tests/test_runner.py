"""The runner: tree forwards equal chain forwards path by path; keep() equals recomputation; layer views."""
from __future__ import annotations

import pytest
import torch

from lab.models import tiny
from lab.runner import Runner, layer_view

ARCHS = ["llama", "qwen2", "gpt2"]


def chain_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


@pytest.mark.parametrize("arch", ARCHS)
def test_tree_forward_matches_each_path(arch):
    model = tiny(arch, vocab_size=50, seed=2)
    runner = Runner(model)
    prompt = [3, 8, 1, 4, 9]
    runner.prefill(prompt)
    # root r, children a, b; a has children c, d; tree rows: r=0, a=1, b=2, c=3, d=4
    tokens, parents = [7, 11, 12, 13, 14], [-1, 0, 0, 1, 1]
    logits = runner.forward(tokens, parents).logits
    for path in ([0, 1, 3], [0, 1, 4], [0, 2]):
        ref = chain_logits(model, prompt + [tokens[i] for i in path])[-len(path):]
        assert torch.allclose(logits[path], ref, atol=1e-4), path


@pytest.mark.parametrize("arch", ARCHS)
def test_keep_compacts_to_the_accepted_path(arch):
    model = tiny(arch, vocab_size=50, seed=5)
    runner = Runner(model)
    prompt = [2, 4, 6, 8]
    runner.prefill(prompt)
    runner.forward([7, 11, 12, 13], [-1, 0, 0, 2])  # keep root, b (row 2), its child (row 3)
    runner.keep([0, 2, 3])
    assert runner.ids == prompt + [7, 12, 13]
    after = runner.forward([20]).logits[-1]
    ref = chain_logits(model, prompt + [7, 12, 13, 20])[-1]
    assert torch.allclose(after, ref, atol=1e-4)


def test_rollback_and_sync():
    model = tiny("llama", vocab_size=50, seed=6)
    runner = Runner(model)
    runner.prefill([1, 2, 3, 4, 5])
    runner.rollback(3)
    assert runner.ids == [1, 2, 3]
    logits = runner.sync([1, 2, 3, 9, 9])
    assert runner.ids == [1, 2, 3, 9, 9]
    assert torch.allclose(logits, chain_logits(model, [1, 2, 3, 9, 9])[-1], atol=1e-4)


def test_decode_counts_forwards_and_prefill_does_not():
    runner = Runner(tiny("llama", vocab_size=50))
    runner.prefill([1, 2])
    runner.decode(3)
    runner.forward([4, 5])
    assert runner.forwards == 2 and runner.length == 5


def test_layer_view_shares_weights_and_runs_only_its_layers():
    model = tiny("llama", vocab_size=50, layers=4, seed=7)
    full = layer_view(model, [0, 1, 2, 3])
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(full(ids).logits, model(ids).logits)
        short = layer_view(model, [0, 3])
        assert not torch.allclose(short(ids).logits, model(ids).logits)
    assert short.model.embed_tokens.weight is model.model.embed_tokens.weight
    assert len(model.model.layers) == 4  # the original is untouched
    view = Runner(model).view([0, 3])
    view.prefill([1, 2, 3])
    with torch.no_grad():
        assert torch.allclose(view.decode(4), short(torch.tensor([[1, 2, 3, 4]])).logits[0, -1], atol=1e-5)


def test_hidden_state_taps():
    model = tiny("llama", vocab_size=50, layers=3)
    runner = Runner(model)
    runner.prefill([1, 2])
    out = runner.forward([3, 4], hidden=True)
    assert len(out.hidden) == 4 and out.hidden[0].shape == (2, 64)


def test_tree_grower_levels_see_only_their_ancestors():
    from lab.spec.expand import TreeGrower, top_children

    model = tiny("llama", vocab_size=50, layers=2, seed=3)
    runner = Runner(model)
    context = [1, 2, 3, 4]
    grower = TreeGrower(runner, context)
    first = [grower.add(t, -1, p) for t, p in top_children(grower.root_logits, 2)]
    grower.run(first)
    second = [grower.add(t, first[0], p) for t, p in top_children(grower.logits[first[0]], 2)]
    second += [grower.add(t, first[1], p) for t, p in top_children(grower.logits[first[1]], 1)]
    grower.run(second)
    tree = grower.done()
    assert runner.ids == context  # the draft cache is back at the context
    for node in first + second:
        ref = chain_logits(model, context + [tree.tokens[i] for i in tree.path(node)])[-1]
        assert torch.allclose(grower.logits[node], ref, atol=1e-4)


def test_visible_hides_part_of_the_cache():
    model = tiny("llama", vocab_size=50, layers=2, seed=8)
    runner = Runner(model)
    runner.prefill([5, 6, 7, 8])
    visible = torch.tensor([True, False, True, True])
    got = runner.forward([9], visible=visible).logits[-1]
    ref = chain_logits(model, [5, 7, 8, 9])[-1]
    assert not torch.allclose(got, chain_logits(model, [5, 6, 7, 8, 9])[-1], atol=1e-3)
    # hiding token 6 is not the same as deleting it (positions stay), so compare with an explicit mask instead
    mask = torch.ones(1, 1, 5, 5, dtype=torch.bool).tril()
    mask[0, 0, 4, 1] = False
    with torch.no_grad():
        full = model(torch.tensor([[5, 6, 7, 8, 9]]), attention_mask=mask).logits[0, -1]
    assert torch.allclose(got, full, atol=1e-4)
    assert ref.shape == got.shape
