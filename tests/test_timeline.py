"""The device timeline of PEARL's pipeline: spans in order, JSON in every Step, the draft stream's choice, the
figure. Timing values are never asserted (speed is measured on the GPU by scripts/overlap_timeline.py)."""
from __future__ import annotations

import json

import pytest
import torch

from lab.speculative.loop import beside
from lab.speculative.overlap import side_stream
from lab.speculative.timeline import Clocked, Timeline, merged

from .conftest import hf_greedy, tiny_lab, use_draft
from .methods.test_pearl import PROMPTS

CPU = torch.device("cpu")


def test_spans_are_ordered_per_round_and_lane():
    timeline = Timeline()
    for _ in range(3):
        spans = timeline.round(CPU)
        with timeline.span("target", CPU):
            torch.ones(64, 64) @ torch.ones(64, 64)
        for _ in range(2):
            with timeline.span("draft", CPU):
                torch.ones(8)
        assert spans == {}  # nothing is read until resolved
    rounds = timeline.resolve()
    assert len(rounds) == 3
    for r in rounds:
        assert len(r["target"]) == 1 and len(r["draft"]) == 2
        assert r["clocks"] == {"target": "cpu", "draft": "cpu"}
        for a, b in r["target"] + r["draft"]:
            assert 0 <= a <= b
        (_, first_end), (second_start, _) = r["draft"]
        assert first_end <= second_start  # recorded one after the other
        assert r["target"][0][1] <= r["draft"][0][0]
        assert r["overlap_ms"] == 0.0 and r["draft_ms"] > 0
    json.dumps(rounds)


def test_merged_busy_time_and_overlap():
    assert merged([[3, 4], [0, 1], [0.5, 2]]) == [[0, 2], [3, 4]]
    timeline = Timeline()
    timeline.round(CPU)  # spans of known times below: the host clock read at chosen instants
    origin = timeline.rounds[-1].origin.host

    class At:
        event = None

        def __init__(self, ms):
            self.host = origin + ms / 1e3

    timeline.rounds[-1].marks = {"target": [(At(1), At(5))], "draft": [(At(0), At(2)), (At(3), At(7)), (At(4), At(6))]}
    r = timeline.resolve()[0]
    assert r["draft_ms"] == pytest.approx(6.0) and r["overlap_ms"] == pytest.approx(3.0)  # [1, 2] and [3, 5]


def test_beside_opens_a_round_times_the_target_and_can_serialize():
    timeline = Timeline()
    draft = Clocked(tiny_lab("llama", vocab_size=96, seed=1).target, timeline)
    for parallel in (True, False):
        value, host = beside(lambda: [draft.prefill([1, 2, 3])], lambda: 7, timeline=timeline, device=CPU,
                             parallel=parallel)
        assert value == 7 and host["timeline"] is timeline.rounds[-1].spans
    first, serial = timeline.resolve()
    assert len(first["draft"]) == len(serial["draft"]) == 1 and first["target"] and serial["target"]
    assert serial["draft"][0][1] <= serial["target"][0][0]  # parallel=False: the draft first, then the target


def test_a_draft_gets_its_own_stream_only_beside_a_target_on_the_same_gpu():
    cuda0, cuda1 = torch.device("cuda", 0), torch.device("cuda", 1)
    assert side_stream(cuda0, cuda0, parallel=True)
    assert side_stream(torch.device("cuda"), cuda0, parallel=True)
    assert not side_stream(cuda0, cuda0, parallel=False)  # serialized: the target's own stream
    assert not side_stream(cuda0, CPU, parallel=True)  # DuoDecoding's CPU draft overlaps by itself
    assert not side_stream(CPU, CPU, parallel=True)
    assert not side_stream(cuda0, cuda1, parallel=True)


@pytest.mark.parametrize("method", ["pearl", "duodecoding"])
@pytest.mark.parametrize("parallel", [True, False])
def test_every_round_of_pearl_and_duodecoding_has_a_timeline_in_its_step(method, parallel):
    tl = tiny_lab("llama", vocab_size=96, seed=1)
    use_draft(tl, tl.target.view([0]))
    trace = tl.generate(method, PROMPTS[0], max_new_tokens=16, parallel=parallel).trace
    assert trace.tokens == hf_greedy(tl.model, PROMPTS[0], 16)
    rounds = [s for s in trace.steps if not s.prefill and s.info["drafted_ahead"]]
    assert rounds
    for step in rounds:
        t = step.info["timeline"]
        assert len(t["target"]) == 1 and len(t["draft"]) >= 1 and t["clocks"] == {"target": "cpu", "draft": "cpu"}
        assert all(a <= b for a, b in t["target"] + t["draft"])
        assert all(b1 <= a2 for (_, b1), (a2, _) in zip(t["draft"], t["draft"][1:]))  # one draft forward at a time
        if not parallel:
            assert t["overlap_ms"] == 0.0 and t["draft"][-1][1] <= t["target"][0][0]
    again = json.loads(trace.to_json())["steps"]
    assert again[trace.steps.index(rounds[0])]["info"]["timeline"] == rounds[0].info["timeline"]


def test_the_figure_draws_the_scripts_json():
    pytest.importorskip("plotly")
    from lab.widgets import overlap_timeline_figure

    tl = tiny_lab("llama", vocab_size=96, seed=1)
    use_draft(tl, tl.target.view([0]))
    variants = {}
    for name, parallel in [("pearl", True), ("pearl-serial", False)]:
        trace = tl.generate("pearl", PROMPTS[0], max_new_tokens=12, parallel=parallel).trace
        rounds = [s.info["timeline"] for s in trace.steps if "timeline" in s.info]
        variants[name] = {"runs": [{"rounds": rounds, "overlap_fraction": 0.5, "ms_per_token": 1.0}]}
    data = json.loads(json.dumps({"device": "cpu", "model": "tiny", "variants": variants}))
    fig = overlap_timeline_figure(data, rounds=3)
    assert len(fig.data) == 4  # target and draft lanes per variant
    assert {t.name.split(" ")[0] for t in fig.data} == {"target", "draft"}
    bars = fig.data[1]  # pearl's draft lane: one bar per draft forward of the first three rounds
    assert len(bars.x) == sum(len(r["draft"]) for r in variants["pearl"]["runs"][0]["rounds"][:3])
    with pytest.raises(ValueError, match="no variant"):
        overlap_timeline_figure(data, prompt=3)
