"""Speculative sampling of a chain, batched: which drafts are accepted, the recovered token, the bonus token.

"Fast Inference from Transformers via Speculative Decoding" (Leviathan et al., 2023), named as vLLM's rejection
sampler names things. Row b drafted tokens d_0..d_{k-1}, drawn from q_j (or fixed: q a point mass); the target gave
p_0..p_k. Draft j is accepted while u_j q_j(d_j) < p_j(d_j); at the first rejection r the next token is *recovered*
from norm(max(p_r - q_r, 0)), and after k acceptances the *bonus* token is drawn from p_k. Draws use an exponential
race, argmax_v w_v / E_v with E_v ~ Exp(1) given per row, so that the kernel and the reference agree exactly for the
same random numbers (and the race samples w / sum(w) without normalising it).
"""
from __future__ import annotations

import torch

from . import triton_ready

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None


def chain_rejection_reference(drafts: torch.Tensor, draft_probs: torch.Tensor | None, target_probs: torch.Tensor,
                              uniforms: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """drafts [B, k] long; draft_probs [B, k, V] (None: fixed drafts); target_probs [B, k+1, V]; uniforms [B, k];
    noise [B, V] Exp(1). Returns (tokens [B, k+1]: accepted drafts then the recovered or bonus token, -1 after;
    accepted [B]: how many drafts were accepted)."""
    rows, k = drafts.shape
    p_tok = target_probs[:, :k].gather(-1, drafts[..., None])[..., 0]
    q_tok = torch.ones_like(p_tok) if draft_probs is None else draft_probs.gather(-1, drafts[..., None])[..., 0]
    ok = (q_tok > 0) & (uniforms * q_tok < p_tok)
    accepted = torch.where(ok.all(-1), k, (~ok).float().argmax(-1))  # the first rejection, or k
    index = accepted[:, None, None].expand(-1, 1, target_probs.shape[-1])
    p = target_probs.gather(1, index)[:, 0]
    if draft_probs is None:
        q = torch.zeros_like(p).scatter_(-1, drafts.gather(1, accepted.clamp(max=k - 1)[:, None]), 1.0)
    else:
        q = draft_probs.gather(1, index.clamp(max=k - 1))[:, 0]
    residual = torch.where((accepted < k)[:, None], (p - q).clamp_min(0.0), p)
    residual = torch.where(residual.sum(-1, keepdim=True) > 0, residual, p)  # p == q: rejection had probability 0
    last = (residual / noise).argmax(-1)
    tokens = torch.full((rows, k + 1), -1, dtype=torch.long, device=drafts.device)
    keep = torch.arange(k, device=drafts.device)[None] < accepted[:, None]
    tokens[:, :k] = torch.where(keep, drafts, -1)
    tokens.scatter_(1, accepted[:, None], last[:, None])
    return tokens, accepted


if triton is not None:
    @triton.jit
    def _chain(drafts, draft_probs, target_probs, uniforms, noise, tokens, accepted_out, k: tl.constexpr,
               vocab: tl.constexpr, HAS_Q: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        accepted = k
        for j in range(k):  # the first rejection
            token = tl.load(drafts + row * k + j)
            p = tl.load(target_probs + (row * (k + 1) + j) * vocab + token)
            if HAS_Q:
                q = tl.load(draft_probs + (row * k + j) * vocab + token)
            else:
                q = 1.0
            ok = (q > 0) & (tl.load(uniforms + row * k + j) * q < p)
            accepted = tl.where((accepted == k) & (ok == 0), j, accepted)
        rejected = accepted < k
        at = tl.minimum(accepted, k - 1)
        drafted = tl.load(drafts + row * k + at)
        best_value = -1.0
        best_token = 0
        total = 0.0
        for start in range(0, vocab, BLOCK):  # residual mass: zero means p == q, then draw from p
            v = start + tl.arange(0, BLOCK)
            inside = v < vocab
            p = tl.load(target_probs + (row * (k + 1) + accepted) * vocab + v, mask=inside, other=0.0)
            if HAS_Q:
                q = tl.load(draft_probs + (row * k + at) * vocab + v, mask=inside & rejected, other=0.0)
            else:
                q = tl.where((v == drafted) & rejected, 1.0, 0.0)
            total += tl.sum(tl.maximum(p - q, 0.0))
        use_residual = rejected & (total > 0)
        for start in range(0, vocab, BLOCK):
            v = start + tl.arange(0, BLOCK)
            inside = v < vocab
            p = tl.load(target_probs + (row * (k + 1) + accepted) * vocab + v, mask=inside, other=0.0)
            if HAS_Q:
                q = tl.load(draft_probs + (row * k + at) * vocab + v, mask=inside & use_residual, other=0.0)
            else:
                q = tl.where((v == drafted) & use_residual, 1.0, 0.0)
            w = tl.where(use_residual, tl.maximum(p - q, 0.0), p)
            e = tl.load(noise + row * vocab + v, mask=inside, other=1.0)
            ratio = tl.where(inside, w / e, -1.0)
            value = tl.max(ratio, 0)
            token = start + tl.argmax(ratio, 0)
            better = value > best_value
            best_token = tl.where(better, token, best_token)
            best_value = tl.where(better, value, best_value)
        for j in range(k + 1):
            d = tl.load(drafts + row * k + tl.minimum(j, k - 1))
            out = tl.where(j < accepted, d, tl.where(j == accepted, best_token, -1))
            tl.store(tokens + row * (k + 1) + j, out)
        tl.store(accepted_out + row, accepted)


def chain_rejection(drafts, draft_probs, target_probs, uniforms, noise):
    """`chain_rejection_reference`'s contract; the Triton kernel on CUDA (one program per row), else the reference."""
    if not triton_ready(drafts, target_probs) or drafts.shape[1] == 0:
        return chain_rejection_reference(drafts, draft_probs, target_probs, uniforms, noise)
    rows, k = drafts.shape
    vocab = target_probs.shape[-1]
    tokens = torch.empty(rows, k + 1, dtype=torch.long, device=drafts.device)
    accepted = torch.empty(rows, dtype=torch.long, device=drafts.device)
    q = draft_probs.contiguous() if draft_probs is not None else target_probs  # unused when there is no q
    _chain[(rows,)](drafts.contiguous(), q, target_probs.contiguous(), uniforms.contiguous(), noise.contiguous(),
                    tokens, accepted, k, vocab, HAS_Q=draft_probs is not None, BLOCK=1024)
    return tokens, accepted
