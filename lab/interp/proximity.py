"""ALTI-style proximity and importance of the parts of a residual update, a chunk of positions at a time.

"Information Flow Routes: Automatically Interpreting Language Models at Scale" (Ferrando & Voita, 2024), after
ALTI (Ferrando et al., 2022): a part z of a sum y matters as much as it moves y away from nothing,

    proximity(z, y) = max(||y||_1 - ||y - z||_1, 0),     importance(z, y) = proximity(z, y) / sum_k proximity(z_k, y),

the sum running over every part of the update, the residual stream itself included. An attention update has one
part per (source position, head), plus the output projection's bias (counted once); the parts z = A^h_ij u^h_j
are formed here for a few destination positions at a time, so memory stays near `budget` floats however long
the prompt is.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..backends.decompose import LayerParts

BUDGET = 1 << 23  # floats of [positions, sources, heads, hidden] formed at once (32 MB in float32)


def proximity(parts: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
    """max(||whole||_1 - ||whole - part||_1, 0) for parts [..., D] against a whole [..., D] (broadcast)."""
    gap = torch.linalg.vector_norm(whole - parts, ord=1, dim=-1)
    return (torch.linalg.vector_norm(whole, ord=1, dim=-1) - gap).clamp_min(0)


@dataclass
class AttentionImportance:
    """Importances of the parts of the attention update at some destination positions (each row sums to 1)."""

    positions: list[int]
    heads: torch.Tensor  # [n, T, H]: source j through head h (0 for j after the position)
    residual: torch.Tensor  # [n]
    bias: torch.Tensor  # [n] the output projection's bias (0 without one)


def attention_importance(parts: LayerParts, positions: list[int], budget: int = BUDGET) -> AttentionImportance:
    """Importances at `positions` of layer `parts`' attention update, chunked over the positions."""
    u, weights, middle = parts.head_values, parts.attention, parts.middle
    T, H, D = u.shape
    positions = [int(p) for p in positions]
    device = u.device
    heads = torch.zeros(len(positions), T, H, device=device)
    order = sorted(range(len(positions)), key=lambda n: -positions[n])  # the longest rows first
    start = 0
    while start < len(order):
        width = positions[order[start]] + 1  # sources 0 .. the chunk's last position
        rows = order[start:start + max(1, budget // (width * H * D))]
        at = torch.tensor([positions[n] for n in rows], device=device)
        y = middle[at]  # [c, D]
        a = weights[:, at, :width].permute(1, 2, 0)  # [c, width, H]
        z = torch.addcmul(y[:, None, None, :], a[..., None], u[None, :width], value=-1)  # y - A u, [c, width, H, D]
        gap = torch.linalg.vector_norm(z, ord=1, dim=-1)
        del z
        close = (torch.linalg.vector_norm(y, ord=1, dim=-1)[:, None, None] - gap).clamp_min(0)
        close = close.masked_fill(torch.arange(width, device=device)[None, :, None] > at[:, None, None], 0.0)  # causal: exactly 0
        heads[torch.tensor(rows, device=device), :width] = close.to(heads.dtype)
        start += len(rows)
    at = torch.tensor(positions, dtype=torch.long, device=device)
    residual = proximity(parts.residual[at], middle[at])
    bias = proximity(parts.attention_bias, middle[at]) if parts.attention_bias is not None else \
        torch.zeros(len(at), device=device)
    total = (heads.sum((1, 2)) + residual + bias).clamp_min(torch.finfo(torch.float32).tiny)
    return AttentionImportance(positions, heads / total[:, None, None], residual / total, bias / total)


def ffn_importance(parts: LayerParts) -> tuple[torch.Tensor, torch.Tensor]:
    """Importances [T] of the FFN block and of the stream it reads, in the stream leaving the layer."""
    whole = parts.output
    ffn, residual = proximity(parts.mlp, whole), proximity(parts.middle, whole)
    total = (ffn + residual).clamp_min(torch.finfo(torch.float32).tiny)
    return ffn / total, residual / total
