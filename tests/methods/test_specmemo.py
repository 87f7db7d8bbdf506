"""SpecMemo: the node budget follows the memory budget, and each step's estimate is what the tensors take."""
from __future__ import annotations

import pytest

import lab.speculative.loop as loop
from lab.api import Lab
from lab.backends.hf import HFBackend
from lab.models import tiny
from lab.backends.fast.graphs import NEW_TOKENS
from lab.speculative.drafters import specmemo
from lab.speculative.drafters.specmemo import Calibration, MemoryModel

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


def test_cpu_steps_say_they_are_modelled():
    trace = make_lab().generate("specmemo", PROMPT, max_new_tokens=6, memory_mb=0.2).trace
    steps = [s for s in trace.steps if not s.prefill]
    assert steps and all(s.info["memory_source"] == "modelled" and s.info["memory_measured"] is None for s in steps)
    assert len({s.info["node_budget"] for s in steps}) == 1  # nothing measured, nothing calibrated


def closed_loop(calibration: Calibration, peak, steps: int = 40) -> list[tuple[int, int]]:
    """Run trees of the calibrated size against a device whose real peak is `peak(nodes)`."""
    seen = []
    for _ in range(steps):
        n = calibration.node_budget
        seen.append((n, peak(n)))
        calibration.observe(n, peak(n))
    return seen


def test_calibration_grows_to_what_the_measurements_allow():
    calibration = Calibration(budget=1000, fixed=100, per_node=100, most=64)  # the model: 9 nodes
    assert calibration.node_budget == 9
    seen = closed_loop(calibration, lambda n: 100 + 20 * n, steps=4)  # really 20 bytes a node: 45 fit
    assert [n for n, _ in seen] == [9, 19, 39, 45]  # rows (nodes + root) at most double per step
    assert calibration.violations == 0 and all(p <= 1000 for _, p in seen)


def test_calibration_shrinks_below_a_violation_and_stays_under_the_budget():
    # the model says 9 nodes. The device's peak grows faster than linearly (attention scores), so a fit from a
    # smaller tree underestimates a larger one: (a) 3x the plain step and more per node, the first tree is over;
    # (b) cheap small trees, so the budget grows first, then a large tree goes over
    for peak, largest in ((lambda n: 300 + 60 * n + 3 * n * n, 8), (lambda n: 50 + 5 * n + n * n, 28)):
        calibration = Calibration(budget=1000, fixed=100, per_node=100, most=64)
        seen = closed_loop(calibration, peak)
        assert all(peak(n) <= 1000 for n in range(largest + 1)) and peak(largest + 1) > 1000
        over = [i for i, (_, p) in enumerate(seen) if p > 1000]
        assert over and calibration.violations == len(over) <= 2
        for i in over:  # after a violation at n nodes no tree of n nodes or more runs again
            assert all(n < seen[i][0] for n, _ in seen[i + 1:])
        assert all(p <= 1000 for _, p in seen[over[-1] + 1:])
        assert largest // 2 < calibration.node_budget <= largest  # inside the budget, not far below it


def test_calibration_measures_the_plain_step_and_fills_buckets():
    calibration = Calibration(budget=1000, fixed=990, per_node=100, most=64)
    assert calibration.node_budget == 0
    assert calibration.observe(0, 200) == 1 and calibration.fixed == 200  # per node still the model's
    bucketed = Calibration(budget=1000, fixed=100, per_node=100, most=64, sizes=NEW_TOKENS)
    assert bucketed.node_budget == 7  # 9 fit; the tree runs with its root in a bucket of 8
    closed_loop(bucketed, lambda n: 100 + 10 * n, steps=6)
    assert bucketed.node_budget == 63  # 90 would fit: the largest bucket
    assert Calibration(budget=1000, fixed=1200, per_node=1, most=64).node_budget == 0


class FakeGauge:
    """A CUDA allocator seen through the gauge: each step really takes 3x what the model says."""

    def __init__(self, device):
        self.on, self.estimate = True, 0

    def open(self):
        pass

    def close(self):
        return 3 * self.estimate, 0, False


class TellsTheGauge(specmemo.MemoryBoundDrafter):
    """The drafter, handing each tree's modelled bytes to the fake gauge."""

    def propose(self, dec, root):
        tree = super().propose(dec, root)
        self.gauge.estimate = self.last["total"]
        return tree


def test_measured_steps_calibrate_the_tree_and_keep_greedy_tokens(monkeypatch):
    monkeypatch.setattr(specmemo, "Gauge", FakeGauge)
    monkeypatch.setattr(specmemo, "MemoryBoundDrafter", TellsTheGauge)
    lab_ = make_lab()
    trace = lab_.generate("specmemo", PROMPT, max_new_tokens=16, memory_mb=0.1, max_nodes=64).trace
    assert trace.tokens == lab_.generate("greedy", PROMPT, max_new_tokens=16).trace.tokens
    steps = [s for s in trace.steps if not s.prefill]
    budget = steps[0].info["memory_budget_bytes"]
    assert all(s.info["memory_source"] == "measured" for s in steps)
    assert all(s.info["memory_measured"] == 3 * s.info["memory_bytes"] for s in steps)
    assert steps[0].info["memory_measured"] > budget  # the model's tree does not fit the real device
    sizes = [len(s.proposed) for s in steps]
    for i, s in enumerate(steps):
        if s.info["memory_measured"] > budget:
            assert all(n < sizes[i] for n in sizes[i + 1:])
            assert steps[i + 1].info["node_budget"] < s.info["node_budget"] if i + 1 < len(steps) else True
    assert steps[-1].info["memory_measured"] <= budget and sizes[-1] > 0  # still speculating, within the budget


def test_a_step_with_a_one_off_allocation_is_not_calibrated_on(monkeypatch):
    """A step that captured a graph or made a cache (the backend's one-off counter moved) peaks far over the budget,
    and the peak stays out of the calibration: later trees keep their size; the step says it was a one-off."""
    class OneOff(FakeGauge):
        calls = 0

        def close(self):
            OneOff.calls += 1
            return (10**9, 10**6, True) if OneOff.calls == 2 else (self.estimate, 0, False)

    monkeypatch.setattr(specmemo, "Gauge", OneOff)
    monkeypatch.setattr(specmemo, "MemoryBoundDrafter", TellsTheGauge)
    lab_ = make_lab()
    trace = lab_.generate("specmemo", PROMPT, max_new_tokens=16, memory_mb=0.5, max_nodes=16).trace
    steps = [s for s in trace.steps if not s.prefill]
    assert [s.info["memory_one_off"] for s in steps[:3]] == [False, True, False]
    assert steps[1].info["memory_measured"] > steps[1].info["memory_budget_bytes"]
    assert steps[2].info["node_budget"] >= steps[1].info["node_budget"] > 0  # the one-off capped nothing
