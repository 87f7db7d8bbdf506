"""Taps: what a forward can report from inside the model, for information-flow routes and self-speculation.

- `hidden`: the residual stream after each layer (transformers' `output_hidden_states`);
- `attentions`: attention weights per head (eager attention is switched on for that forward only);
- `heads`: each head's attention output before the output projection (a hook on its input);
- `mlp`: each MLP block's output (a hook on the block).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from .base import TAPS
from .layers import attention_of, layer_list, mlp_of, output_projection


def check(taps) -> tuple[str, ...]:
    taps = tuple(taps)
    unknown = [t for t in taps if t not in TAPS]
    if unknown:
        raise ValueError(f"unknown taps {unknown}; a forward can tap {', '.join(TAPS)}")
    return taps


@contextmanager
def eager_attention(model: nn.Module, on: bool):
    """Eager attention for one forward (the only implementation that returns attention weights)."""
    config = model.config
    before = config._attn_implementation
    if on:
        config._attn_implementation = "eager"
    try:
        yield
    finally:
        config._attn_implementation = before


@contextmanager
def hooked(model: nn.Module, taps: tuple[str, ...]):
    """Hooks that collect per-layer per-head outputs and MLP outputs into the yielded dict."""
    found: dict[str, list[torch.Tensor]] = {name: [] for name in ("heads", "mlp") if name in taps}
    if not found:
        yield found
        return
    handles = []
    layers = layer_list(model)
    try:
        for layer in layers:
            if "heads" in found:
                attention = attention_of(layer)
                heads = getattr(attention, "num_heads", None) or getattr(attention.config, "num_attention_heads")

                def pre(module, args, kwargs, heads=heads):
                    x = args[0] if args else kwargs["input"]
                    found["heads"].append(x.reshape(*x.shape[:-1], heads, x.shape[-1] // heads).detach())
                handles.append(output_projection(attention).register_forward_pre_hook(pre, with_kwargs=True))
            if "mlp" in found:
                handles.append(mlp_of(layer).register_forward_hook(
                    lambda module, args, out: found["mlp"].append((out[0] if isinstance(out, tuple) else out).detach())))
        yield found
    finally:
        for handle in handles:
            handle.remove()
