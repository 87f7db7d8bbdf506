"""CommitmentView and its figures, built from a real Trace of a tiny diffusion LM (through JSON, as a notebook
would load one)."""
from __future__ import annotations

from lab.trace import Trace

from .helpers import dllm_lab


def test_commitment_view_from_a_real_trace(tmp_path):
    from lab.widgets import CommitmentView, commitment_figure, confidence_figure, predictions_figure
    from lab.widgets.dllm_figures import grids

    run = dllm_lab("block", block_size=4).generate("fast-dllm", [5, 6, 7], max_new_tokens=12, threshold=0.6).trace
    trace = Trace.from_json(run.to_json(tmp_path / "t.json"))
    order = trace.commit_order()
    heat = commitment_figure(trace).data[0]
    assert list(heat.z[-1]) == order  # the last row: the step each position was committed on
    assert set(heat.z[0]) == {None, 0}  # after step 0: only step 0's commits, the rest still masked
    g = grids(trace)
    first = trace.steps[0]
    assert [g["confidence"][0][p] for p in first.info["masked"]] == first.info["predicted_confidence"]
    assert predictions_figure(trace).data[0].z[0][first.info["masked"][0]] is not None
    lines = confidence_figure(trace)
    assert len(lines.data) == 12 + 1 and list(lines.data[-1].x) == order  # a line per position + commits

    view = CommitmentView(trace)
    assert f"{len(trace.tokens)} of 12" in view.canvas.value
    view.slider.value = 0
    assert f"{len(first.committed)} of 12" in view.canvas.value
    assert view.commitment.layout.shapes[0].y0 == 0


def test_the_tradeoff_figure_draws_one_line_per_policy_in_order_of_parallelism():
    from lab.widgets import tradeoff_figure

    rows = [{"method": "fast-dllm", "setting": "threshold=0.9", "score": 0.61, "tokens_per_forward": 2.1},
            {"method": "fast-dllm", "setting": "threshold=0.7", "score": 0.55, "tokens_per_forward": 3.4},
            {"method": "llada", "setting": "steps=0", "score": 0.62, "tokens_per_forward": 1.0}]
    fig = tradeoff_figure(rows, baseline=0.62)
    lines = {t.name: t for t in fig.data}
    assert list(lines["fast-dllm"].x) == [2.1, 3.4] and list(lines["fast-dllm"].y) == [0.61, 0.55]
    assert list(lines["fast-dllm"].text) == ["threshold=0.9", "threshold=0.7"] and fig.layout.shapes[0].y0 == 0.62
