"""The fast backend (static cache, CUDA graphs on a GPU) against the HF backend, the reference, on the CPU:
the same logits for every kind of forward, the same taps, and every lossless method's greedy tokens."""
from __future__ import annotations

import pytest
import torch

import lab
from lab.api import Lab
from lab.backends.fast import FastBackend, supports
from lab.backends.hf import HFBackend
from lab.errors import LabError
from lab.models import tiny

from .conftest import hf_greedy

ARCHS = ["llama", "qwen2"]
LOSSLESS = sorted(name for name, m in lab.load_all().items() if m.lossless
                  and m.family != "diffusion")  # dLLM drafts and references: tests/dllm


def close(a, b):
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()


@pytest.mark.parametrize("arch", ARCHS)
def test_one_layer_on_given_states_matches_the_hf_backend(arch):
    """CLaSp's run_layer: layer i on given states over the cached context (some columns hidden), cache untouched."""
    model = tiny(arch, vocab_size=96, layers=3, seed=4)
    hf, fast = HFBackend(model), FastBackend(model)
    ids = [1, 2, 3, 4, 5, 6]
    hf.prefill(ids), fast.prefill(ids)
    states = torch.randn(2, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    visible = torch.tensor([True, True, False, True, True, True])
    for layer in range(3):
        close(hf.run_layer(layer, states, [5, 6]), fast.run_layer(layer, states, [5, 6]))
        close(hf.run_layer(layer, states, [5, 6], visible), fast.run_layer(layer, states, [5, 6], visible))
    close(hf.decode(7), fast.decode(7))  # neither cache was written


@pytest.mark.parametrize("arch", ARCHS)
def test_every_forward_matches_the_hf_backend(arch):
    model = tiny(arch, vocab_size=96, layers=3, seed=4)
    hf, fast = HFBackend(model), FastBackend(model)
    close(hf.prefill([1, 2, 3, 4, 5]), fast.prefill([1, 2, 3, 4, 5]))
    close(hf.forward([6, 7, 8]).logits, fast.forward([6, 7, 8]).logits)  # a chain
    tree = ([9, 10, 11, 12, 13], [-1, 0, 0, 1, 2])
    close(hf.forward(*tree).logits, fast.forward(*tree).logits)
    hf.keep([0, 2, 4]), fast.keep([0, 2, 4])  # a path that is not a prefix: rows move in the cache
    assert hf.ids == fast.ids
    close(hf.decode(14), fast.decode(14))
    hf.rollback(7), fast.rollback(7)
    visible = torch.tensor([True, False, True, True, False, True, True])
    close(hf.forward([3], visible=visible).logits, fast.forward([3], visible=visible).logits)
    close(hf.forward([4, 5, 6], among="block").logits, fast.forward([4, 5, 6], among="block").logits)
    taps = ("hidden", "attentions", "heads", "mlp")
    a, b = hf.forward([7, 8], taps=taps), fast.forward([7, 8], taps=taps)
    for name in taps:
        assert len(a.taps[name]) == len(b.taps[name])
        for x, y in zip(a.taps[name], b.taps[name]):
            close(x[..., :y.shape[-1]] if name == "attentions" else x, y)
    view_h, view_f = hf.draft_on_cache([0, 2]), fast.draft_on_cache([0, 2])
    view_h.start(), view_f.start()
    close(view_h.step(9), view_f.step(9))
    view_h.finish(), view_f.finish()
    close(hf.decode(10), fast.decode(10))
    close(hf.view([0]).prefill([5, 6, 7]), fast.view([0]).prefill([5, 6, 7]))


@pytest.mark.parametrize("arch", ARCHS)
def test_every_lossless_method_is_greedy_on_the_fast_backend(arch):
    model = tiny(arch, vocab_size=96, seed=1)
    tl = Lab(model_obj=model, backend="fast")
    assert isinstance(tl.target, FastBackend)
    prompt = [(i * 3) % 50 + 1 for i in range(12)] * 2
    want = hf_greedy(model, prompt, 20)
    wrong = [name for name in LOSSLESS if tl.generate(name, prompt, max_new_tokens=20, **(
        {"draft": "layers:1"} if "draft" in lab.get(name).options else {})).tokens != want]
    assert not wrong


def test_caches_are_pooled_and_grow():
    model = tiny("llama", vocab_size=96, seed=2)
    tl = Lab(model_obj=model, backend="fast")
    pool = tl.target.pool
    tl.generate("greedy", [1, 2, 3], max_new_tokens=4)
    free = sum(len(v) for v in pool.free.values())
    tl.generate("greedy", [1, 2, 3], max_new_tokens=4)
    assert free >= 1 and sum(len(v) for v in pool.free.values()) == free  # the second call reused the slab
    small = FastBackend(model, capacity=8)
    want = hf_greedy(model, list(range(1, 12)), 30)
    logits, got = small.prefill(list(range(1, 12))), []
    for _ in range(30):  # 41 tokens: the cache grows past 8 and 32 columns on the way
        got.append(int(logits.argmax()))
        logits = small.decode(got[-1])
    assert got == want and small.slab.capacity == 64


def test_unsupported_models_fall_back_or_say_why():
    gpt2 = tiny("gpt2", vocab_size=64)
    assert "not a Llama-family model" in supports(gpt2)
    assert isinstance(Lab(model_obj=gpt2).target, HFBackend)  # auto: the reference
    with pytest.raises(LabError, match="Llama-family"):
        Lab(model_obj=gpt2, backend="fast")
    with pytest.raises(LabError, match="unknown backend"):
        Lab(model_obj=gpt2, backend="turbo")
