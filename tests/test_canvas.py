"""A Trace commits by position: a toy canvas method that decides positions out of order goes end to end
(the driver, EOS and budget, JSON, the views)."""
from __future__ import annotations

import pytest

from lab import registry
from lab.registry import method
from lab.trace import Step, Trace

from .conftest import tiny_lab

ORDER = [3, 0, 2, 1]  # within each block of four positions, commit in this order


def toy_canvas(dec, *, block: int = 4):
    """Test only: greedy's tokens, committed four positions at a time in a scrambled order."""
    want = [int(t) for t in dec.lab.generate("greedy", dec.prompt, max_new_tokens=dec.max_new_tokens).tokens]
    want += [-1] * (dec.max_new_tokens - len(want))  # past an early EOS nothing is committed
    for start in range(0, dec.max_new_tokens, block):
        positions = [start + i for i in ORDER if start + i < dec.max_new_tokens and want[start + i] >= 0]
        canvas = [want[i] if i < start + block else -1 for i in range(dec.max_new_tokens)]
        yield Step(committed=[want[i] for i in positions], origin=["plain"] * len(positions), positions=positions,
                   confidence=[0.5 + 0.1 * i for i in range(len(positions))], canvas=canvas)


@pytest.fixture(autouse=True)
def registered():
    method("toy-canvas", family="diffusion", lossless=True, paper="(a test of the Trace, not a method)")(toy_canvas)
    yield
    registry.METHODS.pop("toy-canvas", None)


def test_out_of_order_commits_give_the_text_in_order(tmp_path):
    tl = tiny_lab(vocab_size=64)
    greedy = tl.generate("greedy", [1, 2, 3], max_new_tokens=10).tokens
    trace = tl.generate("toy-canvas", [1, 2, 3], max_new_tokens=10).trace
    assert trace.tokens == greedy and trace.stop == "length"
    assert trace.steps[0].positions == [3, 0, 2, 1]
    assert trace.commit_order() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert "".join(trace.pieces) == "".join(f"{t} " for t in greedy)  # pieces in output order
    again = Trace.from_json(trace.to_json(tmp_path / "canvas.json"))
    assert again == trace and again.steps[1].canvas[:8] == greedy[:8]
    assert again.steps[0].confidence == [0.5, 0.6, 0.7, 0.8]


def test_eos_in_the_canvas_ends_the_text_once_everything_before_it_is_there():
    tl = tiny_lab(vocab_size=64)
    greedy = tl.generate("greedy", [1, 2, 3], max_new_tokens=10).tokens
    tl.eos = {greedy[2]}
    trace = tl.generate("toy-canvas", [1, 2, 3], max_new_tokens=10).trace
    end = greedy.index(greedy[2]) + 1
    assert trace.tokens == greedy[:end] and trace.stop == "eos"
    assert all(p < end for s in trace.steps for p in s.positions)  # nothing past the end is kept


def test_a_version_one_trace_still_reads():
    old = {"method": "greedy", "tokens": [5, 6], "steps": [{"committed": [5], "origin": ["plain"]},
                                                          {"committed": [6], "origin": ["plain"]}]}
    trace = Trace.from_dict(old)
    assert trace.origins() == ["plain", "plain"] and trace.tokens == [5, 6]
    with pytest.raises(ValueError, match="newer"):
        Trace.from_dict({**old, "format": 99})


def test_the_views_draw_a_canvas_trace():
    from lab.widgets import TokenStream, token_stream_html

    tl = tiny_lab(vocab_size=64)
    trace = tl.generate("toy-canvas", [1, 2, 3], max_new_tokens=8).trace
    assert "span" in token_stream_html(trace)
    TokenStream(trace)
