"""Information-flow routes: the subgraph of important edges that leads to one prediction, found top-down.

"Information Flow Routes: Automatically Interpreting Language Models at Scale" (Ferrando & Voita, 2024),
Algorithm 1. Nodes are residual streams: `x{l}_{i}` enters layer l at position i (`x{L}_{i}` is the output the
LM head reads after the final norm), `a{l}_{i}` is the stream after layer l's attention update. Edges:

- `attention` x{l}_{j} -> a{l}_{i}: source j's parts through all heads of layer l (their per-head importances
  kept in `heads`; an edge enters the route when their sum is above tau, as in the paper);
- `ffn` a{l}_{i} -> x{l+1}_{i}: the FFN block of layer l;
- `residual` x{l}_{i} -> a{l}_{i} and a{l}_{i} -> x{l+1}_{i}: the stream carried past a block.

Starting from the predicting node, each node reached gets its incoming edges of importance above tau, and their
sources are reached in turn, down to the embeddings. With `renormalize`, the kept edges of each node are rescaled
to sum to 1 (the paper's option; the reference tool's default). Export: `to_dict` (the CLI's JSON, attention
edges listed once per contributing head), `to_networkx` (a MultiDiGraph, one edge per kind).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch

from ..errors import LabError

TAU = 0.04  # the paper's threshold
KINDS = ("attention", "ffn", "residual")


def check_tau(tau) -> float:
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0.0 < float(tau) < 1.0:
        raise LabError(f"tau must be a number in (0, 1), got {tau!r}: 0.04 is the paper's")
    return float(tau)


@dataclass
class Edge:
    src: str
    dst: str
    kind: str  # attention | ffn | residual
    weight: float  # importance in the destination node (summed over heads for attention)
    layer: int
    src_token: int  # positions
    dst_token: int
    heads: list[float] | None = None  # attention: the importance through each head (sums to weight)


@dataclass
class Route:
    """The important subgraph behind the prediction at `position` (from the stream leaving layer `top`)."""

    ids: list[int]
    pieces: list[str]
    position: int
    tau: float
    renormalize: bool
    layers: int
    heads: int
    top: int
    edges: list[Edge]
    head_importance: dict[tuple[int, int], list[float]] = field(default_factory=dict)  # (layer, i) -> per head
    predicted: int | None = None
    probability: float | None = None

    @property
    def nodes(self) -> list[str]:
        seen = dict.fromkeys([f"x{self.top}_{self.position}"])
        for e in self.edges:
            seen.setdefault(e.src)
            seen.setdefault(e.dst)
        return list(seen)

    @property
    def size(self) -> int:
        """Edges of the route (an attention edge counts once, whatever its number of heads)."""
        return len(self.edges)

    def important_heads(self, tau: float | None = None, *, at_prediction: bool = False) -> set[tuple[int, int]]:
        """(layer, head) pairs whose parts, summed over sources, pass tau in some node of the route (with
        `at_prediction`, in a node of the predicting position's own stream)."""
        tau = self.tau if tau is None else tau
        return {(layer, h) for (layer, i), per_head in self.head_importance.items()
                if not at_prediction or i == self.position for h, w in enumerate(per_head) if w > tau}

    def ffn_layers(self, *, at_prediction: bool = False) -> set[int]:
        """Layers whose FFN block is on the route (with `at_prediction`, at the predicting position)."""
        return {e.layer for e in self.edges if e.kind == "ffn" and (not at_prediction or e.dst_token == self.position)}

    def to_dict(self) -> dict:
        """The CLI contract: {"tokens", "nodes", "edges": [{"src", "dst", "kind", "weight", "layer", "head",
        "src_token", "dst_token"}]}, weights in (0, 1]."""
        out = []
        for e in self.edges:
            split = enumerate(e.heads) if e.kind == "attention" else [(None, e.weight)]
            for head, w in split:
                w = min(round(float(w), 6), 1.0)
                if w > 0:
                    out.append({"src": e.src, "dst": e.dst, "kind": e.kind, "weight": w, "layer": e.layer,
                                "head": head, "src_token": e.src_token, "dst_token": e.dst_token})
        nodes = [{"id": n, "layer": int(n[1:].split("_")[0]), "token": int(n.split("_")[1]),
                  "stage": "pre" if n[0] == "x" else "mid"} for n in self.nodes]
        return {"tokens": list(self.pieces), "nodes": nodes, "edges": out}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def to_networkx(self):
        """A networkx MultiDiGraph: nodes carry layer, token, stage and piece; edges (keyed by kind) carry weight,
        layer and, for attention, the per-head weights."""
        import networkx as nx

        graph = nx.MultiDiGraph(position=self.position, tau=self.tau, predicted=self.predicted)
        for node in self.to_dict()["nodes"]:
            graph.add_node(node["id"], **node, piece=self.pieces[node["token"]])
        for e in self.edges:
            graph.add_edge(e.src, e.dst, key=e.kind, kind=e.kind, weight=e.weight, layer=e.layer, heads=e.heads)
        return graph


def kept(weights: torch.Tensor, tau: float, renormalize: bool, extra: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Weights above tau (others 0), rescaled to sum to 1 with `renormalize` (`extra`: kept mass without edges)."""
    weights = torch.where(weights > tau, weights, torch.zeros_like(weights))
    if not renormalize:
        return weights
    total = weights.sum(-1, keepdim=True) + extra
    return weights / total.clamp_min(torch.finfo(weights.dtype).tiny)


def extract(flow, position: int, tau: float = TAU, *, renormalize: bool = False, top: int | None = None) -> Route:
    """Algorithm 1 of the paper on a Flow: top-down from node x{top}_{position}."""
    tau = check_tau(tau)
    top = flow.layers if top is None else int(top)
    if not 0 < top <= flow.layers:
        raise LabError(f"a route starts after layer 1 .. {flow.layers}, got {top}")
    edges: list[Edge] = []
    heads_at: dict[tuple[int, int], list[float]] = {}
    streams = [position]
    for layer in reversed(range(top)):
        ffn, residual = flow.ffn(layer)
        at = torch.tensor(streams, dtype=torch.long)
        block = kept(torch.stack([ffn[at], residual[at]], 1), tau, renormalize)  # [n, 2]
        for i, (w_ffn, w_res) in zip(streams, block.tolist()):
            for kind, w in (("ffn", w_ffn), ("residual", w_res)):
                if w > 0:
                    edges.append(Edge(f"a{layer}_{i}", f"x{layer + 1}_{i}", kind, w, layer, i, i))
        mids = [i for i, row in zip(streams, block.tolist()) if any(row)]
        if not mids:
            return _route(flow, position, tau, renormalize, top, edges, heads_at)
        imp = flow.attention(layer, mids)
        sums = imp.heads.sum(-1)  # [n, T]: each source over all heads
        bias = torch.where(imp.bias > tau, imp.bias, torch.zeros_like(imp.bias))
        both = kept(torch.cat([sums, imp.residual[:, None]], 1), tau, renormalize, bias[:, None])
        scale = torch.where(sums > 0, both[:, :-1] / sums.clamp_min(torch.finfo(sums.dtype).tiny), 0.0)
        reached = set()
        for n, i in enumerate(mids):
            heads_at[(layer, i)] = imp.heads[n].sum(0).tolist()
            for j in both[n, :-1].nonzero().flatten().tolist():
                edges.append(Edge(f"x{layer}_{j}", f"a{layer}_{i}", "attention", float(both[n, j]), layer, j, i,
                                  (imp.heads[n, j] * scale[n, j]).tolist()))
                reached.add(j)
            if both[n, -1] > 0:
                edges.append(Edge(f"x{layer}_{i}", f"a{layer}_{i}", "residual", float(both[n, -1]), layer, i, i))
                reached.add(i)
        streams = sorted(reached)
        if not streams:
            break
    return _route(flow, position, tau, renormalize, top, edges, heads_at)


def _route(flow, position, tau, renormalize, top, edges, heads_at) -> Route:
    final = top == flow.layers
    return Route(list(flow.ids), list(flow.pieces), position, tau, renormalize, flow.layers, flow.heads, top, edges,
                 heads_at, flow.predicted[position] if final else None, flow.probability[position] if final else None)
