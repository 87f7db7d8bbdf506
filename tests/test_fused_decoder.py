"""The fast backend's fused forward (kernels/rms_norm, rope_cache, silu_mul, tree_attention) against the torch
reference, in Triton's interpreter on the CPU: each kernel on random inputs, then whole forwards of a tiny Llama and
Qwen2 (a chain, a tree, a kept path that moves cache rows, hidden columns, a diffusion block) against the HF backend."""
from __future__ import annotations

import os

import pytest
import torch

os.environ["TRITON_INTERPRET"] = "1"  # before the kernels are defined: they run on CPU tensors
triton = pytest.importorskip("triton")

from lab.backends.fast import FastBackend  # noqa: E402
from lab.backends.hf import HFBackend  # noqa: E402
from lab.kernels import rms_norm, rope_cache, silu_mul  # noqa: E402
from lab.models import tiny  # noqa: E402


def ulps_apart(a, b, dtype):
    """Fraction of elements that differ (after rounding both ways to dtype they must be within one step)."""
    return (a.to(dtype) != b.to(dtype)).float().mean().item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("residual", [True, False])
def test_add_rms_norm_is_the_reference(dtype, residual):
    g = torch.Generator().manual_seed(0)
    delta = (torch.randn(5, 200, generator=g) * 3).to(dtype)
    res = torch.randn(5, 200, generator=g).to(dtype) if residual else None
    weight = (torch.rand(200, generator=g) + 0.5).to(dtype)
    want = rms_norm.add_rms_norm_reference(delta, res, weight, 1e-5)
    got = rms_norm.add_rms_norm(delta, res, weight, 1e-5)
    assert torch.equal(got[0], want[0])  # the sum is one rounding: exact
    if dtype == torch.float32:
        torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-5)
    else:  # a float32 reduction in another order may flip a rounding now and then, never by more than one step
        torch.testing.assert_close(got[1].float(), want[1].float(), rtol=1e-2, atol=1e-2)
        assert ulps_apart(got[1], want[1], dtype) < 0.02


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_silu_mul_is_the_reference(dtype):
    g = torch.Generator().manual_seed(1)
    gate_up = (torch.randn(3, 2 * 1500, generator=g) * 4).to(dtype)  # two blocks of 1024, the second partial
    got, want = silu_mul.silu_mul(gate_up), silu_mul.silu_mul_reference(gate_up)
    torch.testing.assert_close(got.float(), want.float(), rtol=1e-5 if dtype == torch.float32 else 1e-2, atol=1e-5)
    if dtype == torch.bfloat16:  # exp in another order: a rounding flips now and then
        assert ulps_apart(got, want, dtype) < 0.01


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_and_cache_is_the_reference(dtype):
    g = torch.Generator().manual_seed(2)
    heads, kv_heads, dim, k, layers, capacity = 6, 2, 64, 4, 3, 40
    qkv = torch.randn(k, (heads + 2 * kv_heads) * dim, generator=g).to(dtype)
    angles = torch.arange(100)[:, None] * torch.rand(dim // 2, generator=g)[None]
    cos = torch.cat([angles.cos()] * 2, -1).to(dtype).contiguous()
    sin = torch.cat([angles.sin()] * 2, -1).to(dtype).contiguous()
    positions, slots = torch.tensor([7, 8, 8, 9]), torch.tensor([20, 21, 22, 23])  # a tree: two tokens at depth 1
    caches = [torch.zeros(layers, kv_heads, capacity, dim, dtype=dtype) for _ in range(4)]
    want = rope_cache.rope_and_cache_reference(qkv, cos, sin, positions, slots, caches[0][1], caches[1][1], heads,
                                               kv_heads)
    got = rope_cache.rope_and_cache(qkv, cos, sin, positions, slots, caches[2][1], caches[3][1], heads, kv_heads)
    assert torch.equal(got, want)  # the same roundings in the same order
    assert torch.equal(caches[2], caches[0]) and torch.equal(caches[3], caches[1])  # only layer 1, columns 20-23
    assert caches[2][1, :, 20:24].abs().sum() > 0 and caches[2][0].abs().sum() == 0


def close(a, b):  # logits of about 10: float32 sums in another order
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4), (a - b).abs().max()


@pytest.mark.parametrize("arch,gemv_rows", [("llama", 1), ("qwen2", 1), ("llama", 8)])
def test_the_fused_forward_matches_the_hf_backend(arch, gemv_rows):
    """Every kind of forward; with gemv_rows 8 the trees and chains of up to 8 tokens take the matrix-vector path."""
    model = tiny(arch, vocab_size=96, layers=2, hidden=128, heads=2, seed=4)  # head_dim 64, grouped queries
    hf, fast = HFBackend(model), FastBackend(model)
    fast.w.fused, fast.w.gemv_rows = True, gemv_rows
    try:
        close(hf.prefill([1, 2, 3, 4, 5]), fast.prefill([1, 2, 3, 4, 5]))
        close(hf.forward([6, 7, 8]).logits, fast.forward([6, 7, 8]).logits)
        tree = ([9, 10, 11, 12, 13], [-1, 0, 0, 1, 2])
        close(hf.forward(*tree).logits, fast.forward(*tree).logits)
        hf.keep([0, 2, 4]), fast.keep([0, 2, 4])
        close(hf.decode(14), fast.decode(14))
        hf.rollback(7), fast.rollback(7)
        visible = torch.tensor([True, False, True, True, False, True, True])
        close(hf.forward([3], visible=visible).logits, fast.forward([3], visible=visible).logits)
        close(hf.forward([4, 5, 6], among="block").logits, fast.forward([4, 5, 6], among="block").logits)
    finally:
        fast.w.fused, fast.w.gemv_rows = False, 1


def test_graph_inputs_build_the_eager_mask():
    """The mask a captured graph builds on the device from (length, tree, visible) is the one the eager path
    concatenates on the host; padding rows write to the scratch column; the count of columns every row sees, which
    spares the attention kernel its mask reads there, is the committed length, or 0 while some are hidden."""
    from lab.backends.fast.graphs import Inputs
    from lab.tree import ancestor_mask

    inputs = Inputs(8, 32, 31, torch.device("cpu"))
    cases = [(1, [-1], None), (5, [-1, 0, 0, 1, 2], None), (12, [-1, 0, 1], torch.rand(12) > 0.3),
             (3, [-1, 0, 1, 2, 3, 4, 5, 6], None), (7, [-1, 0], torch.rand(2, 7) > 0.5), (9, [-1, 0, 0], None)]
    for length, parents, visible in cases:
        n = len(parents)
        among = ancestor_mask(parents)
        inputs.write(list(range(100, 100 + n)), torch.arange(n) + length, length, among, visible)
        prefix = torch.ones(n, length, dtype=torch.bool) if visible is None else \
            visible.reshape(-1, length).expand(n, -1)
        want = torch.zeros(n, 32, dtype=torch.bool)
        want[:, :length + n] = torch.cat([prefix, among], 1)
        assert torch.equal(inputs.mask()[:n], want)
        assert inputs.visible.tolist() == [length if visible is None else 0]
        assert inputs.ids[:n].tolist() == list(range(100, 100 + n))
        assert inputs.slots.tolist() == list(range(length, length + n)) + [31] * (8 - n)
        assert inputs.positions[:n].tolist() == list(range(length, length + n))


def test_burst_inputs_are_single_steps():
    """A burst's per-step inputs, built on the device in two kernels, are those of writing each step's token alone:
    the position, cache column and length one further each step, and the general rule's mask."""
    from lab.backends.fast.graphs import Inputs, burst_inputs

    one = torch.ones(1, 1, dtype=torch.bool)
    for length, steps in ((0, 8), (5, 4), (27, 4), (30, 2)):
        first = Inputs(1, 32, 31, torch.device("cpu"))
        first.write([7], torch.tensor([length]), length, one, None)
        ladder, masks = burst_inputs(first.meta, first.cols, torch.arange(steps)[:, None])
        for i in range(steps):
            alone = Inputs(1, 32, 31, torch.device("cpu"))
            alone.write([7], torch.tensor([length + i]), length + i, one, None)
            assert ladder[i].tolist() == [length + i] * 3 and ladder[i, :1].tolist() == alone.positions.tolist()
            assert ladder[i, 1:2].tolist() == alone.slots.tolist() and torch.equal(masks[i:i + 1], alone.mask())


def test_chunked_prefill_matches_the_hf_backend():
    """On a GPU the prompt goes through the graphs in chunks of 64 tokens: the same cache and logits."""
    model = tiny("llama", vocab_size=96, layers=2, seed=5)
    hf, fast = HFBackend(model), FastBackend(model)
    fast.chunked = True
    prompt = torch.randint(0, 96, (150,), generator=torch.Generator().manual_seed(0)).tolist()
    close(hf.prefill(prompt), fast.prefill(prompt))
    assert fast.tokens() == prompt
    close(hf.forward([1, 2, 3]).logits, fast.forward([1, 2, 3]).logits)



@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("prologue,delta,bias", [("none", False, True), ("none", False, False), ("norm", True, False),
                                                 ("norm", False, True), ("silu", False, False)])
def test_gemv_is_the_reference(dtype, prologue, delta, bias):
    from lab.kernels import gemv

    g = torch.Generator().manual_seed(3)
    k, n = 600, 37  # a row padded to 1024 lanes; a partial block of outputs
    x = torch.randn(1, 2 * k if prologue == "silu" else k, generator=g).to(dtype)
    d = torch.randn(1, k, generator=g).to(dtype) if delta else None
    weight = (torch.randn(n, k, generator=g) / 5).to(dtype)
    b = torch.randn(n, generator=g).to(dtype) if bias else None
    norm = (torch.rand(k, generator=g) + 0.5).to(dtype) if prologue == "norm" else None
    got, total = gemv.gemv(x, weight, b, prologue, d, norm, 1e-5)
    want, want_total = gemv.gemv_reference(x, weight, b, prologue, d, norm, 1e-5)
    assert got.shape == want.shape == (1, n) and got.dtype == dtype
    tolerance = 1e-4 if dtype == torch.float32 else 0.07  # sums of 600 terms near 5: a bfloat16 step is 0.03
    torch.testing.assert_close(got.float(), want.float(), rtol=1e-2, atol=tolerance)
    assert (total is None) == (want_total is None) and (total is None or torch.equal(total, want_total))


@pytest.mark.parametrize("prologue,delta", [("none", False), ("norm", True), ("silu", False)])
def test_gemv_rows_are_one_row_calls(prologue, delta):
    """M rows in one call give, bit for bit, what M one-row calls give (the residual sums too): a chain verified
    through the matrix-vector path rounds each row as a decode step rounds it."""
    from lab.kernels import gemv

    g = torch.Generator().manual_seed(5)
    k, n, rows = 600, 37, 5
    x = torch.randn(rows, 2 * k if prologue == "silu" else k, generator=g).to(torch.bfloat16)
    d = torch.randn(rows, k, generator=g).to(torch.bfloat16) if delta else None
    weight = (torch.randn(n, k, generator=g) / 5).to(torch.bfloat16)
    norm = (torch.rand(k, generator=g) + 0.5).to(torch.bfloat16) if prologue == "norm" else None
    got, total = gemv.gemv(x, weight, None, prologue, d, norm, 1e-5)
    assert got.shape == (rows, n)
    for r in range(rows):
        one, one_total = gemv.gemv(x[r:r + 1], weight, None, prologue, None if d is None else d[r:r + 1], norm, 1e-5)
        assert torch.equal(got[r:r + 1], one), r
        assert (total is None and one_total is None) or torch.equal(total[r:r + 1], one_total), r
    want, _ = gemv.gemv_reference(x, weight, None, prologue, d, norm, 1e-5)
    torch.testing.assert_close(got.float(), want.float(), rtol=1e-2, atol=0.07)


def test_gemv_gathers_its_rows_by_id():
    """With `ids` the first product reads the embedding rows itself: bit for bit the product of the gathered rows,
    which it returns as the residual stream."""
    from lab.kernels import gemv

    g = torch.Generator().manual_seed(6)
    table = torch.randn(50, 600, generator=g).to(torch.bfloat16)
    weight = (torch.randn(37, 600, generator=g) / 5).to(torch.bfloat16)
    norm = (torch.rand(600, generator=g) + 0.5).to(torch.bfloat16)
    ids = torch.tensor([7, 49, 7, 0])
    got, rows = gemv.gemv(table, weight, None, "norm", None, norm, 1e-5, ids=ids)
    want, _ = gemv.gemv(table[ids], weight, None, "norm", None, norm, 1e-5)
    assert torch.equal(got, want) and torch.equal(rows, table[ids])
    ref, ref_rows = gemv.gemv_reference(table, weight, None, "norm", None, norm, 1e-5, ids=ids)
    assert torch.equal(ref_rows, table[ids])
    torch.testing.assert_close(got.float(), ref.float(), rtol=1e-2, atol=0.07)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("block_n,programs", [(None, None), (4, 3), (16, 5), (2, 40)])
def test_head_argmax_is_the_reference(dtype, block_n, programs):
    """Each row's argmax token (through a trimmed head's ids) and its probability from one kernel: the reference's,
    over plans where a program takes one block or many in turn; a maximum held by two rows of the head (in one
    program's blocks, or in two programs') gives the first of them, as torch's argmax."""
    from lab.kernels.head_argmax import _plan, head_argmax, head_argmax_reference

    g = torch.Generator().manual_seed(8)
    k, n, rows = 600, 203, 3
    x = torch.randn(rows, k, generator=g).to(dtype)
    delta = torch.randn(rows, k, generator=g).to(dtype)
    norm = (torch.rand(k, generator=g) + 0.5).to(dtype)
    weight = (torch.randn(n, k, generator=g) / 5).to(dtype)
    vocab = torch.randperm(1000, generator=g)[:n]
    want, _ = head_argmax_reference(x, delta, norm, 1e-5, weight)
    # each of rows 0, 1 and 2 gets its maximum twice: row 0's in a block of the same program (one turn apart), row 1's
    # in another program's block such that the later program holds the smaller row, row 2's in the same block
    _, size, count, *_ = _plan(n, k, programs or 8, block_n)  # rows a block, programs (4 an SM, 2 "SMs" here)
    first = [int(t) for t in want]
    turn, (block, program) = size * count, divmod(first[1] // size, count)
    twins = [first[0] - turn if first[0] >= turn else first[0] + turn,
             first[1] + size * (count - program) if program else first[1] - size * (count - 1), first[2] ^ 1]
    assert len(set(first + twins)) == 6 and all(0 <= t < n for t in twins)
    weight[twins] = weight[first].clone()
    tokens, beliefs = head_argmax(x, delta, norm, 1e-5, weight, vocab, block_n=block_n, programs=programs)
    ref_tokens, ref_beliefs = head_argmax_reference(x, delta, norm, 1e-5, weight, vocab)
    assert torch.equal(tokens, ref_tokens) and tokens.tolist() == vocab[[min(p) for p in zip(first, twins)]].tolist()
    torch.testing.assert_close(beliefs, ref_beliefs, rtol=1e-5, atol=1e-6)
    assert tokens.dtype == torch.long and beliefs.dtype == torch.float32


@pytest.mark.parametrize("siblings", [False, True])
def test_fused_greedy_rounds_give_greedy_tokens(siblings):
    """The device rounds through the fused kernels (the first product gathering the embeddings, the draft's and the
    target's argmax in one kernel after the last layer) commit the HF backend's greedy tokens, and the caches stay in
    step for a plain decode after them."""
    from .conftest import hf_greedy

    model = tiny("llama", vocab_size=96, layers=4, hidden=128, heads=2, seed=5)  # its first 3 layers accept 0-3
    target = FastBackend(model)
    target.w.fused = True
    try:
        draft = target.view([0, 1, 2])
        prompt = [(i * 7) % 60 + 1 for i in range(14)] + [3, 4, 5, 3, 4, 5]
        want = hf_greedy(model, prompt, 30)
        out = [int(target.prefill(prompt).argmax())]
        draft.hold(prompt)
        rounds = target.greedy_rounds(draft, out[0], 3, 4, siblings)
        for r in rounds:
            out += r.committed
        assert out == want[:len(out)] and any(r.accepted == 3 for r in rounds) and any(r.accepted < 3 for r in rounds)
        assert int(target.decode(out[-1]).argmax()) == want[len(out)]
    finally:
        target.w.fused = False
