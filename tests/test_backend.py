"""The HF backend: tree forwards equal chain forwards path by path; keep() equals recomputation; layer views;
block masks; taps; forks and threads."""
from __future__ import annotations

import pytest
import torch

from lab.backends.hf import HFBackend
from lab.backends.layers import layer_view
from lab.models import tiny

ARCHS = ["llama", "qwen2", "gpt2"]


def chain_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


@pytest.mark.parametrize("arch", ARCHS)
def test_tree_forward_matches_each_path(arch):
    model = tiny(arch, vocab_size=50, seed=2)
    runner = HFBackend(model)
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
    runner = HFBackend(model)
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
    runner = HFBackend(model)
    runner.prefill([1, 2, 3, 4, 5])
    runner.rollback(3)
    assert runner.ids == [1, 2, 3]
    logits = runner.sync([1, 2, 3, 9, 9])
    assert runner.ids == [1, 2, 3, 9, 9]
    assert torch.allclose(logits, chain_logits(model, [1, 2, 3, 9, 9])[-1], atol=1e-4)


def test_greedy_chain_is_the_argmax_loop_with_each_tokens_probability():
    model = tiny("llama", vocab_size=50, seed=7)
    runner, by_hand = HFBackend(model), HFBackend(model)
    runner.prefill([1, 2, 3]), by_hand.prefill([1, 2, 3])
    tokens, probs = runner.greedy_chain(4, 6)
    token, want = 4, []
    for _ in range(6):
        row = by_hand.decode(token).softmax(-1)
        token = int(row.argmax())
        want.append((token, float(row.max())))
    assert tokens == [t for t, _ in want] and probs == pytest.approx([q for _, q in want], rel=1e-5)
    assert runner.ids == [1, 2, 3, 4] + tokens[:-1] and runner.forwards == 6


def test_hold_runs_only_the_missing_tokens():
    model = tiny("llama", vocab_size=50, seed=8)
    runner = HFBackend(model)
    runner.hold([1, 2, 3])  # an empty cache: a prefill
    runner.decode(9)
    runner.hold([1, 2, 3])  # a rollback, no forward
    assert runner.ids == [1, 2, 3] and runner.forwards == 1
    runner.hold([1, 2, 3, 4, 5])  # one forward of the two missing tokens
    assert runner.ids == [1, 2, 3, 4, 5] and runner.forwards == 2
    assert torch.allclose(runner.decode(6), chain_logits(model, [1, 2, 3, 4, 5, 6])[-1], atol=1e-4)


def test_decode_counts_forwards_and_prefill_does_not():
    runner = HFBackend(tiny("llama", vocab_size=50))
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
    view = HFBackend(model).view([0, 3])
    view.prefill([1, 2, 3])
    with torch.no_grad():
        assert torch.allclose(view.decode(4), short(torch.tensor([[1, 2, 3, 4]])).logits[0, -1], atol=1e-5)


def test_hidden_state_taps():
    model = tiny("llama", vocab_size=50, layers=3)
    runner = HFBackend(model)
    runner.prefill([1, 2])
    out = runner.forward([3, 4], taps=("hidden",))
    assert len(out.hidden) == 4 and out.hidden[0].shape == (2, 64)


def test_tree_grower_levels_see_only_their_ancestors():
    from lab.speculative.expand import TreeGrower, top_children

    model = tiny("llama", vocab_size=50, layers=2, seed=3)
    runner = HFBackend(model)
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
    runner = HFBackend(model)
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


@pytest.mark.parametrize("arch", ARCHS)
def test_taps_match_a_recomputation_by_hand(arch):
    """Attention weights per head, per-head outputs and MLP outputs, checked against the model's own modules."""
    from lab.backends.layers import attention_of, layer_list, output_projection

    model = tiny(arch, vocab_size=50, layers=2, seed=9)
    runner = HFBackend(model)
    runner.prefill([1, 2, 3])
    out = runner.forward([4, 5], taps=("hidden", "attentions", "heads", "mlp"))
    layers = layer_list(model)
    heads = model.config.num_attention_heads
    assert [len(out.taps[t]) for t in ("attentions", "heads", "mlp")] == [2, 2, 2]
    att = out.taps["attentions"][0]
    assert att.shape == (heads, 2, 5)
    assert torch.allclose(att.sum(-1), torch.ones(heads, 2), atol=1e-5)  # each row is a distribution
    assert torch.all(att[:, 0, 4] == 0)  # causal: token 4 cannot see token 5
    for i, layer in enumerate(layers):  # the head outputs, projected, are the attention block's output
        proj = output_projection(attention_of(layer))
        concat = out.taps["heads"][i].reshape(2, -1)
        with torch.no_grad():
            projected = proj(concat)
        assert projected.shape == (2, model.config.hidden_size if hasattr(model.config, "hidden_size") else 64)
        assert out.taps["mlp"][i].shape == (2, projected.shape[-1])
    # the residual stream: hidden[l + 1] = hidden[l] + attention output + MLP output (pre-norm architectures)
    if arch != "gpt2":
        h0, h1 = out.hidden[0], out.hidden[1]
        with torch.no_grad():
            attn_out = output_projection(attention_of(layers[0]))(out.taps["heads"][0].reshape(2, -1))
        assert torch.allclose(h0 + attn_out + out.taps["mlp"][0], h1, atol=1e-4)
    # taps leave nothing behind: the next plain forward runs sdpa again and matches a recomputation
    assert model.config._attn_implementation == "sdpa"
    after = runner.forward([6]).logits[-1]
    assert torch.allclose(after, chain_logits(model, [1, 2, 3, 4, 5, 6])[-1], atol=1e-4)


def test_a_block_sees_itself_both_ways():
    """among='block' (a diffusion block): every new token sees the cache and every other new token."""
    model = tiny("llama", vocab_size=50, layers=2, seed=10)
    runner = HFBackend(model)
    runner.prefill([1, 2, 3])
    got = runner.forward([4, 5, 6], among="block").logits
    mask = torch.ones(1, 1, 6, 6, dtype=torch.bool).tril()
    mask[0, 0, 3:, 3:] = True
    with torch.no_grad():
        want = model(torch.tensor([[1, 2, 3, 4, 5, 6]]), attention_mask=mask).logits[0, 3:]
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(got[0], chain_logits(model, [1, 2, 3, 4])[-1], atol=1e-3)  # it did look ahead


def test_describe():
    model = tiny("qwen2", vocab_size=50, layers=3, hidden=64, heads=4)
    d = HFBackend(model).describe()
    assert (d.layers, d.vocab_size, d.hidden_size, d.dtype, d.device) == (3, 50, 64, "float32", "cpu")
    assert d.kv_bytes_per_token == 2 * 3 * 2 * 16 * 4  # keys and values, 3 layers, 2 kv heads of 16, fp32
    assert HFBackend(model).view([0]).describe().layer_subset == (0,)


def test_forks_decode_in_threads_like_alone():
    """Two forks share the weights, never a cache: decoding in two threads gives the tokens each gives alone."""
    import threading

    model = tiny("llama", vocab_size=50, layers=2, seed=11)
    base = HFBackend(model)
    prompts = [[1, 2, 3, 4], [9, 8, 7]]

    def greedy(runner, prompt, n=30):
        logits, out = runner.prefill(prompt), []
        for _ in range(n):
            out.append(int(logits.argmax()))
            logits = runner.decode(out[-1])
        return out

    alone = [greedy(base.fork(), p) for p in prompts]
    results = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, greedy(base.fork(), prompts[i])))
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[0], results[1]] == alone


def test_a_draft_on_the_cache_leaves_it_as_it_was():
    model = tiny("llama", vocab_size=50, layers=3, seed=12)
    runner = HFBackend(model)
    runner.prefill([1, 2, 3, 4])
    view = runner.draft_on_cache([0, 1])
    view.start()
    a = view.step(5)
    view.step(6)
    view.finish()
    assert runner.ids == [1, 2, 3, 4]
    short = layer_view(model, [0, 1])
    with torch.no_grad():
        assert torch.allclose(a, short(torch.tensor([[1, 2, 3, 4, 5]])).logits[0, -1], atol=1e-4)
    after = runner.forward([5]).logits[-1]
    assert torch.allclose(after, chain_logits(model, [1, 2, 3, 4, 5])[-1], atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_run_layer_is_the_layer_on_given_states_over_the_cached_context(arch):
    """Layer i on the full model's own state entering it gives the state leaving it; rows are independent
    (a row's output does not depend on the others); the cache is left exactly as it was."""
    model = tiny(arch, vocab_size=50, layers=3, seed=13)
    ids = [(7 * i) % 45 + 1 for i in range(12)]
    runner = HFBackend(model)
    runner.prefill(ids[:-1])
    keys = [layer.keys.clone() for layer in runner.cache.layers]
    with torch.no_grad():
        states = [h[0, -1] for h in model(torch.tensor([ids]), output_hidden_states=True).hidden_states]
    noise = torch.randn(2, states[0].shape[-1], generator=torch.Generator().manual_seed(0))
    for i in range(2):
        both = runner.run_layer(i, torch.stack([states[i], states[i] + noise[i]]), [len(ids) - 1] * 2)
        alone = runner.run_layer(i, states[i][None], [len(ids) - 1])
        assert torch.allclose(both[0], states[i + 1], rtol=1e-4, atol=1e-4)
        assert torch.allclose(both[0], alone[0], rtol=1e-4, atol=1e-4)
        assert not torch.allclose(both[1], both[0], atol=1e-3)
    hidden = torch.ones(len(ids) - 1, dtype=torch.bool)
    hidden[2:6] = False  # a visible mask hides part of the context, as in a forward
    assert not torch.allclose(runner.run_layer(0, states[0][None], [len(ids) - 1], hidden)[0], states[1], atol=1e-3)
    assert runner.ids == ids[:-1] and all(torch.equal(a, b.keys) for a, b in zip(keys, runner.cache.layers))
