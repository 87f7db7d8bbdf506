"""deer samples exactly from the autoregressive target's distribution (tests/distribution.py's check, with a tiny
dLLM drafting for the nearly Markov target), and the check fails when the verifier accepts drafts unchecked."""
from __future__ import annotations

import pytest
import torch

from lab.api import Lab
from lab.backends.hf import HFBackend
from lab.dllm import tiny_dllm
from lab.speculative.loop import Exact

from ..distribution import VOCAB, check, mutant, target_and_draft

RUNS, TOKENS, ALPHA = 48, 32, 1e-5


@pytest.fixture(scope="module")
def deer_target():
    torch.set_num_threads(1)
    target, _ = target_and_draft()
    lab_ = Lab(model_obj=target)
    lab_._drafts["dllm-default"] = HFBackend(tiny_dllm("block", vocab_size=VOCAB, mask_id=VOCAB - 1, block_size=3,
                                                       seed=5))
    return lab_


def failures(report) -> list[str]:
    return [f"{name}: p = {p:.2e}" for name, p in report.p.items() if not p > ALPHA] + \
        ([f"{report.impossible} tokens outside top-k / top-p"] if report.impossible else [])


def test_deer_samples_the_target_distribution(deer_target):
    report = check(deer_target, "deer", RUNS, TOKENS)
    assert not failures(report), failures(report)
    counts = {"steps": report.steps, "steps accepting >= 2 drafts": report.multi, "residual draws": report.rejected,
              "target tokens after an accepted draft": report.bonus}
    assert min(counts.values()) >= 5, counts


def test_an_unchecked_verifier_fails_the_check(deer_target, monkeypatch):
    monkeypatch.setattr(Exact, "verify", mutant("unchecked"))
    assert failures(check(deer_target, "deer", RUNS, TOKENS))
