"""Routes: importances sum to 1, a hand-built model's route is the one it was built to have, top-down extraction
finds exactly the edges a full-graph search finds, renormalisation, JSON and networkx exports."""
from __future__ import annotations

import networkx as nx
import pytest
import torch

from lab.backends import backend_for
from lab.errors import LabError
from lab.interp import flow_of
from lab.interp.proximity import attention_importance

from .helpers import KEY, OTHER, PLAIN, hand_built, tiny_with_biases

IDS = [5, 9, 2, 31, 7, 7, 40, 3, 11, 12]


@pytest.fixture(scope="module", params=["llama", "qwen2", "gpt2"])
def tiny_flow(request):
    return flow_of(backend_for(tiny_with_biases(request.param, layers=3)), IDS)


def test_importances_are_shares_of_each_update(tiny_flow):
    for layer in range(tiny_flow.layers):
        imp = tiny_flow.attention(layer, list(range(len(IDS))))
        total = imp.heads.sum((1, 2)) + imp.residual + imp.bias
        torch.testing.assert_close(total, torch.ones(len(IDS)))
        assert imp.heads.min() >= 0 and torch.all(imp.heads.sum(-1).triu(1) == 0)  # nothing from the future
        ffn, residual = tiny_flow.ffn(layer)
        torch.testing.assert_close(ffn + residual, torch.ones(len(IDS)))


def test_proximity_matches_the_definition_part_by_part(tiny_flow):
    """Against max(||y||_1 - ||y - z||_1, 0) with every part z = A u formed explicitly."""
    parts = tiny_flow.parts.layers[1]
    i = len(IDS) - 1
    y = parts.middle[i]
    z = parts.attention[:, i, :].T[..., None] * parts.head_values  # [T, H, D]
    close = lambda part: max(float(y.abs().sum() - (y - part).abs().sum()), 0.0)  # noqa: E731
    expected = torch.tensor([[close(z[j, h]) for h in range(z.shape[1])] for j in range(len(IDS))])
    rest = [close(parts.residual[i])] + ([close(parts.attention_bias)] if parts.attention_bias is not None else [])
    expected = expected / (expected.sum() + sum(rest))
    torch.testing.assert_close(tiny_flow.attention(1, [i]).heads[0], expected, atol=1e-5, rtol=1e-4)


def test_chunking_changes_nothing(tiny_flow):
    parts = tiny_flow.parts.layers[0]
    whole = attention_importance(parts, list(range(len(IDS))), budget=1 << 30)
    one_by_one = attention_importance(parts, list(range(len(IDS))), budget=1)
    torch.testing.assert_close(whole.heads, one_by_one.heads)


def test_the_hand_built_route():
    """Tokens PLAIN KEY PLAIN OTHER: at the last position the KEY's part through head 0 is 2 * n / 4 on dimension 4
    (n: the KEY's normed entry), the stream is 0.5 on dimension 0; nothing else writes anything."""
    f = flow_of(backend_for(hand_built()), [PLAIN, KEY, PLAIN, OTHER])
    key_value = 1.0 / (((0.5 ** 2 + 1.0) / 8 + 1e-6) ** 0.5)  # the KEY's dimension 1 after the RMSNorm
    part, stream = 2 * key_value / 4, 0.5
    whole = part + stream  # ||y||_1; each part's proximity is the whole minus the other
    route = f.route(tau=0.04)
    edges = {(e.src, e.dst, e.kind): e for e in route.edges}
    assert set(edges) == {("a0_3", "x1_3", "residual"), ("x0_1", "a0_3", "attention"), ("x0_3", "a0_3", "residual")}
    assert edges[("a0_3", "x1_3", "residual")].weight == pytest.approx(1.0)
    assert edges[("x0_1", "a0_3", "attention")].weight == pytest.approx(part / whole, rel=1e-4)
    assert edges[("x0_1", "a0_3", "attention")].heads == pytest.approx([part / whole, 0.0], rel=1e-4)
    assert edges[("x0_3", "a0_3", "residual")].weight == pytest.approx(stream / whole, rel=1e-4)
    assert route.important_heads() == {(0, 0)} and route.ffn_layers() == set()
    assert f.route(tau=0.5).edges[-1].src == "x0_1"  # above the stream's share only the KEY stays


def full_graph_route(f, position, tau):
    """The route by a search of the whole graph: every edge above tau, then everything that reaches the output."""
    graph = nx.MultiDiGraph()
    f.complete()
    for layer in range(f.layers):
        ffn, residual = f.ffn(layer)
        imp = f.attention(layer, list(range(len(f))))
        for i in range(len(f)):
            for kind, w in (("ffn", ffn[i]), ("residual", residual[i])):
                if w > tau:
                    graph.add_edge(f"a{layer}_{i}", f"x{layer + 1}_{i}", key=kind)
            if imp.residual[i] > tau:
                graph.add_edge(f"x{layer}_{i}", f"a{layer}_{i}", key="residual")
            for j, w in enumerate(imp.heads[i].sum(-1).tolist()):
                if w > tau:
                    graph.add_edge(f"x{layer}_{j}", f"a{layer}_{i}", key="attention")
    start = f"x{f.layers}_{position}"
    if start not in graph:
        return set()
    reach = nx.ancestors(graph, start) | {start}
    return {(u, v, k) for u, v, k in graph.edges(keys=True) if v in reach}


@pytest.mark.parametrize("tau", [0.01, 0.04, 0.2])
def test_top_down_finds_what_the_whole_graph_search_finds(tiny_flow, tau):
    for position in (len(IDS) - 1, 4):
        route = tiny_flow.route(position, tau)
        assert {(e.src, e.dst, e.kind) for e in route.edges} == full_graph_route(tiny_flow, position, tau)
        assert all(e.weight > tau for e in route.edges)


def test_renormalised_nodes_sum_to_one(tiny_flow):
    route = tiny_flow.route(tau=0.04, renormalize=True)
    into: dict[str, float] = {}
    for e in route.edges:
        into[e.dst] = into.get(e.dst, 0.0) + e.weight
        if e.kind == "attention":
            assert sum(e.heads) == pytest.approx(e.weight, rel=1e-5)
    plain = {(e.src, e.dst, e.kind): e.weight for e in tiny_flow.route(tau=0.04).edges}
    assert set(plain) == {(e.src, e.dst, e.kind) for e in route.edges}  # same structure, rescaled weights
    bias_kept = any(b > 0.04 for layer in range(tiny_flow.layers) for b in tiny_flow.attention(layer, [0]).bias)
    if not bias_kept:
        assert all(w == pytest.approx(1.0, rel=1e-5) for w in into.values())


def test_json_contract_and_networkx(tiny_flow):
    route = tiny_flow.route(tau=0.04)
    data = route.to_dict()
    assert set(data) == {"tokens", "nodes", "edges"} and data["tokens"] == [str(t) for t in IDS]
    ids = {n["id"] for n in data["nodes"]}
    keys = {"src", "dst", "kind", "weight", "layer", "head", "src_token", "dst_token"}
    for e in data["edges"]:
        assert set(e) == keys and 0 < e["weight"] <= 1 and e["src"] in ids and e["dst"] in ids
        assert (e["head"] is None) == (e["kind"] != "attention")
    summed: dict = {}
    for e in data["edges"]:
        if e["kind"] == "attention":
            summed[(e["src"], e["dst"])] = summed.get((e["src"], e["dst"]), 0) + e["weight"]
    for e in route.edges:
        if e.kind == "attention":
            assert summed[(e.src, e.dst)] == pytest.approx(e.weight, abs=1e-5)
    graph = route.to_networkx()
    assert graph.number_of_edges() == route.size and set(graph.nodes) == ids
    assert nx.is_directed_acyclic_graph(graph)
    top = f"x{tiny_flow.layers}_{len(IDS) - 1}"
    assert all(nx.has_path(graph, node, top) for node in graph.nodes)  # every node leads to the prediction


@pytest.mark.parametrize("tau", [0, 1, -0.1, 1.5, float("nan"), True, "0.1"])
def test_bad_tau_and_position_are_refused(tiny_flow, tau):
    with pytest.raises(LabError, match="tau"):
        tiny_flow.route(tau=tau)
    with pytest.raises(LabError, match="position"):
        tiny_flow.route(len(IDS), 0.04)
