"""Reading parts of the residual stream out through the final norm and the LM head, for lenses.

The logit lens reads a whole stream (`Backend.exit_logits`, or `Backend.head` without the final norm). A part of
a stream (one head's output, an FFN block's, one neuron's) has no norm of its own: `direct_logits` applies the
final norm linearised at the final stream the part ends up in (its scale frozen, its bias left out, so the bias
is counted once, by nobody), then the LM head. The parts of a stream then read out to its logits minus the LM head
of the norm's bias: the promoted and suppressed tokens of "Information Flow Routes" (Ferrando & Voita, 2024)
and of the logit lens literature.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import LabError
from .decompose import down_projection
from .layers import final_norm, layer_list, mlp_of


def frozen_norm(norm: nn.Module | None, vectors: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """`vectors` [..., D] through `norm` linearised at `residual` [..., D] (broadcast), without its bias."""
    if norm is None:
        return vectors
    weight = norm.weight.float()
    if isinstance(norm, nn.LayerNorm):
        scale = torch.rsqrt(residual.var(-1, unbiased=False, keepdim=True) + norm.eps)
        return (vectors - vectors.mean(-1, keepdim=True)) * scale * weight
    if type(norm).__name__.endswith("RMSNorm") and not type(norm).__name__.startswith("Gemma"):
        eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6)
        return vectors * torch.rsqrt(residual.pow(2).mean(-1, keepdim=True) + eps) * weight
    raise LabError(f"lens: cannot linearise the final norm {type(norm).__name__} (supported: LayerNorm, RMSNorm)")


@torch.no_grad()
def direct_logits(backend, vectors: torch.Tensor, residual: torch.Tensor,
                  vocab: torch.Tensor | None = None) -> torch.Tensor:
    """Logits [..., V] (or [..., len(vocab)]) that parts `vectors` [..., D] of the stream `residual` add."""
    model = backend.weights
    vectors = vectors.to(backend.device, torch.float32)
    residual = residual.to(backend.device, torch.float32)
    normed = frozen_norm(final_norm(model), vectors, residual)
    weight = model.get_output_embeddings().weight
    if vocab is not None:
        weight = weight[vocab.to(weight.device)]
    return normed @ weight.float().T


def norm_bias_logits(backend) -> torch.Tensor | None:
    """The LM head of the final norm's bias [V] (what no part of a stream owns), or None without a bias."""
    norm = final_norm(backend.weights)
    bias = getattr(norm, "bias", None) if norm is not None else None
    if bias is None:
        return None
    with torch.no_grad():
        return (bias.float() @ backend.weights.get_output_embeddings().weight.float().T).float()


def neuron_directions(backend, layer: int) -> torch.Tensor:
    """[I, D]: what each MLP neuron of `layer` writes into the stream per unit of its activation (a row of the
    down projection, transposed for Linear, as stored for GPT-2's Conv1D). The projection's bias is not a
    neuron's."""
    from transformers.pytorch_utils import Conv1D

    proj = down_projection(mlp_of(layer_list(backend.weights)[layer]))
    weight = proj.weight.detach().float()
    return weight if isinstance(proj, Conv1D) else weight.T
