"""Greedy, sampling rules and beam search against transformers."""
from __future__ import annotations

import pytest
import torch

from lab import LabError
from lab.sampling import Sampling, eta, min_p, top_k, top_p, typical

from .conftest import PROMPTS, tiny_lab


def test_truncation_rules_on_a_known_distribution():
    logits = torch.tensor([0.5, 0.25, 0.15, 0.1]).log()
    keep = lambda out: (out > float("-inf")).tolist()
    assert keep(top_k(logits, 2)) == [True, True, False, False]
    assert keep(top_p(logits, 0.7)) == [True, True, False, False]  # 0.5 < 0.7, 0.75 >= 0.7
    assert keep(min_p(logits, 0.35)) == [True, True, False, False]  # p >= 0.175
    assert keep(typical(logits, 0.99)) == [True, True, True, True]
    assert keep(eta(logits, 0.2))[0] and not keep(eta(logits, 0.2))[3]


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(temperature=1, top_p=0), dict(temperature=1, top_k=-2)])
def test_bad_sampling_settings(bad):
    with pytest.raises(LabError):
        Sampling(**bad)


def test_sample_warpers_match_transformers():
    """Our warpers give the same distribution as transformers' logits processors."""
    from transformers.generation.logits_process import (
        MinPLogitsWarper,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
        TypicalLogitsWarper,
    )
    torch.manual_seed(0)
    logits = torch.randn(3, 50) * 3
    cases = [(Sampling(0.7, top_k=5), [TemperatureLogitsWarper(0.7), TopKLogitsWarper(5)]),
             (Sampling(1.3, top_p=0.8), [TemperatureLogitsWarper(1.3), TopPLogitsWarper(0.8)]),
             (Sampling(1.0, min_p=0.1), [MinPLogitsWarper(0.1)]),
             (Sampling(1.0, typical=0.6), [TypicalLogitsWarper(0.6)])]
    for ours, theirs in cases:
        ref = logits.clone()
        for w in theirs:
            ref = w(None, ref)
        assert torch.allclose(ours.probs(logits), ref.softmax(-1), atol=1e-6), ours


@pytest.mark.parametrize("beams, penalty", [(1, 1.0), (3, 1.0), (4, 0.5)])
def test_beam_matches_transformers_on_real_prompts(default_lab, beams, penalty):
    for p in PROMPTS[:3]:
        ids = default_lab.encode(p["prompt"], p["chat"])
        x = torch.tensor([ids])
        ref = default_lab.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=16, num_beams=beams,
                                         length_penalty=penalty, do_sample=False)[0, len(ids):].tolist()
        got = default_lab.generate("beam", p["prompt"], chat=p["chat"], max_new_tokens=16, beams=beams,
                                   length_penalty=penalty)
        assert got.tokens == ref, (p["id"], beams)


def test_beam_on_tiny_models_with_eos():
    for arch in ("llama", "gpt2"):
        lab_ = tiny_lab(arch, vocab_size=30, eos_token_id=3, seed=2)
        for seed in range(3):
            prompt = [5 + seed, 9, 11]
            x = torch.tensor([prompt])
            ref = lab_.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=12, num_beams=3,
                                      do_sample=False, eos_token_id=3, pad_token_id=3)[0, 3:].tolist()
            got = lab_.generate("beam", prompt, max_new_tokens=12, beams=3).tokens
            while ref and len(ref) > len(got) and ref[-1] == 3:
                ref.pop()  # generate pads shorter best hypotheses with the pad (= eos) token
            assert got == ref, (arch, seed)
