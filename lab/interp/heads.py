"""The batch API: how often each attention head and FFN block is important, over a set of prompts.

"Information Flow Routes: Automatically Interpreting Language Models at Scale" (Ferrando & Voita, 2024) count
components over many routes and find some important for nearly every prediction, whatever the domain, and others
only in some domains. A head is important in a route when its parts, summed over
source positions, pass tau in some node the route reaches (with `at_prediction`: in the predicting position's own
stream); an FFN block when its edge is in the route.
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
    heads: torch.Tensor  # [L, H] fraction of routes
    ffn: torch.Tensor  # [L] fraction of routes
    sizes: list[int] = field(default_factory=list)  # edges per route
    probabilities: list[float] = field(default_factory=list)  # the model's probability of its prediction

    def top(self, k: int = 10) -> list[tuple[tuple[int, int], float]]:
        """The k heads important most often: ((layer, head), fraction)."""
        flat = self.heads.flatten()
        best = flat.topk(min(k, flat.numel()))
        H = self.heads.shape[1]
        return [((i // H, i % H), round(v, 4)) for i, v in zip(best.indices.tolist(), best.values.tolist())]

    def always(self, at_least: float = 0.9) -> list[tuple[int, int]]:
        """Heads important in at least this fraction of the routes."""
        return [tuple(x) for x in (self.heads >= at_least).nonzero().tolist()]


def head_frequency(lab, prompts, *, tau: float = TAU, chat: bool = False, position: int = -1,
                   at_prediction: bool = False) -> HeadFrequency:
    """Routes to the prediction at `position` of each prompt (text, token ids, or {"prompt", "chat"}), counted."""
    tau = check_tau(tau)
    heads = ffn = None
    sizes, probabilities = [], []
    for prompt in prompts:
        text, is_chat = (prompt["prompt"], prompt.get("chat", chat)) if isinstance(prompt, dict) else (prompt, chat)
        f = flow(lab, text, chat=is_chat)
        route = f.route(position, tau)
        if heads is None:
            heads, ffn = torch.zeros(f.layers, f.heads), torch.zeros(f.layers)
        for layer, head in route.important_heads(at_prediction=at_prediction):
            heads[layer, head] += 1
        for layer in route.ffn_layers(at_prediction=at_prediction):
            ffn[layer] += 1
        sizes.append(route.size)
        probabilities.append(route.probability)
    n = max(len(sizes), 1)
    return HeadFrequency(tau, len(sizes), heads / n if heads is not None else torch.zeros(0, 0),
                         ffn / n if ffn is not None else torch.zeros(0), sizes, probabilities)
