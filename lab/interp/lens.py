"""Lenses: what the residual stream, or one part of it, says about the next token.

- the logit lens (nostalgebraist, 2020): each layer's stream through the LM head, with the final norm or without;
- the rank of a token across layers (when does the model settle on it?);
- the tokens a head, a block (attention or FFN) or an MLP neuron promotes and suppresses at a position: its
  direct effect on the logits, its part of the final stream read out through the final norm frozen at that
  stream (lab/backends/readout.py), as the promoted/suppressed views of "Information Flow Routes" (Ferrando &
  Voita, 2024) do. The effects of all parts of a stream add up to its logits (less the norm bias's).

Stages are the streams x^0 (embeddings) .. x^L (the output the LM head reads).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..backends.readout import direct_logits, neuron_directions
from ..errors import LabError


@dataclass
class Lens:
    """The logit lens at some positions: per stage (0 .. L) and position, the top token and its probability."""

    pieces: list[str]  # every token of the prompt
    positions: list[int]
    final_norm: bool
    top: list[list[int]]  # [stages][n]
    top_pieces: list[list[str]]
    probability: list[list[float]]
    ranks: dict[int, list[list[int]]]  # tracked token -> [stages][n] its rank (0: the top token)

    @property
    def stages(self) -> int:
        return len(self.top)


@dataclass
class Effect:
    """What one part of a stream does to the logits: the tokens it raises most and lowers most."""

    label: str
    promoted: list[tuple[str, float]]
    suppressed: list[tuple[str, float]]


def stream(flow, stage: int) -> torch.Tensor:
    """[T, D] the residual stream entering layer `stage` (stage L: the last layer's output)."""
    if not 0 <= stage <= flow.layers:
        raise LabError(f"stage {stage} is outside 0 .. {flow.layers}")
    return flow.parts.layers[stage].residual if stage < flow.layers else flow.parts.layers[-1].output


def stage_logits(lab, flow, stage: int, positions: list[int], final_norm: bool = True) -> torch.Tensor:
    x = stream(flow, stage)[positions].to(lab.target.device)
    return lab.target.exit_logits(x) if final_norm else lab.target.head(x)


@torch.no_grad()
def logit_lens(lab, flow, positions: list[int] | None = None, *, final_norm: bool = True,
               track: tuple[int, ...] = ()) -> Lens:
    """The logit lens at `positions` (default: the last 12), tracking the ranks of the token ids in `track`."""
    positions = [flow.position(p) for p in (positions if positions is not None else range(-min(12, len(flow)), 0))]
    top, pieces, probability, ranks = [], [], [], {int(t): [] for t in track}
    for stage in range(flow.layers + 1):
        logits = stage_logits(lab, flow, stage, positions, final_norm).float()
        best = logits.softmax(-1).max(-1)
        top.append(best.indices.tolist())
        pieces.append([lab.token_text(t) for t in best.indices.tolist()])
        probability.append([round(p, 5) for p in best.values.tolist()])
        for token in ranks:
            ranks[token].append((logits > logits[:, token:token + 1]).sum(-1).tolist())
    return Lens(list(flow.pieces), positions, final_norm, top, pieces, probability, ranks)


@torch.no_grad()
def token_rank(lab, flow, token: int, position: int = -1, *, final_norm: bool = True) -> list[int]:
    """The rank (0: the top token) of `token` at every stage 0 .. L of the prediction at `position`."""
    p = flow.position(position)
    x = torch.stack([stream(flow, s)[p] for s in range(flow.layers + 1)]).to(lab.target.device)
    logits = (lab.target.exit_logits(x) if final_norm else lab.target.head(x)).float()
    return (logits > logits[:, int(token):int(token) + 1]).sum(-1).tolist()


@torch.no_grad()
def effect(lab, vector: torch.Tensor, residual: torch.Tensor, label: str = "", k: int = 8) -> Effect:
    """The k tokens a part `vector` [D] of the final stream `residual` [D] promotes and suppresses most: its direct
    effect on the logits (the final norm frozen at `residual`), centred over the vocabulary (a shift of every
    logit changes no probability)."""
    logits = direct_logits(lab.target, vector, residual).float()
    logits = logits - logits.mean()
    up, down = logits.topk(k), (-logits).topk(k)
    return Effect(label, [(lab.token_text(t), round(v, 3)) for t, v in zip(up.indices.tolist(), up.values.tolist())],
                  [(lab.token_text(t), round(-v, 3)) for t, v in zip(down.indices.tolist(), down.values.tolist())])


def head_output(flow, layer: int, head: int, position: int) -> torch.Tensor:
    """[D] what head `head` of layer `layer` adds to the stream at `position` (all sources)."""
    parts = flow.parts.layers[layer]
    p = flow.position(position)
    if not 0 <= head < flow.heads:
        raise LabError(f"head {head} is outside 0 .. {flow.heads - 1}")
    return parts.attention[head, p, :p + 1] @ parts.head_values[:p + 1, head]


def head_effect(lab, flow, layer: int, head: int, position: int = -1, k: int = 8) -> Effect:
    p = flow.position(position)
    return effect(lab, head_output(flow, layer, head, p), stream(flow, flow.layers)[p], f"L{layer}H{head}", k)


def block_effect(lab, flow, layer: int, block: str, position: int = -1, k: int = 8) -> Effect:
    """What the `attention` or `ffn` block of `layer` promotes and suppresses at `position`."""
    parts, p = flow.parts.layers[layer], flow.position(position)
    final = stream(flow, flow.layers)[p]
    if block == "attention":
        return effect(lab, parts.middle[p] - parts.residual[p], final, f"attention L{layer}", k)
    if block == "ffn":
        return effect(lab, parts.mlp[p], final, f"FFN L{layer}", k)
    raise LabError(f"block is 'attention' or 'ffn', got {block!r}")


def neuron_effect(lab, flow, layer: int, neuron: int, position: int = -1, k: int = 8) -> Effect:
    """What MLP neuron `neuron` of `layer` promotes and suppresses at `position` (its activation times its output
    direction); needs a Flow built with neurons=True."""
    parts, p = flow.parts.layers[layer], flow.position(position)
    if parts.neurons is None:
        raise LabError("neuron effects need the MLP activations: build the flow with neurons=True")
    directions = neuron_directions(lab.target, layer)
    if not 0 <= neuron < directions.shape[0]:
        raise LabError(f"neuron {neuron} is outside 0 .. {directions.shape[0] - 1}")
    vector = parts.neurons[p, neuron] * directions[neuron].to(parts.neurons.device)
    return effect(lab, vector, stream(flow, flow.layers)[p], f"L{layer}N{neuron}", k)
