"""The denoise -> commit loop: what the denoiser sees (against explicit masks on the model itself), the caches,
the schedule, and what each Step records."""
from __future__ import annotations

import pytest
import torch

from lab.backends.hf import HFBackend
from lab.dllm import Denoiser, tiny_dllm
from lab.errors import LabError
from lab.models import tiny
from lab.trace import Trace

from .helpers import dllm_lab, random_prompts

MASK = 3


def finite(t):
    return t.masked_fill(torch.isinf(t), 0)


def direct(model, seq, allowed, rows):
    """The model itself on the whole sequence with an explicit visibility mask; logits at `rows` (mask suppressed)."""
    with torch.no_grad():
        out = model(torch.tensor([seq]), attention_mask=allowed[None, None]).logits[0]
    return finite(out[rows].index_fill(-1, torch.tensor([MASK]), 0.0))


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_block_attention_is_clean_causal_context_plus_a_bidirectional_block(cache):
    model = tiny_dllm("block", shift=True)
    den = Denoiser(HFBackend(model), model.dllm, [1, 2, 4, 5, 6], 12, 4, cache)
    den.predict(0, 4)
    den.canvas[:4] = [7, 8, 9, 10]
    den.predict(4, 8)  # block 0 joins the clean context here
    den.canvas[5] = 11
    window, logits = den.predict(4, 8)
    seq = [1, 2, 4, 5, 6, 7, 8, 9, 10, MASK, 11, MASK, MASK]
    allowed = torch.ones(13, 13, dtype=torch.bool).tril()
    allowed[9:, 9:] = True  # the block sees itself both ways; the clean part stays causal
    assert window == [4, 5, 6, 7]
    assert torch.allclose(finite(logits), direct(model, seq, allowed, slice(8, 12)), atol=1e-4)  # shifted: i-1
    assert den.backend.length == (0 if cache == "none" else 9)  # prompt + block 0 kept, the block dropped


def test_global_attention_none_is_the_full_bidirectional_forward_and_the_caches_go_stale():
    model = tiny_dllm("global", shift=False)
    seq = [1, 2, 4, 5, 6, 7, 8, 9, 10, MASK, 11] + [MASK] * 6
    everyone = torch.ones(17, 17, dtype=torch.bool)
    full = direct(model, seq, everyone, slice(5, 17))
    before = direct(model, seq[:10] + [MASK] + seq[11:], everyone, slice(5, 17))  # position 5 still masked
    got = {}
    for cache in ("none", "prefix", "dual"):
        den = Denoiser(HFBackend(model), model.dllm, [1, 2, 4, 5, 6], 12, 4, cache)
        den.canvas[:4] = [7, 8, 9, 10]
        first = den.predict(4, 8)[1]  # a block's first forward is a full one, whatever the cache
        assert torch.allclose(finite(first), before, atol=1e-4)
        den.canvas[5] = 11
        got[cache] = den.predict(4, 8)
    assert got["none"][0] == list(range(12)) and got["prefix"][0] == list(range(4, 12))
    assert got["dual"][0] == [4, 5, 6, 7]
    assert torch.allclose(finite(got["none"][1]), full, atol=1e-4)
    # the kept entries were computed while position 5 was still masked: the approximation is visible
    assert not torch.allclose(finite(got["prefix"][1]), full[4:], atol=1e-3)
    assert not torch.allclose(finite(got["dual"][1]), full[4:8], atol=1e-3)


def test_block_models_decode_the_same_with_every_cache():
    tl = dllm_lab("block")
    for prompt in random_prompts(4):
        runs = {c: tl.generate("llada", prompt, max_new_tokens=12, cache=c).trace for c in ("none", "prefix", "dual")}
        assert runs["none"].tokens == runs["prefix"].tokens == runs["dual"].tokens
        assert runs["none"].forwards == runs["prefix"].forwards == 12


def test_one_token_per_step_and_semi_autoregressive_blocks():
    tl = dllm_lab("block", block_size=4)
    trace = tl.generate("llada", [5, 6, 7], max_new_tokens=12).trace
    assert trace.forwards == len(trace.steps) == 12 and all(len(s.committed) == 1 for s in trace.steps)
    order = trace.commit_order()
    for b in range(3):  # every position of block b is decided before any of block b + 1
        assert sorted(order[4 * b:4 * b + 4]) == list(range(4 * b, 4 * b + 4))
    fewer = tl.generate("llada", [5, 6, 7], max_new_tokens=12, steps=6).trace
    assert fewer.forwards == 6 and [len(s.committed) for s in fewer.steps] == [2] * 6


def test_low_confidence_commits_the_surest_and_records_every_prediction(tmp_path):
    tl = dllm_lab("global", shift=False)
    trace = tl.generate("llada", [5, 6, 7], max_new_tokens=8, block_size=8, steps=4, cache="none").trace
    for step in trace.steps:
        info = step.info
        predicted = dict(zip(info["masked"], info["predicted_confidence"]))
        assert set(step.positions) <= set(info["masked"])
        left = [c for p, c in predicted.items() if p not in step.positions]
        assert min(step.confidence) >= max(left, default=0)  # nothing left masked was surer
        assert [info["predicted"][info["masked"].index(p)] for p in step.positions] == step.committed
        assert step.canvas is not None and all(step.canvas[p] == t for p, t in zip(step.positions, step.committed))
    assert len(trace.steps[0].info["masked"]) == 8 and trace.steps[-1].canvas == trace.tokens
    again = Trace.from_json(trace.to_json(tmp_path / "t.json"))
    assert again.steps[1].info == trace.steps[1].info


def test_temperature_draws_with_gumbel_noise_from_the_run_seed():
    tl = dllm_lab("block")
    greedy = tl.generate("llada", [5, 6, 7], max_new_tokens=12).tokens
    a = [tl.generate("llada", [5, 6, 7], max_new_tokens=12, temperature=1.0, seed=s).tokens for s in range(4)]
    assert a[0] == tl.generate("llada", [5, 6, 7], max_new_tokens=12, temperature=1.0, seed=0).tokens
    assert any(t != greedy for t in a) and len({tuple(t) for t in a}) > 1


def test_eos_in_the_canvas_ends_the_text():
    tl = dllm_lab("block")
    tokens = tl.generate("llada", [5, 6, 7], max_new_tokens=12).tokens
    tl.eos = {tokens[5]}
    trace = tl.generate("llada", [5, 6, 7], max_new_tokens=12).trace
    assert trace.tokens == tokens[:tokens.index(tokens[5]) + 1] and trace.stop == "eos"


def test_a_dllm_method_on_an_autoregressive_model_names_the_fix():
    from lab.api import Lab

    tl = Lab(model_obj=tiny("llama", vocab_size=64), tokenizer=None)
    with pytest.raises(LabError, match="needs a diffusion LM.*dllm-default"):
        tl.generate("llada", [5, 6], max_new_tokens=4)
    with pytest.raises(LabError, match="cache='warm'"):
        dllm_lab().generate("llada", [5, 6], max_new_tokens=4, cache="warm")


def test_denoiser_ends_where_the_output_is_decided_up_to_an_end_of_text_token():
    model = tiny_dllm("block", shift=True)
    den = Denoiser(HFBackend(model), model.dllm, [1, 2], 6, 3, "prefix", eos=frozenset({9}))
    assert not den.ends()
    den.canvas[2] = 9  # an end token after masks: the output is not over
    assert not den.ends() and not den.ends({0: 5})
    assert den.ends({0: 5, 1: 6})  # decided up to the end token; the rest is never read
    assert not den.ends({0: 10})  # position 1 still masked
    den.canvas = [5, 6, 7, 8, 4, 5]  # every position decided, no end token: the output is over too
    assert den.ends()
