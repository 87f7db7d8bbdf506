"""The fast backend's forward through fused Triton kernels: about ten kernels a layer instead of forty.

Per layer: the fused query-key-value product, rotary embedding with the KV-cache write (`rope_and_cache`), tree /
split-K attention over the static cache (`tree_attention`), the output product, the residual add with the next
RMSNorm (`add_rms_norm`), the gate-and-up product, `silu_mul`, the down product; the MLP's residual add is fused
into the next layer's norm. For one new token (a decode step) `gemv_rows` goes further: each layer product is a
`gemv` kernel with the norm or the activation before it fused in, seven kernels a layer; so it does for up to
`w.gemv_rows` new tokens (3 by default: on the H200 a verification of 8 tokens was slower this way than through
cuBLAS and the separate norm and activation kernels, 1,331 against 906 us, while with forwards of up to 3 tokens on
this path sps with chains of 2 ran at 1.01x greedy against 0.92x: results/spec-gpu-2026-12-01-rounds-*). At batch one a small
model's step is bound by the number of kernels launched, not by bytes (issue 8's profile: 1,213 kernels and 2.6 ms
a step for SmolLM2-135M), so fewer kernels is the speed-up.
The same arithmetic as `weights.step` (the reference, which the CPU runs), rounded the same way except inside
attention.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...kernels import gemv
from ...kernels.head_argmax import head_argmax
from ...kernels.rms_norm import add_rms_norm
from ...kernels.rope_cache import rope_and_cache
from ...kernels.silu_mul import silu_mul
from ...kernels.tree_attention import tree_attention
from .head import head_out


def fused_step(w, layers: list[int], ids: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor,
               mask: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, columns: int,
               logits: bool | str = True, visible: torch.Tensor | None = None) -> torch.Tensor | None:
    """`weights.step` without taps: float32 logits or argmaxes (`head.head_out`), the cache written at `slots`."""
    if ids.shape[0] <= w.gemv_rows and w.gemv:
        return gemv_rows(w, layers, ids, positions, slots, mask, keys, values, columns, logits, visible)
    x = w.embed[ids]
    _, normed = add_rms_norm(x, None, w.layers[layers[0]].norm, w.eps)
    for n, index in enumerate(layers):
        lw = w.layers[index]
        qkv = F.linear(normed, lw.qkv, lw.qkv_bias)
        q = rope_and_cache(qkv, w.cos, w.sin, positions, slots, keys[index], values[index], w.heads, w.kv_heads)
        attended = tree_attention(q, keys[index][:, :columns], values[index][:, :columns], mask, visible=visible)
        x, normed = add_rms_norm(F.linear(attended, lw.out, lw.out_bias), x, lw.post_norm, w.eps)
        mlp = F.linear(silu_mul(F.linear(normed, lw.gate_up)), lw.down)
        if n + 1 < len(layers):
            x, normed = add_rms_norm(mlp, x, w.layers[layers[n + 1]].norm, w.eps)
    return final(w, mlp, x, logits)


def gemv_rows(w, layers, ids, positions, slots, mask, keys, values, columns, logits=True, visible=None):
    """`fused_step` for a few new tokens (decoding: one): every layer product is a `gemv` with the elementwise step
    before it fused in (residual add and RMSNorm before the QKV and gate-up products, silu * up before the down
    product): seven kernels a layer."""
    x, mlp = (None if w.fused_ends else w.embed[ids]), None
    for index in layers:
        lw = w.layers[index]
        if x is None:  # the first product gathers the token embeddings itself and returns them
            qkv, x = gemv.gemv(w.embed, lw.qkv, lw.qkv_bias, "norm", None, lw.norm, w.eps, ids=ids)
        else:
            qkv, total = gemv.gemv(x, lw.qkv, lw.qkv_bias, "norm", mlp, lw.norm, w.eps)
            x = x if total is None else total
        q = rope_and_cache(qkv, w.cos, w.sin, positions, slots, keys[index], values[index], w.heads, w.kv_heads)
        attended = tree_attention(q, keys[index][:, :columns], values[index][:, :columns], mask, visible=visible)
        out, _ = gemv.gemv(attended, lw.out, lw.out_bias)
        gate_up, x = gemv.gemv(x, lw.gate_up, None, "norm", out, lw.post_norm, w.eps)
        mlp, _ = gemv.gemv(gate_up, lw.down, None, "silu")
    return final(w, mlp, x, logits)


def final(w, mlp: torch.Tensor, x: torch.Tensor, logits: bool | str):
    """The last layer's residual add, the final norm and the head (`head.head_out`). For one row's argmax
    (`logits="argmax"`, "last", "tokens") with `w.fused_ends`: one kernel (`head_argmax`) instead of the norm, the
    product, a cast and the argmax. Several rows (a verification) take the separate kernels: the fused kernel reads
    the head once a row, and the default model's head (56 MB) does not stay in the L2 from one row to the next; so do
    rows too long for it (8B shapes)."""
    if logits == "last":
        mlp, x, logits = mlp[-1:], x[-1:], "argmax"
    if logits in ("argmax", "tokens") and w.fused_ends and mlp.shape[0] == 1 and gemv.fits(w.head.shape[1]):
        return head_argmax(mlp, x, w.norm, w.eps, w.head, w.vocab)
    _, normed = add_rms_norm(mlp, x, w.norm, w.eps)
    return head_out(w, normed, logits)
