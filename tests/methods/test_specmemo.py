"""SpecMemo: the node budget follows the memory budget, and each step's estimate is what the tensors take."""
from __future__ import annotations

import pytest

import lab.speculative.loop as loop
from lab.api import Lab
from lab.backends.hf import HFBackend
from lab.models import tiny
from lab.speculative.drafters.specmemo import MemoryModel

from ..conftest import use_draft

PROMPT = [5, 1, 9, 3, 5, 1, 9, 3, 7]


def make_lab(vocab: int = 512) -> Lab:
    lab_ = Lab(model_obj=tiny("llama", vocab_size=vocab, seed=2))
    # a draft with its own shape (1 layer, other head counts), so that its KV is modelled separately
    draft = HFBackend(tiny("qwen2", vocab_size=vocab, layers=1, hidden=48, heads=6, seed=3))
    use_draft(lab_, draft)
    return lab_


def cache_bytes(runner: HFBackend) -> int:
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in runner.cache.layers
               if getattr(layer, "keys", None) is not None)


def test_node_budget_shrinks_with_the_memory_budget():
    lab_ = make_lab()
    for stochastic in (False, True):
        memory = MemoryModel(lab_.target, lab_.draft("default"), stochastic)
        budgets = [memory.max_nodes(mb * 2**20) for mb in (0.01, 0.05, 0.1, 0.2, 0.4)]
        assert budgets == sorted(budgets) and budgets[0] < budgets[-1]
        for mb, n in zip((0.05, 0.2), budgets[1::2]):  # the largest worst case that fits
            fits = lambda k: memory.estimate(k, k, k if stochastic else 0)["total"] <= mb * 2**20
            assert fits(n) and not fits(n + 1)
    small = lab_.generate("specmemo", PROMPT, max_new_tokens=12, memory_mb=0.05, max_nodes=64).trace
    large = lab_.generate("specmemo", PROMPT, max_new_tokens=12, memory_mb=0.2, max_nodes=64).trace
    steps = [s for s in small.steps if s.proposed], [s for s in large.steps if s.proposed]
    assert steps[0][0].info["node_budget"] < steps[1][0].info["node_budget"]
    for trace_steps in steps:
        for s in trace_steps:
            assert len(s.proposed) <= s.info["node_budget"]
            assert s.info["memory_bytes"] <= s.info["memory_budget_bytes"]


def test_no_memory_for_speculation_means_plain_decoding():
    trace = make_lab().generate("specmemo", PROMPT, max_new_tokens=5, memory_mb=0.001).trace
    assert all(not s.proposed for s in trace.steps) and len(trace.tokens) == 5


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_estimate_matches_the_tensors_sizes(monkeypatch, temperature):
    """Measure each step's allocations (cache growth, logits, probabilities, the nodes' q) and compare."""
    lab_ = make_lab()
    parts = ("target_kv", "target_logits", "target_probs", "draft_kv", "draft_logits", "draft_q")
    measured: list[dict] = []
    pending = dict.fromkeys(parts, 0)

    real_forward = HFBackend.forward

    def forward(runner, tokens, parents=None, **kw):  # every call forks its backends: watch them all
        draft = runner.weights is not lab_.model
        kv, logits = ("draft_kv", "draft_logits") if draft else ("target_kv", "target_logits")
        before = cache_bytes(runner)
        out = real_forward(runner, tokens, parents, **kw)
        if not draft or kw.get("among") is not None:  # not the draft catching up with the context
            pending[kv] += cache_bytes(runner) - before
            pending[logits] += out.logits.nbytes
        return out

    real_score, real_verify = loop.score_one, loop.rejection_tree

    def score(dec, drafter, verifier, root, tree):
        pending["draft_q"] = sum(q.nbytes for q in tree.q if q is not None)
        out = real_score(dec, drafter, verifier, root, tree)
        measured.append(dict(pending))
        pending.update(dict.fromkeys(parts, 0))
        return out

    def verify(tree, probs, rng):
        pending["target_probs"] = probs.nbytes
        return real_verify(tree, probs, rng)

    monkeypatch.setattr(loop, "score_one", score)
    monkeypatch.setattr(loop, "rejection_tree", verify)
    monkeypatch.setattr(HFBackend, "forward", forward)
    trace = lab_.generate("specmemo", PROMPT, max_new_tokens=10, memory_mb=0.15, temperature=temperature,
                          seed=0).trace
    steps = [s for s in trace.steps if s.proposed]
    assert steps and len(steps) == len(measured)
    for step, sizes in zip(steps, measured):
        estimate = {k: v for k, v in step.info["memory"].items() if k != "total"}
        assert estimate == sizes
        assert step.info["memory_bytes"] == sum(sizes.values()) <= step.info["memory_budget_bytes"]
        assert (sizes["draft_q"] > 0) == (temperature > 0)
    assert any(sizes["draft_kv"] > 0 for sizes in measured)  # the draft did run on tree nodes
