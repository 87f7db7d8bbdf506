"""Analysis figures read Traces and benchmark results only; the arena's Drafters tab redraws as runs finish;
the draft-tree view copes with a real tree of hundreds of nodes."""
from __future__ import annotations

import math

import pytest
from lab.widgets import DraftTree, draft_tree_figure
from lab.widgets.analysis import (
    acceptance_scaling_figure,
    bench_bar_figure,
    bench_points,
    best_speedup,
    drafters_figure,
    position_acceptance_figure,
    speedup_contour_figure,
    trace_points,
)

from lab.bench import spec
from lab.decoding import Decoding, drive
from lab.sampling import Sampling
from lab.speculative.drafter import Drafter
from lab.speculative.expand import TreeGrower, top_children
from lab.speculative.loop import speculate
from lab.trace import Step, Trace

from .conftest import tiny_lab


def chain_trace(method: str, accepted: list[int], depth: int, wall: float = 1.0, options=None) -> Trace:
    """A finished run whose verification steps proposed `depth`-token chains and accepted `accepted`."""
    t = Trace(method, options=options or {}, stop="length", wall_s=wall)
    t.steps = [Step(committed=[1], origin=["plain"], forwards=0, prefill=True)]
    for a in accepted:
        t.steps.append(Step(committed=[1] * (a + 1), origin=["draft"] * a + ["bonus"], proposed=[1] * depth,
                            parents=list(range(-1, depth - 1)), accepted=list(range(a)), bonus=1))
    t.tokens = [1] * sum(len(s.committed) for s in t.steps)
    return t


def greedy_trace(tokens: int, wall: float) -> Trace:
    t = Trace("greedy", stop="length", wall_s=wall, tokens=[1] * tokens)
    t.steps = [Step(committed=[1], origin=["plain"], forwards=0, prefill=True)]
    t.steps += [Step(committed=[1], origin=["plain"]) for _ in range(tokens - 1)]
    return t


@pytest.fixture
def results() -> dict:
    runs = []
    for pid, cat in (("a", "chat"), ("b", "code")):
        runs.append({"id": pid, "category": cat, "method": "greedy", "new_tokens": 10, "forwards": 9, "wall_s": 1.0,
                     "prefill_s": 0.1, "accepted": [], "depth": [], "size": [], "exact": True})
        runs.append({"id": pid, "category": cat, "method": "pld", "new_tokens": 10, "forwards": 4, "wall_s": 0.5,
                     "prefill_s": 0.1, "accepted": [3, 0, 2, 1], "depth": [4] * 4, "size": [4] * 4, "exact": True})
    return {"summary": spec.summarize(runs), "categories": ["chat", "code"], "model": "m", "max_new_tokens": 10}


def test_bench_bars_show_the_summary(results):
    fig = bench_bar_figure(results, "speedup")
    assert [d.name for d in fig.data] == ["pld"]  # greedy is the dotted line at 1, not a bar
    assert list(fig.data[0].x) == ["chat", "code", "overall"]
    assert list(fig.data[0].y) == [results["summary"]["pld"][c]["speedup"] for c in ("chat", "code", "overall")]
    assert "greedy" in [d.name for d in bench_bar_figure(results, "tokens_per_forward").data]
    with pytest.raises(ValueError):
        bench_bar_figure(results, "bleu")


def test_position_acceptance_from_traces_and_from_results(results):
    traces = {"m": chain_trace("m", [0, 2, 4, 1], 4)}
    line = position_acceptance_figure(traces).data[0]
    assert list(line.x) == [1, 2, 3, 4] and list(line.y) == [0.75, 0.5, 0.25, 0.25]
    line = position_acceptance_figure(results).data[0]
    assert list(line.y) == results["summary"]["pld"]["overall"]["position_acceptance"]


def test_scaling_figure_fits_a_log_linear_law():
    # tau = 1.5 + 0.5 * log2(depth) exactly: depths 2, 4, 8 accept 1, 1.5 and 2 tokens on average
    traces = [chain_trace("sweep", [1, 1], 2, options={"length": 2}),
              chain_trace("sweep", [1, 2], 4, options={"length": 4}),
              chain_trace("sweep", [2, 2], 8, options={"length": 8})]
    fig = acceptance_scaling_figure(traces)
    points = [d for d in fig.data if d.mode == "markers"]
    assert list(points[0].x) == [2, 4, 8] and list(points[0].y) == [2.0, 2.5, 3.0]
    fit = [d for d in fig.data if d.mode == "lines"][0]
    for x, y in zip(fit.x, fit.y):
        assert y == pytest.approx(1.5 + 0.5 * math.log2(x), abs=1e-6)


def test_speedup_contours_follow_acceptance_and_cost(results):
    fig = speedup_contour_figure(bench_points(results))
    contour = fig.data[0]
    z, alphas, costs = contour.z, list(contour.x), list(contour.y)
    assert all(z[i][0] <= 1.0 + 1e-9 for i in range(len(costs)))  # nothing accepted: no speedup
    assert all(row[j] <= row[j + 1] + 1e-9 for row in z for j in range(len(alphas) - 1))  # more acceptance helps
    assert all(z[i][j] >= z[i + 1][j] - 1e-9 for i in range(len(costs) - 1) for j in range(len(alphas)))
    point = fig.data[1]
    pld = results["summary"]["pld"]["overall"]
    assert list(point.text) == ["pld"] and point.x[0] == pld["alpha"] and point.y[0] == pld["draft_cost"]
    assert point.customdata[0][1] == pytest.approx(best_speedup(pld["alpha"], pld["draft_cost"]))
    assert best_speedup(0.8, 0.0, gamma=3) == pytest.approx(spec.expected_speedup(0.8, 3, 0.0))


def test_trace_points_measure_against_greedy():
    greedy = greedy_trace(10, wall=1.0)
    fast = chain_trace("fast", [3, 3, 1], 4, wall=0.5)
    (point,) = trace_points({"fast": fast}, greedy)
    assert point["speedup"] == pytest.approx((fast.new_tokens / 0.5) / (10 / 1.0), rel=1e-3)
    assert 0 < point["alpha"] < 1 and point["gamma"] == 4


def test_drafters_figure_shows_finished_runs_only():
    greedy = greedy_trace(10, wall=1.0)
    done, running = chain_trace("done", [2, 2, 2], 3, wall=0.5), Trace("running")
    fig = drafters_figure({"done": done, "running": running}, greedy)
    assert [list(d.x) for d in fig.data] == [["done"]] * 3
    assert fig.data[0].y[0] == pytest.approx(done.tokens_per_forward)
    assert fig.data[1].y[0] == pytest.approx(3.0)
    assert fig.data[2].y[0] == pytest.approx((done.new_tokens / 0.5) / (10 / 1.0))
    assert len(drafters_figure({"done": done}, None).data) == 2  # no baseline yet: no speedup bars


# -- the arena tab ------------------------------------------------------------------------------------------
def test_drafters_tab_redraws_as_methods_finish():
    from lab.apps.arena import Arena
    from lab.apps.drafters import DraftersTab

    tab = DraftersTab(Arena())
    assert "pld" in tab.methods.options and "sps" in tab.methods.options
    tab.greedy = greedy_trace(10, wall=1.0)
    tab.traces = {"pld": chain_trace("pld", [3, 3], 4, wall=0.4), "sps": Trace("sps")}
    tab.busy = True
    tab.refresh()
    assert list(tab.chart.object.data[0].x) == ["pld"]
    assert list(tab.table.object["method"]) == ["pld", "sps"]
    assert list(tab.table.object["same as greedy"]) == [False, None]  # 9 tokens against greedy's 10; unfinished
    tab.traces["sps"] = chain_trace("sps", [1, 0, 2], 3, wall=0.9)
    tab.errors["broken"] = "RuntimeError: no"
    tab.traces["broken"] = Trace("broken")
    tab.busy = False
    tab.refresh()
    assert list(tab.chart.object.data[0].x) == ["pld", "sps"]
    assert list(tab.table.object["status"]) == ["length", "length", "RuntimeError: no"]
    assert not tab.start_button.disabled and tab.stop_button.disabled
    assert tab.view() is not None


# -- a draft tree of hundreds of nodes ---------------------------------------------------------------------
class WideTree(Drafter):
    """Test-only drafter: every node gets its draft's `breadth` likeliest children, `depth` levels deep."""

    def __init__(self, runner, breadth: int, depth: int):
        self.runner, self.breadth, self.depth = runner, breadth, depth

    def propose(self, dec, root):
        grower = TreeGrower(self.runner, dec.context)  # the root is already committed: the context ends with it
        level = [-1]
        for d in range(min(self.depth, dec.remaining)):
            level = [grower.add(tok, node, p) for node in level for tok, p in
                     top_children(grower.logits[node], self.breadth)]
            if d + 1 < self.depth:
                grower.run(level)
        return grower.done()


def test_draft_tree_view_handles_hundreds_of_nodes():
    tl = tiny_lab("llama", vocab_size=96, seed=1)
    prompt = [5, 9, 13, 17, 21] * 3
    dec = Decoding(tl.target.fork(), prompt, Sampling(temperature=0.0), None, 8, set(), lab=tl)
    trace = Trace("wide")
    for _ in drive(dec, speculate(dec, WideTree(tl.target.view([0]), 4, 4)), trace, lambda toks, i: f"{toks[i]} "):
        pass
    big = max(range(len(trace.steps)), key=lambda i: len(trace.steps[i].proposed))
    step = trace.steps[big]
    assert len(step.proposed) == 4 + 16 + 64 + 256
    fig = draft_tree_figure(trace, big)
    nodes = next(d for d in fig.data if d.name == "tokens")
    assert len(nodes.x) == 1 + len(step.proposed)
    assert list(nodes.marker.color).count("#2ca02c") == len(step.accepted)
    view = DraftTree(trace)
    view.show(big)
    assert len(next(d for d in view.figure.data if d.name == "tokens").x) == 1 + len(step.proposed)
