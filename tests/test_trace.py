"""Trace: JSON round trip, metrics, and the driver's stopping rules (EOS, budget, cancel)."""
from __future__ import annotations

from lab.trace import Step, Trace

from .conftest import tiny_lab


def test_json_round_trip(tmp_path):
    lab_ = tiny_lab(vocab_size=40)
    trace = lab_.generate("pld", [1, 2, 3, 1, 2, 3, 1, 2], max_new_tokens=12).trace
    path = tmp_path / "t.json"
    trace.to_json(path)
    again = Trace.from_json(path)
    assert again == trace and again.metrics() == trace.metrics()


def test_metrics():
    t = Trace("x", tokens=[1, 2, 3, 4])
    t.steps = [Step(committed=[1], forwards=0, prefill=True),
               Step(committed=[2, 3, 4], proposed=[2, 3, 7], parents=[-1, 0, 1], accepted=[0, 1], bonus=4)]
    assert t.forwards == 1 and t.tokens_per_forward == 4.0 and t.mean_accepted == 3.0


def test_budget_and_eos_cut_a_step():
    lab_ = tiny_lab(vocab_size=40)
    full = lab_.generate("greedy", [3, 4, 5], max_new_tokens=10).tokens
    lab_.eos = {full[3]}
    cut = lab_.generate("pld", [3, 4, 5], max_new_tokens=10)
    assert cut.tokens == full[: full.index(full[3]) + 1] and cut.trace.stop == "eos"
    lab_.eos = set()
    assert len(lab_.generate("pld", [3, 4, 5], max_new_tokens=7).tokens) == 7


def test_cancel_stops_between_steps():
    lab_ = tiny_lab(vocab_size=40)
    seen = []
    result = lab_.generate("greedy", [1, 2], max_new_tokens=50, cancel=lambda: len(seen) >= 3,
                           on_step=lambda step, trace: seen.append(step))
    assert result.trace.stop == "cancelled" and len(result.tokens) == 3


def test_streaming_yields_steps_as_they_commit():
    lab_ = tiny_lab(vocab_size=40)
    counts = [len(step.committed) for step in lab_.stream("greedy", [1, 2], max_new_tokens=5)]
    assert counts == [1] * 5
