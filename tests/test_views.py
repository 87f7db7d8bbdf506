"""Views read Traces only: the HTML and figures show what the trace says; the README's table is current."""
from __future__ import annotations

import subprocess
import sys

import pytest
from lab.widgets import (
    Acceptance,
    DraftTree,
    TokenStream,
    acceptance_figure,
    draft_tree_figure,
    token_stream_html,
)

from lab.trace import Step, Trace

from .conftest import ROOT


@pytest.fixture
def trace() -> Trace:
    t = Trace("demo", prompt=[5], tokens=[1, 2, 3, 4, 5], pieces=["a", "b", "c", "d", "e"],
              vocab={str(i): f"t{i}" for i in range(12)})
    t.steps = [Step(committed=[1], origin=["plain"], forwards=0, prefill=True),
               Step(committed=[2, 3, 4], origin=["draft", "draft", "bonus"], proposed=[2, 3, 9, 10],
                    parents=[-1, 0, 1, -1], draft_probs=[0.9, 0.8, 0.1, 0.2], accepted=[0, 1], bonus=4),
               Step(committed=[5], origin=["bonus"], proposed=[11], parents=[-1], accepted=[], bonus=5)]
    return t


def test_token_stream_colours_each_token_by_origin(trace):
    html = token_stream_html(trace)
    assert html.count('class="tok tok-draft"') == 2 and html.count('class="tok tok-bonus"') == 2
    assert html.count('class="tok tok-plain"') == 1
    assert TokenStream(trace).value == html


def test_draft_tree_highlights_the_accepted_path(trace):
    fig = draft_tree_figure(trace, 1)
    nodes = next(d for d in fig.data if d.name == "tokens")
    assert list(nodes.text) == ["t1", "t2", "t3", "t9", "t10"]  # root (last committed) then the 4 drafts
    assert list(nodes.marker.color).count("#2ca02c") == 2
    bonus = next(d for d in fig.data if d.name == "bonus")
    assert list(bonus.text)[-1] == "t4"
    widget = DraftTree(trace)
    assert widget.slider.options == (1, 2)
    widget.show(2)
    assert "step 2" in widget.figure.layout.title.text


def test_acceptance_counts(trace):
    fig = acceptance_figure(trace)
    assert list(fig.data[0].y) == [2, 0]  # accepted per speculative step
    assert list(fig.data[1].y) == [1, 0, 1]  # histogram of 0, 1, 2 accepted
    assert fig.data[2].y[-1] == pytest.approx(5 / 2)  # 5 tokens over 2 forwards
    assert Acceptance(trace).data[0].y == (2, 0)


def test_a_run_without_drafts_has_an_empty_tree():
    t = Trace("greedy", steps=[Step(committed=[1], origin=["plain"])])
    assert "no draft" in draft_tree_figure(t).layout.annotations[0].text


def test_readme_methods_table_is_current():
    assert subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_methods.py"), "--check"]).returncode == 0
