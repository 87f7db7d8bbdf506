"""Residual updates split into their parts, for information-flow routes (lab/interp reads only these tensors).

After "Information Flow Routes: Automatically Interpreting Language Models at Scale" (Ferrando & Voita, 2024):
each decoder layer l adds two updates to the residual stream of position i,

    middle_i = residual_i + sum_h sum_j A^h_ij u^h_j + b_O        (attention)
    output_i = middle_i + mlp_i                                   (FFN)

where u^h_j is source j's value vector (from the normed stream) sent through head h's slice of the output
projection, and b_O the output projection's bias, counted once (not once per head or source). `decompose`
runs one forward on a fork of an HF backend and returns, per layer, the tensors that make these sums: never
the [T, T, heads, hidden] contributions themselves (lab/interp forms them a chunk of positions at a time). It
checks that the parts sum back to each residual stream and refuses an architecture where they do not.

Llama, Qwen2 (value biases: inside u), Mistral and GPT-2 (Conv1D weights stored [in, out]; c_attn packs q, k, v)
are supported, with grouped-query attention (query head h reads key/value head h // (heads / kv_heads)).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import LabError
from .layers import attention_of, final_norm, layer_list, mlp_of, output_projection

DOWN_PROJECTIONS = ("down_proj", "c_proj", "fc2", "dense_4h_to_h")


@dataclass
class LayerParts:
    """One decoder layer's residual updates over T positions (H heads, hidden size D), float32 on the CPU or
    the backend's device. `neurons` ([T, I], the MLP's hidden activations) only when asked for."""

    residual: torch.Tensor  # [T, D] the stream entering the layer
    attention: torch.Tensor  # [H, T, T] attention weights (destination i, source j)
    head_values: torch.Tensor  # [T, H, D] u^h_j
    attention_bias: torch.Tensor | None  # [D] b_O or None
    middle: torch.Tensor  # [T, D] the stream after the attention update
    mlp: torch.Tensor  # [T, D] the FFN block's output
    neurons: torch.Tensor | None = None

    @property
    def output(self) -> torch.Tensor:
        """[T, D] the stream leaving the layer."""
        return self.middle + self.mlp

    def attention_update(self) -> torch.Tensor:
        """[T, D] the attention block's output rebuilt from its parts (the self-check's left-hand side)."""
        out = torch.einsum("hij,jhd->id", self.attention, self.head_values)
        return out + self.attention_bias if self.attention_bias is not None else out


@dataclass
class Decomposition:
    """The parts of every layer's updates for one token sequence, and the final-normed states the LM head reads
    (no logits: the LM head is the costliest matmul of a short forward; the backend's `head` makes them)."""

    tokens: list[int]
    layers: list[LayerParts]
    normed: torch.Tensor  # [T, D] the last layer's output after the final norm
    error: float  # the largest reconstruction error found by the self-check, relative to the stream's scale

    @property
    def heads(self) -> int:
        return self.layers[0].head_values.shape[1]


def value_vectors(attention: nn.Module, found: list, me: int) -> torch.utils.hooks.RemovableHandle:
    """A hook that appends the attention block's value vectors [T, kv_heads * head_dim] to `found`."""
    if hasattr(attention, "v_proj"):
        return attention.v_proj.register_forward_hook(
            lambda m, a, out: found.append(out[0].detach()) if threading.get_ident() == me else None)
    if hasattr(attention, "c_attn"):  # GPT-2: one Conv1D makes q, k and v, side by side
        def packed(module, args, out):
            if threading.get_ident() == me:
                found.append(out[0, :, 2 * out.shape[-1] // 3:].detach())
        return attention.c_attn.register_forward_hook(packed)
    raise LabError(f"routes: cannot find the value projection of {type(attention).__name__} "
                   "(supported: Llama, Qwen2, Mistral and GPT-2 families)")


def output_weights(attention: nn.Module, heads: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The output projection per head [H, head_dim, D] (x @ W_h for head h's slice) and its bias [D] or None."""
    from transformers.pytorch_utils import Conv1D

    proj = output_projection(attention)
    weight = proj.weight.detach()
    if isinstance(proj, Conv1D):  # stored [in, out]: x @ weight + bias
        per_head = weight.reshape(heads, -1, weight.shape[1])
    elif isinstance(proj, nn.Linear):  # stored [out, in]: x @ weight.T + bias
        per_head = weight.T.reshape(heads, -1, weight.shape[0])
    else:
        raise LabError(f"routes: unsupported output projection {type(proj).__name__}")
    return per_head, (proj.bias.detach() if getattr(proj, "bias", None) is not None else None)


def down_projection(mlp: nn.Module) -> nn.Module:
    for name in DOWN_PROJECTIONS:
        if hasattr(mlp, name):
            return getattr(mlp, name)
    raise LabError(f"routes: cannot find the down projection of {type(mlp).__name__}")


@contextmanager
def captured(model: nn.Module, neurons: bool):
    """Hooks (for this thread's forward only: forks share the modules) collecting each layer's input, output,
    value vectors, attention output and MLP output (and the MLP's hidden activations with `neurons`)."""
    me = threading.get_ident()
    layers = layer_list(model)
    found = {name: [[] for _ in layers] for name in ("input", "output", "values", "attention", "mlp", "neurons")}
    first = lambda out: out[0] if isinstance(out, tuple) else out  # noqa: E731
    handles = []

    def keep(name, n, pick):
        def hook(module, args, *rest):
            if threading.get_ident() == me:
                found[name][n].append(pick(module, args, *rest).detach())
        return hook

    try:
        for n, layer in enumerate(layers):
            attention, mlp = attention_of(layer), mlp_of(layer)
            handles.append(layer.register_forward_pre_hook(
                keep("input", n, lambda m, a, kw: a[0] if a else kw["hidden_states"]), with_kwargs=True))
            handles.append(layer.register_forward_hook(keep("output", n, lambda m, a, out: first(out))))
            handles.append(value_vectors(attention, found["values"][n], me))
            handles.append(attention.register_forward_hook(keep("attention", n, lambda m, a, out: first(out))))
            handles.append(mlp.register_forward_hook(keep("mlp", n, lambda m, a, out: first(out))))
            if neurons:
                handles.append(down_projection(mlp).register_forward_pre_hook(keep("neurons", n, lambda m, a: a[0])))
        yield found
    finally:
        for handle in handles:
            handle.remove()


def decompose(backend, ids: list[int], *, neurons: bool = False, tolerance: float | None = None) -> Decomposition:
    """Run `ids` through an HF backend on `backend`'s weights (its own cache) and split every
    layer's updates into parts (in float32, whatever the model's dtype). Raises a LabError when the parts do not
    sum back to the streams within `tolerance` (relative to the stream's size; 1e-3 for a float32 model, 3e-2
    for 16-bit ones, whose own sums round coarsely): then the architecture is one these parts do not describe."""
    if not ids:
        raise LabError("routes: give at least one token")
    from .hf import HFBackend  # the parts come from the reference backend's hooks, whatever backend asks

    runner = backend.fork() if isinstance(backend, HFBackend) else HFBackend(backend.weights)
    model = runner.model
    config = model.config.get_text_config()
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    with captured(model, neurons) as found, torch.no_grad():
        out = runner.forward(list(ids), taps=("attentions",), logits=False)
    layers, error = [], 0.0
    own = lambda t: t.float().clone()  # noqa: E731  (a plain tensor, not the forward's inference tensor)
    for n, layer in enumerate(layer_list(model)):
        weights, bias = output_weights(attention_of(layer), heads)
        values = own(found["values"][n][0])
        values = values.reshape(values.shape[0], kv_heads, -1).repeat_interleave(heads // kv_heads, dim=1)
        parts = LayerParts(
            residual=own(found["input"][n][0][0]), attention=own(out.taps["attentions"][n]),
            head_values=torch.einsum("jhe,hed->jhd", values, weights.float()),
            attention_bias=None if bias is None else bias.float(),
            middle=own(found["input"][n][0][0] + found["attention"][n][0][0]), mlp=own(found["mlp"][n][0][0]),
            neurons=own(found["neurons"][n][0][0]) if neurons else None)
        scale = torch.stack([parts.residual.abs().amax(), parts.middle.abs().amax(), parts.output.abs().amax()]).amax()
        scale = scale.clamp_min(1.0)  # the largest of the streams compared
        error = max(error, float((parts.residual + parts.attention_update() - parts.middle).abs().amax() / scale),
                    float((parts.output - found["output"][n][0][0].float()).abs().amax() / scale))
        layers.append(parts)
    norm = final_norm(model)
    normed = own(out.hidden[-1])
    if norm is not None:  # the final norm of the last output is what the LM head reads
        with torch.no_grad():
            again = norm(layers[-1].output.to(runner.dtype)).float()
        error = max(error, float((again - normed).abs().amax() / normed.abs().amax().clamp_min(1.0)))
    if tolerance is None:
        tolerance = 1e-3 if runner.dtype == torch.float32 else 3e-2
    if error > tolerance:
        raise LabError(f"routes: the parts of {type(model).__name__}'s updates do not sum back to its residual "
                       f"stream (relative error {error:.2e} in {str(runner.dtype).removeprefix('torch.')}): "
                       "this architecture is not supported")
    return Decomposition(list(ids), layers, normed, error)
