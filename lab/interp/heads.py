"""The batch API: how often each attention head and FFN block is important, over a set of prompts.

"Information Flow Routes: Automatically Interpreting Language Models at Scale" (Ferrando & Voita, 2024) count
components over many routes and find some important for nearly every prediction, whatever the domain, and others
only in some domains. A head is important in a route when its parts, summed over source positions, pass tau in
some node the route reaches; an FFN block when its edge is in the route. Both are also counted in the predicting
position's own stream only (`*_at_prediction`): routes spread over many positions in the lowest layers, so
counted anywhere the early heads look important everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .flow import flow
from .routes import TAU, check_tau


@dataclass
class HeadFrequency:
    """Over `prompts` routes (each to the prediction at `position`): how often each component was important."""

    tau: float
    prompts: int
    heads: torch.Tensor  # [L, H] fraction of routes, anywhere on the route
    ffn: torch.Tensor  # [L]
    heads_at_prediction: torch.Tensor  # [L, H] fraction of routes, in the predicting position's stream
    ffn_at_prediction: torch.Tensor  # [L]
    sizes: list[int] = field(default_factory=list)  # edges per route
    probabilities: list[float] = field(default_factory=list)  # the model's probability of its prediction

    def top(self, k: int = 10, at_prediction: bool = False) -> list[tuple[tuple[int, int], float]]:
        """The k heads important most often: ((layer, head), fraction)."""
        table = self.heads_at_prediction if at_prediction else self.heads
        best = table.flatten().topk(min(k, table.numel()))
        H = table.shape[1]
        return [((i // H, i % H), round(v, 4)) for i, v in zip(best.indices.tolist(), best.values.tolist())]

    def always(self, at_least: float = 0.9, at_prediction: bool = False) -> list[tuple[int, int]]:
        """Heads important in at least this fraction of the routes."""
        table = self.heads_at_prediction if at_prediction else self.heads
        return [tuple(x) for x in (table >= at_least).nonzero().tolist()]


def head_frequency(lab, prompts, *, tau: float = TAU, chat: bool = False, position: int = -1) -> HeadFrequency:
    """Routes to the prediction at `position` of each prompt (text, token ids, or {"prompt", "chat"}), counted."""
    tau = check_tau(tau)
    counts: dict[str, torch.Tensor] = {}
    sizes, probabilities = [], []
    for prompt in prompts:
        text, is_chat = (prompt["prompt"], prompt.get("chat", chat)) if isinstance(prompt, dict) else (prompt, chat)
        f = flow(lab, text, chat=is_chat)
        route = f.route(position, tau)
        if not counts:
            counts = {"heads": torch.zeros(f.layers, f.heads), "ffn": torch.zeros(f.layers),
                      "heads_at_prediction": torch.zeros(f.layers, f.heads), "ffn_at_prediction": torch.zeros(f.layers)}
        for suffix, own in (("", False), ("_at_prediction", True)):
            for layer, head in route.important_heads(at_prediction=own):
                counts["heads" + suffix][layer, head] += 1
            for layer in route.ffn_layers(at_prediction=own):
                counts["ffn" + suffix][layer] += 1
        sizes.append(route.size)
        probabilities.append(route.probability)
    n = max(len(sizes), 1)
    if not counts:
        counts = {name: torch.zeros(0) for name in ("heads", "ffn", "heads_at_prediction", "ffn_at_prediction")}
    return HeadFrequency(tau, len(sizes), **{name: table / n for name, table in counts.items()}, sizes=sizes,
                         probabilities=probabilities)
