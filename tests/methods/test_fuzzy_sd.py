"""Fuzzy SD: threshold 0 is exact speculative decoding; close distributions are accepted outright."""
from __future__ import annotations

import math

import pytest
import torch

from lab.backends.hf import HFBackend
from lab.models import tiny
from lab.speculative.drafters.fuzzy_sd import FuzzyVerifier, divergence_of
from lab.tree import Tree

from ..conftest import hf_greedy, tiny_lab, use_draft

PROMPTS = [[(seed * 7 + i * 3) % 50 + 1 for i in range(12)] * 2 for seed in range(3)]


@pytest.fixture(scope="module")
def poor_draft_lab():
    tl = tiny_lab("llama", vocab_size=96, seed=1)
    use_draft(tl, HFBackend(tiny("llama", vocab_size=96, layers=1, seed=7, init_std=0.3)))
    return tl


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_threshold_zero_is_speculative_decoding(poor_draft_lab, temperature):
    for seed, prompt in enumerate(PROMPTS):
        sps = poor_draft_lab.generate("sps", prompt, max_new_tokens=24, temperature=temperature, seed=seed).trace
        fsd = poor_draft_lab.generate("fuzzy-sd", prompt, max_new_tokens=24, temperature=temperature, seed=seed,
                                      threshold=0.0).trace
        assert fsd.tokens == sps.tokens
        assert [s.accepted for s in fsd.steps] == [s.accepted for s in sps.steps]
        assert not any(s.info.get("fuzzy_accepted") for s in fsd.steps)


def test_a_threshold_above_every_divergence_accepts_every_draft(poor_draft_lab):
    """JS divergence is at most ln 2: above it every draft token is accepted and the output leaves greedy's."""
    changed = 0
    for prompt in PROMPTS:
        trace = poor_draft_lab.generate("fuzzy-sd", prompt, max_new_tokens=24, threshold=0.7).trace
        for step in trace.spec_steps:
            assert step.accepted == list(range(len(step.proposed)))
        changed += trace.tokens != hf_greedy(poor_draft_lab.model, prompt, 24)
        assert trace.tokens_per_forward > 2
    assert changed == len(PROMPTS)


def test_only_positions_under_the_threshold_are_accepted_for_sure():
    """Greedy verification of a 2-token chain whose tokens are not the target's argmax: node 0 sits where
    target and draft agree closely, node 1 where they do not."""
    target = torch.tensor([[2.0, 1.9, -3.0, -3.0], [3.0, -3.0, 0.0, -3.0], [0.0, 0.0, 0.0, 5.0]])
    draft = torch.tensor([[1.9, 2.0, -3.0, -3.0], [-3.0, -3.0, 3.0, 0.0]])
    tree = Tree.from_chain([1, 2])  # the draft's argmaxes; the target prefers 0 at both positions

    class Greedy:
        greedy = True

    class Drafted:  # what the draft's logits were at each node (fuzzy-sd's Remembering)
        rows = list(draft)

    divs = divergence_of("js", target[:2].softmax(-1), draft.softmax(-1))
    assert float(divs[0]) < 0.01 < 0.3 < float(divs[1])
    verdict = FuzzyVerifier(Drafted(), threshold=0.1, kind="js").verify(Greedy(), tree, target)
    assert verdict.info["fuzzy_accepted"] == [0] and verdict.accepted == [0]
    assert verdict.bonus == 0  # node 1 rejected: the target's 0
    verdict = FuzzyVerifier(Drafted(), threshold=0.0, kind="js").verify(Greedy(), tree, target)
    assert verdict.accepted == [] and verdict.bonus == 0  # exact: node 0 is not the target's argmax


def test_divergences():
    p, q = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert math.isclose(float(divergence_of("js", p, q)), math.log(2), rel_tol=1e-5)
    assert float(divergence_of("tv", p, q)) == 1.0
    assert float(divergence_of("js", p, p)) == 0.0 and float(divergence_of("kl", p, p)) == 0.0
