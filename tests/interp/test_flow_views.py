"""The route and lens views build from lab.interp data alone, follow the tau slider, show an edge's heads on a
click, and overlay a decoding event."""
from __future__ import annotations

import pytest
from plotly.callbacks import Points

from lab import interp
from lab.widgets import FlowRoutes, LensView, head_frequency_figure, route_figure

from .helpers import tiny_lab_of, tiny_with_biases

IDS = [5, 9, 2, 31, 7, 7, 40, 3, 11, 12]


@pytest.fixture(scope="module")
def tiny():
    return tiny_lab_of(tiny_with_biases("llama", layers=4))


def edge_markers(figure):
    return next(trace for trace in figure.data if trace.name == "edges")


def test_flow_routes_follows_the_slider_and_shows_a_clicked_edge(tiny):
    f = interp.flow(tiny, IDS)
    view = FlowRoutes(f, tau=0.02)
    wide = view.route.size
    assert len(edge_markers(view.figure).x) == sum(e.kind != "residual" for e in view.route.edges)
    view.tau.value = 0.3
    assert view.route.size < wide and view.route.tau == pytest.approx(0.3)
    assert len(edge_markers(view.figure).x) == sum(e.kind != "residual" for e in view.route.edges)
    view.position.value = 4
    assert view.route.position == 4 and f"x4_4" in view.route.nodes
    markers = edge_markers(view.figure)
    n = next(k for k, i in enumerate(markers.customdata) if view.route.edges[i].kind == "attention")
    markers._dispatch_on_click(Points(point_inds=[n], xs=[markers.x[n]], ys=[markers.y[n]], trace_name="edges",
                                      trace_index=0), None)
    edge = view.route.edges[markers.customdata[n]]
    assert view.details.layout.title.text.startswith(f"attention edge L{edge.layer}")
    assert list(view.details.data[0].y) == pytest.approx(edge.heads)


def test_a_rejection_is_overlaid(tiny):
    trace = tiny.generate("layer-skip", IDS, max_new_tokens=16).trace
    event = interp.rejection(tiny, trace)
    view = FlowRoutes(event.flow, event=event)
    assert view.position.disabled and view.route.position == event.position
    assert "rejected draft" in view.figure.layout.title.text
    assert any(trace.name == "draft exit" for trace in view.figure.data)
    colours = set(edge_markers(view.figure).marker.color)
    assert colours & {"#2ca02c", "#d62728"}  # parts into the position coloured by the token they argued for
    view.show_edge(next(i for i, e in enumerate(view.route.edges) if e.kind == "attention"))
    assert len(view.details.data) == 2  # importances per head, and each head's push


def test_lens_and_frequency_figures(tiny):
    f = interp.flow(tiny, IDS)
    lens = interp.logit_lens(tiny, f, [2, 9], track=(f.predicted[-1],))
    view = LensView(lens)
    assert list(view.data[0].text[-1]) == [str(t) for t in f.predicted[2:10:7]]
    assert view.data[1].customdata[-1] == 0 and view.data[1].x[-1] == 0  # the prediction ranks first at the end
    stats = interp.head_frequency(tiny, [IDS, IDS[:4]])
    assert [list(row) for row in head_frequency_figure(stats).data[0].z] == stats.heads.tolist()
    own = head_frequency_figure(stats, at_prediction=True)
    assert [list(row) for row in own.data[0].z] == stats.heads_at_prediction.tolist()
    assert route_figure(f.route()).layout.title.text.startswith("route to the prediction")
