"""The weights of a Llama-family model, laid out for the fast backend, and the forward they define.

Llama, Qwen2, Mistral and SmolLM2 share one decoder: RMSNorm, attention with rotary positions and grouped-query
heads, a SwiGLU MLP. Per layer the query, key and value projections are concatenated into one matrix and the gate
and up projections into another, so a step runs two matrix products where the HF model runs five. Rotary tables
come from the model's own rotary module (every rope type it supports). `step` is the whole forward of k new tokens
over a static KV cache; the backend runs it eagerly or captures it in a CUDA graph.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...kernels import triton_available as kernels_ready
from ...kernels.gemv import fits as gemv_fits
from ...kernels.rms_norm import rms_norm_reference as rms_norm
from ...kernels.rope_cache import rotate_reference as rotate, split_qkv
from ...kernels.silu_mul import silu_mul_reference
from ..layers import decoder_body, final_norm, layer_list
from .fused import fused_step
from .head import head_out

SUPPORTED = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM")


def supports(model: nn.Module) -> str | None:
    """None if the fast backend can run `model`, else why not."""
    name = type(model).__name__
    if name not in SUPPORTED:
        return f"{name} is not a Llama-family model ({', '.join(SUPPORTED)})"
    config = model.config.get_text_config()
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True) and \
            config.sliding_window < getattr(config, "max_position_embeddings", 0):
        return "sliding-window attention is not supported"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r} is not supported"
    return None


@dataclass
class Layer:
    norm: torch.Tensor
    qkv: torch.Tensor
    qkv_bias: torch.Tensor | None
    out: torch.Tensor
    out_bias: torch.Tensor | None
    post_norm: torch.Tensor
    gate_up: torch.Tensor
    down: torch.Tensor


class Weights:
    """A model's weights for the fast backend (shared by every fork and view) and its rotary tables."""

    def __init__(self, model: nn.Module):
        why = supports(model)
        if why:
            raise ValueError(f"the fast backend cannot run this model: {why}")
        config = model.config.get_text_config()
        self.model = model
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.eps = config.rms_norm_eps
        self.max_positions = min(config.max_position_embeddings, 32768)  # positions the fast backend serves
        body = decoder_body(model)
        self.embed = body.embed_tokens.weight
        self.norm = final_norm(model).weight
        head = model.get_output_embeddings()
        self.head = head.weight
        self.vocab = getattr(head, "vocab", None)  # a trimmed head's token ids (lab.vocab_trim), else None
        self.vocab_size = config.vocab_size
        self.layers = [self._layer(layer) for layer in layer_list(model)]
        self.dtype, self.device = self.embed.dtype, self.embed.device
        self._rotary = body.rotary_emb
        self.cos = self.sin = None
        self.fused = self.device.type == "cuda" and kernels_ready()  # `step` through the Triton kernels
        # ... and a decode step's products through the matrix-vector kernel (its rows fit in registers)
        self.gemv = all(gemv_fits(t.shape[1]) for lw in self.layers for t in (lw.qkv, lw.out, lw.gate_up, lw.down))
        # forwards of up to this many new tokens take the matrix-vector path (fused.gemv_rows); the environment's
        # DECODING_LAB_GEMV_ROWS overrides the default (3: a chain of 2 drafts and its root, measured: fused.py), to
        # measure another on a GPU without a code change
        self.gemv_rows = int(os.environ.get("DECODING_LAB_GEMV_ROWS", "3"))
        # greedy steps end in one kernel (the final norm, the head and its argmax: kernels.head_argmax) and decode
        # steps start in their first product (the embedding gather fused into it); DECODING_LAB_FUSED_ENDS=0 turns
        # both off, to measure them side by side
        self.fused_ends = os.environ.get("DECODING_LAB_FUSED_ENDS", "1") != "0"
        self.rotary(min(self.max_positions or 8192, 32768))  # built once: captured graphs read these tables

    @staticmethod
    def _layer(layer: nn.Module) -> Layer:
        a, m = layer.self_attn, layer.mlp
        biases = [p.bias for p in (a.q_proj, a.k_proj, a.v_proj)]
        qkv_bias = torch.cat(biases) if all(b is not None for b in biases) else None
        gate_up = torch.cat([m.gate_proj.weight, m.up_proj.weight])
        if any(getattr(p, "bias", None) is not None for p in (m.gate_proj, m.up_proj, m.down_proj)):
            raise ValueError("the fast backend cannot run this model: MLP biases are not supported")
        return Layer(layer.input_layernorm.weight, torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]),
                     qkv_bias, a.o_proj.weight, a.o_proj.bias, layer.post_attention_layernorm.weight, gate_up,
                     m.down_proj.weight)

    def rotary(self, positions: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin tables [positions, head_dim] from the model's own rotary module."""
        if self.cos is None or self.cos.shape[0] < positions:
            ids = torch.arange(positions, device=self.device)[None]
            with torch.no_grad():
                cos, sin = self._rotary(self.embed[:1, None].expand(1, positions, -1), ids)
            self.cos, self.sin = cos[0].contiguous(), sin[0].contiguous()
        return self.cos, self.sin


def attention_inputs(w: Weights, lw, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """A layer's queries [heads, k, D] and rotated keys and values [kv_heads, k, D] for states x [k, hidden]."""
    qkv = F.linear(rms_norm(x, lw.norm, w.eps), lw.qkv, lw.qkv_bias)
    q, key, value = split_qkv(qkv, w.heads, w.kv_heads, w.head_dim)
    return rotate(q, cos, sin), rotate(key, cos, sin), value


def layer_output(w: Weights, lw, x: torch.Tensor, attended: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual stream after the attention output [k, heads * D] and the MLP; and the MLP's output."""
    x = x + F.linear(attended, lw.out, lw.out_bias)
    mlp = F.linear(silu_mul_reference(F.linear(rms_norm(x, lw.post_norm, w.eps), lw.gate_up)), lw.down)
    return x + mlp, mlp


def one_layer(w: Weights, index: int, x: torch.Tensor, positions: torch.Tensor, keys: torch.Tensor,
              values: torch.Tensor, length: int, visible: torch.Tensor | None = None) -> torch.Tensor:
    """Decoder layer `index` on given states x [k, hidden] at `positions`: each state sees the first `length` cache
    columns (those where `visible` [length] is True) and itself, and the cache is not written (CLaSp's DP)."""
    k = x.shape[0]
    q, key, value = attention_inputs(w, w.layers[index], x, w.cos[positions][None], w.sin[positions][None])
    ks = torch.cat([keys[index][:, :length], key], dim=1)
    vs = torch.cat([values[index][:, :length], value], dim=1)
    prefix = torch.ones(k, length, dtype=torch.bool, device=x.device) if visible is None else \
        visible.to(x.device, torch.bool).reshape(1, length).expand(k, -1)
    mask = torch.cat([prefix, torch.eye(k, dtype=torch.bool, device=x.device)], dim=1)
    attended = F.scaled_dot_product_attention(q[None], ks[None], vs[None], attn_mask=mask[None, None],
                                              enable_gqa=True)[0]
    return layer_output(w, w.layers[index], x, attended.transpose(0, 1).reshape(k, -1))[0]


def step(w: Weights, layers: list[int], ids: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor,
         mask: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, columns: int, taps: tuple = (),
         logits: bool | str = True, visible: torch.Tensor | None = None) -> tuple[torch.Tensor | None, dict]:
    """Forward k new tokens `ids` [k] at `positions` [k], writing their keys and values into cache columns `slots`
    [k] of `keys`/`values` [layer, kv_heads, capacity, head_dim]; new token i attends to the cache columns < `columns`
    where mask[i] [columns] is True. Returns float32 logits [k, V] (`head.head_out`: "rows" for a trimmed head's
    own; "argmax", "last" and "tokens" for argmax tokens) and the taps asked for. `visible` (a device count, [1])
    promises that every row's mask is True on the first that many columns: the attention kernel then reads no mask
    there (`tree_attention`)."""
    if w.fused and not taps:
        return fused_step(w, layers, ids, positions, slots, mask, keys, values, columns, logits, visible), {}
    k = ids.shape[0]
    cos, sin = w.cos[positions][None], w.sin[positions][None]  # [1, k, D]
    x = w.embed[ids]
    found: dict[str, list[torch.Tensor]] = {name: [] for name in taps}
    if "hidden" in found:
        found["hidden"].append(x)
    q_size = w.heads * w.head_dim
    for n, index in enumerate(layers):
        lw = w.layers[index]
        q, key, value = attention_inputs(w, lw, x, cos, sin)
        keys[index].index_copy_(1, slots, key)
        values[index].index_copy_(1, slots, value)
        ks, vs = keys[index][:, :columns], values[index][:, :columns]
        if "attentions" in found:
            group = w.heads // w.kv_heads
            scores = (q @ ks.repeat_interleave(group, 0).transpose(1, 2)) * w.head_dim ** -0.5
            weights = scores.float().masked_fill(~mask, float("-inf")).softmax(-1)
            found["attentions"].append(weights)
            attended = (weights.to(vs.dtype) @ vs.repeat_interleave(group, 0))
        else:
            attended = F.scaled_dot_product_attention(q[None], ks[None], vs[None], attn_mask=mask[None, None],
                                                      enable_gqa=True)[0]
        attended = attended.transpose(0, 1).reshape(k, q_size)
        if "heads" in found:
            found["heads"].append(attended.view(k, w.heads, w.head_dim))
        x, mlp = layer_output(w, lw, x, attended)
        if "mlp" in found:
            found["mlp"].append(mlp)
        if "hidden" in found and n + 1 < len(layers):
            found["hidden"].append(x)
    x = rms_norm(x, w.norm, w.eps)
    if "hidden" in found:
        found["hidden"].append(x)
    return head_out(w, x, logits), {name: tuple(v) for name, v in found.items()}
