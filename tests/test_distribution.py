"""At temperature T > 0, every lossless method samples exactly from the target's distribution, also under top-k
and top-p, with verification going several levels deep; three deliberate verifier bugs fail the same check.

How the check works, and why its target and draft look the way they do: tests/distribution.py.
"""
from __future__ import annotations

import pytest
import torch

from lab import registry
from lab.api import Lab
from lab.backends.hf import HFBackend
from lab.speculative.loop import Exact

from .conftest import use_draft
from .distribution import MUTANTS, PLAIN, PROMPT, T, check, conditionals, mutant, target_and_draft

RUNS, TOKENS = 64, 32  # 2048 tokens per method
ALPHA = 1e-5  # each p-value must be above it; the mutants' are far below
LOSSLESS = sorted(name for name, m in registry.load_all().items() if m.lossless
                  and m.family != "diffusion")  # dLLM drafts and references: tests/dllm
# settings under which this far-off draft still reaches the leaves of the tree (so the target's own token after
# an accepted leaf is drawn) and, for sequoia, a tree deeper than one level
OPTIONS = {"specinfer": {"expansion": "2,1"}, "recursive-sd": {"branching": "3,1"}, "tetris": {"depth": 2},
"jacobi": {"window": 2}, "sjd": {"window": 2},
           "sequoia": {"width": 2, "budget": 6}, "fastdraft": {"length": 3}}  # fastdraft's default chains are 1 long
DRAFTS_PAST_THE_ROWS = {"pearl", "duodecoding", "specbranch"}  # drafts hang below every scored node: no leaf is ever scored
# the method each bug is shown on: its verification meets the bug at almost every step
SHOWN_ON = {"unchecked": "specinfer", "parent-row": "sps", "siblings": "recursive-sd"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run faster on one thread than on two (no synchronisation around tiny matmuls)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def target_lab():
    target, draft = target_and_draft()
    lab_ = Lab(model_obj=target)
    use_draft(lab_, HFBackend(draft))
    return lab_


def failures(report) -> list[str]:
    return [f"{name}: p = {p:.2e}" for name, p in report.p.items() if not p > ALPHA] + \
        ([f"{report.impossible} tokens outside top-k / top-p"] if report.impossible else [])


@pytest.mark.parametrize("name", sorted(set(LOSSLESS) | {"sample"}))
def test_samples_are_the_target_distribution(target_lab, name):
    report = check(target_lab, name, RUNS, TOKENS, OPTIONS.get(name))
    assert not failures(report), (name, failures(report))
    if name in ("greedy", "sample"):
        return
    counts = {"steps": report.steps, "trees past depth 1": report.deep, "steps accepting >= 2 drafts": report.multi,
              "target tokens after an accepted draft": report.bonus, "residual draws": report.rejected,
              "target tokens after an accepted leaf": len(report.fresh)}
    if name in DRAFTS_PAST_THE_ROWS:
        del counts["target tokens after an accepted leaf"]
        counts["post-verify rounds"] = report.modes["post-verify"]
    if name == "specbranch":  # drafts prepared beside the target were used, after either verdict
        counts["acceptance hits"], counts["branch hits"] = report.kinds["acceptance"], report.kinds["branch"]
    assert min(counts.values()) >= 5, (name, counts)


def test_the_draft_is_confident_and_wrong(target_lab):
    """The drafts' distribution is far from the target's (total variation), and surer of itself."""
    tokens = target_lab.generate("greedy", PROMPT, max_new_tokens=TOKENS, temperature=T, seed=0).tokens
    p = conditionals(target_lab.model, PROMPT, tokens, PLAIN)
    q = conditionals(target_lab._drafts["default"].model, PROMPT, tokens, PLAIN)
    assert 0.5 * (p - q).abs().sum(-1).mean() > 0.6
    assert q.max(-1).values.mean() > p.max(-1).values.mean()


def test_the_check_rejects_a_slightly_wrong_temperature(target_lab):
    report = check(target_lab, "greedy", RUNS, TOKENS, reference=T * 1.15)
    assert failures(report)


@pytest.mark.parametrize("bug", MUTANTS)
def test_each_known_verifier_bug_fails_the_check(target_lab, monkeypatch, bug):
    """The three bugs an earlier two-token test let pass, injected into the exact verifier, fail the check."""
    name = SHOWN_ON[bug]
    monkeypatch.setattr(Exact, "verify", mutant(bug))
    report = check(target_lab, name, RUNS, TOKENS, OPTIONS.get(name))
    assert failures(report), (bug, name, report.p)


def test_the_tree_rejection_kernels_keep_the_target_distribution(target_lab, monkeypatch):
    """The exact verifier with the tree rejection kernels (`rejection_tree_kernel`: lab.kernels.tree_rejection, what
    the exact verifier runs on a GPU; here in Triton's interpreter, about 40 s) passes the same check on specinfer's
    trees of drawn siblings, with verification several levels deep, residual draws and the target's own tokens
    after accepted leaves. (The kernels drawing the token after a rejection from p instead of the residual fail it:
    pairs p = 4e-8.)"""
    from lab.speculative.verify import greedy_tree, rejection_tree_kernel

    name = "specinfer"

    def verify(self, dec, tree, logits):
        return greedy_tree(tree, logits) if dec.greedy else rejection_tree_kernel(tree, dec.probs(logits), dec.rng)

    monkeypatch.setattr(Exact, "verify", verify)
    report = check(target_lab, name, RUNS, TOKENS, OPTIONS.get(name))
    assert not failures(report), (name, failures(report))
    counts = (report.deep, report.multi, report.bonus, report.rejected, len(report.fresh))
    assert min(counts) >= 5, (name, counts)
