"""sample: several truncation rules at once give transformers' own distribution (its generate, its order)."""
from __future__ import annotations

import pytest
import torch

from lab.models import tiny
from lab.sampling import Sampling

RULES = [dict(top_k=8, top_p=0.6), dict(top_p=0.7, min_p=0.2), dict(top_k=20, typical=0.5),
         dict(top_p=0.8, typical=0.7, eta=0.05), dict(top_k=12, top_p=0.75, min_p=0.1, typical=0.8, eta=0.02),
         dict(min_p=0.05, typical=0.6, eta=0.1)]


def hf_names(rules: dict) -> dict:
    names = {"top_k": "top_k", "top_p": "top_p", "min_p": "min_p", "typical": "typical_p", "eta": "eta_cutoff"}
    return {names[k]: v for k, v in rules.items()}


@pytest.mark.parametrize("rules", RULES)
@pytest.mark.parametrize("temperature", [0.7, 1.3])
def test_combined_rules_are_transformers_logits_processors(rules, temperature):
    """The warped logits of transformers' generate (output_scores) at each step equal Sampling.warp's."""
    model = tiny("llama", vocab_size=64, seed=5, init_std=0.1)
    x = torch.tensor([[3, 17, 9, 41, 5, 9]])
    out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=4, do_sample=True,
                         temperature=temperature, output_scores=True, output_logits=True, return_dict_in_generate=True,
                         **{"top_k": 0, **hf_names(rules)})
    ours, sizes = Sampling(temperature=temperature, **rules), []
    for raw, theirs in zip(out.logits, out.scores):
        warped = ours.warp(raw[0])
        kept = warped > float("-inf")
        assert kept.tolist() == (theirs[0] > float("-inf")).tolist()
        assert torch.allclose(warped[kept], theirs[0][kept].float(), atol=1e-5)
        sizes.append(int(kept.sum()))
    assert max(sizes) > 1 and max(sizes) < 64  # the rules really cut, and not down to one token each time


def test_the_order_matters():
    """top-p after top-k takes its mass from the k survivors: another set than top-p first."""
    logits = torch.tensor([0.30, 0.25, 0.2, 0.15, 0.1]).log()
    warped = Sampling(temperature=1.0, top_k=2, top_p=0.5).warp(logits)
    assert (warped > float("-inf")).tolist() == [True, False, False, False, False]  # 0.30 / 0.55 >= 0.5
    alone = Sampling(temperature=1.0, top_p=0.5).warp(logits)
    assert (alone > float("-inf")).tolist() == [True, True, False, False, False]
