"""A Flow: one prompt's residual updates split into parts, and the importances of those parts, computed on demand.

"Information Flow Routes: Automatically Interpreting Language Models at Scale" (Ferrando & Voita, 2024). The
backend splits the updates (lab/backends/decompose.py); a Flow holds those tensors and the model's predictions
and computes importances (proximity.py) only for the positions a route reaches, keeping each once computed, so
moving a threshold re-reads tables instead of recomputing them. It holds no model: views get Flows.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..backends.decompose import Decomposition, decompose
from ..errors import LabError
from .proximity import AttentionImportance, attention_importance, ffn_importance
from .routes import extract


@dataclass
class Flow:
    """Parts and importances of one token sequence. Positions are 0 .. T-1; stream l enters layer l (L: output)."""

    ids: list[int]
    pieces: list[str]  # each token's text
    parts: Decomposition
    predicted: list[int]  # the model's next token after each position (argmax)
    probability: list[float]  # its probability
    _heads: dict = field(default_factory=dict, repr=False)  # layer -> [T, T, H] importances (rows filled on demand)
    _rest: dict = field(default_factory=dict, repr=False)  # layer -> [T, 2] residual and bias importances
    _done: dict = field(default_factory=dict, repr=False)  # layer -> [T] bool: rows computed
    _ffn: dict = field(default_factory=dict, repr=False)  # layer -> (ffn [T], residual [T])

    @property
    def layers(self) -> int:
        return len(self.parts.layers)

    @property
    def heads(self) -> int:
        return self.parts.heads

    def __len__(self) -> int:
        return len(self.ids)

    def position(self, position: int) -> int:
        """A position in 0 .. T-1 (negative counts from the end), or a LabError."""
        if isinstance(position, bool) or not isinstance(position, int) or not -len(self) <= position < len(self):
            raise LabError(f"position {position!r} is outside the prompt's {len(self)} tokens "
                           f"(use 0 .. {len(self) - 1}, or -1 for the last)")
        return position % len(self)

    def attention(self, layer: int, positions: list[int]) -> AttentionImportance:
        """Importances of layer `layer`'s attention parts at `positions` (computed once per position)."""
        T, H = len(self), self.heads
        if layer not in self._heads:  # tables on the CPU: routes read them row by row
            self._heads[layer], self._rest[layer] = torch.zeros(T, T, H), torch.zeros(T, 2)
            self._done[layer] = torch.zeros(T, dtype=torch.bool)
        missing = [p for p in positions if not self._done[layer][p]]
        if missing:
            fresh = attention_importance(self.parts.layers[layer], missing)
            self._heads[layer][missing] = fresh.heads.cpu()
            self._rest[layer][missing] = torch.stack([fresh.residual, fresh.bias], 1).cpu()
            self._done[layer][missing] = True
        at = torch.tensor(positions, dtype=torch.long)
        rest = self._rest[layer][at]
        return AttentionImportance(list(positions), self._heads[layer][at], rest[:, 0], rest[:, 1])

    def ffn(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Importances [T] of layer `layer`'s FFN block and of the stream it reads (all positions: cheap)."""
        if layer not in self._ffn:
            self._ffn[layer] = tuple(t.cpu() for t in ffn_importance(self.parts.layers[layer]))
        return self._ffn[layer]

    def complete(self) -> "Flow":
        """Compute every importance (the whole graph, as a tool drawing every route at every threshold needs)."""
        for layer in range(self.layers):
            self.attention(layer, list(range(len(self))))
            self.ffn(layer)
        return self

    def route(self, position: int = -1, tau: float = 0.04, *, renormalize: bool = False, layer: int | None = None):
        """The route to the prediction at `position` (from the stream leaving layer `layer`, default the last):
        see routes.extract."""
        return extract(self, self.position(position), tau, renormalize=renormalize, top=layer)


def token_ids(lab, prompt, chat: bool = False, special: bool = False) -> list[int]:
    """A prompt's token ids through the Lab (text, or a list of ids), checked against the model's context."""
    ids = lab.encode(prompt, chat, special)
    context = getattr(lab, "context_length", None)
    if context and len(ids) > context:
        raise LabError(f"the prompt has {len(ids)} tokens, more than the model's context of {context}")
    return ids


@torch.no_grad()
def flow(lab, prompt, *, chat: bool = False, special: bool = False, neurons: bool = False) -> Flow:
    """The Flow of `prompt` (text or token ids) through `lab`'s target model: one forward on a fork."""
    ids = token_ids(lab, prompt, chat, special)
    return flow_of(lab.target, ids, [lab.token_text(t) for t in ids], neurons=neurons)


@torch.no_grad()
def flow_of(backend, ids: list[int], pieces: list[str] | None = None, *, neurons: bool = False) -> Flow:
    """The Flow of token ids through a backend (tiny models without a tokenizer)."""
    parts = decompose(backend, ids, neurons=neurons)
    predicted, probability = [], []
    for chunk in parts.normed.split(64):  # the LM head a few rows at a time: [64, V] at most
        probs = backend.head(chunk).softmax(-1)
        best = probs.max(-1)
        predicted += best.indices.tolist()
        probability += best.values.tolist()
    return Flow(list(ids), pieces or [str(t) for t in ids], parts, predicted, probability)
