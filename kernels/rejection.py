"""Speculative sampling of a chain, batched: which drafts are accepted, the recovered token, the bonus token.

"Fast Inference from Transformers via Speculative Decoding" (Leviathan et al., 2023), named as vLLM's rejection
sampler names things. Row b drafted tokens d_0..d_{k-1}, drawn from q_j (or fixed: q a point mass); the target gave
p_0..p_k. Draft j is accepted while u_j q_j(d_j) < p_j(d_j); at the first rejection r the next token is *recovered*
from norm(max(p_r - q_r, 0)), and after k acceptances the *bonus* token is drawn from p_k. Draws use an exponential
race, argmax_v w_v / E_v with E_v ~ Exp(1) given per row, so that the kernel and the reference agree exactly for the
same random numbers (and the race samples w / sum(w) without normalising it).

The kernel splits each row's vocabulary over programs of up to 4096 entries (`vocab_blocks`: 768 programs for 64
rows at V = 49152). Each finds the row's first rejection from the k drafted entries (a gather of k), then reads its
block of p_r, q_r (rejected rows only) and the noise once: the race's best w / E (division rounded as torch's) and
its first argmax, and whether max(p - q, 0) is positive anywhere in the block (the residual's sum is positive if and
only if an entry is: no sum, so no order to match). The last program of a row (an acq_rel counter) takes the first
block holding the best and sets the counter back to 0 (`kernels.counters`: no fill a call); if the row was rejected
and its residual is zero everywhere (p <= q: rejection had probability 0), it runs the race on p itself, one pass
over the row. Bytes: p, q and the noise once, 3 V a row.
"""
from __future__ import annotations

import torch

from . import counters, triton_ready, vocab_blocks

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
    def _chain(drafts, draft_probs, target_probs, uniforms, noise, tokens, accepted_out, partial, partial_token,
               finished, blocks, k: tl.constexpr, vocab: tl.constexpr, HAS_Q: tl.constexpr, KS: tl.constexpr,
               BLOCKS: tl.constexpr, BLOCK: tl.constexpr):
        row, part = tl.program_id(0).to(tl.int64), tl.program_id(1)  # (row (k + 1) + j) V may pass 2^31
        v = part * BLOCK + tl.arange(0, BLOCK)
        inside = v < vocab
        e = tl.load(noise + row * vocab + v, mask=inside, other=1.0)  # in flight during the acceptance test
        j = tl.arange(0, KS)
        drafted = j < k
        d = tl.load(drafts + row * k + j, mask=drafted, other=0)
        p_tok = tl.load(target_probs + (row * (k + 1) + j) * vocab + d, mask=drafted, other=0.0)
        if HAS_Q:
            q_tok = tl.load(draft_probs + (row * k + j) * vocab + d, mask=drafted, other=0.0)
        else:
            q_tok = tl.full((KS,), 1.0, tl.float32)
        ok = (q_tok > 0) & (tl.load(uniforms + row * k + j, mask=drafted, other=0.0) * q_tok < p_tok)
        accepted = tl.min(tl.where(drafted & (ok == 0), j, k), 0)  # the first rejection, or k
        rejected = accepted < k
        at = tl.minimum(accepted, k - 1)
        p = tl.load(target_probs + (row * (k + 1) + accepted) * vocab + v, mask=inside, other=0.0)
        if HAS_Q:
            q = tl.load(draft_probs + (row * k + at) * vocab + v, mask=inside & rejected, other=0.0)
        else:
            q = tl.where((v == tl.sum(tl.where(j == at, d, 0), 0)) & rejected, 1.0, 0.0)
        residual = tl.maximum(p - q, 0.0)
        ratio = tl.where(inside, tl.div_rn(tl.where(rejected, residual, p), e), -1.0)
        n = tl.num_programs(0) * blocks  # partial: [best ratio, max residual] float32, then the argmax as int32
        slot = row * blocks + part
        tl.store(partial + slot, tl.max(ratio, 0))
        tl.store(partial + n + slot, tl.max(residual, 0))
        tl.store(partial_token + 2 * n + slot, part * BLOCK + tl.argmax(ratio, 0))
        tl.debug_barrier()  # every thread's stores before the release
        if tl.atomic_add(finished + row, 1, sem="acq_rel") == blocks - 1:  # the row's last program
            tl.store(finished + row, 0)  # no other program touches it again: zero for the next launch on this stream
            b = row * blocks + tl.arange(0, BLOCKS)
            ours = b < (row + 1) * blocks
            best = tl.load(partial + b, mask=ours, other=-float("inf"), volatile=True)
            token = tl.load(partial_token + 2 * n + row * blocks + tl.argmax(best, 0), volatile=True)
            mass = tl.max(tl.load(partial + n + b, mask=ours, other=0.0, volatile=True), 0)
            if rejected & (mass == 0):  # p <= q: rejection had probability 0, draw from p
                best_value = -1.0
                for start in range(0, vocab, BLOCK):
                    w = start + tl.arange(0, BLOCK)
                    there = w < vocab
                    pw = tl.load(target_probs + (row * (k + 1) + accepted) * vocab + w, mask=there, other=0.0)
                    ew = tl.load(noise + row * vocab + w, mask=there, other=1.0)
                    race = tl.where(there, tl.div_rn(pw, ew), -1.0)
                    value = tl.max(race, 0)
                    better = value > best_value
                    token = tl.where(better, start + tl.argmax(race, 0), token)
                    best_value = tl.where(better, value, best_value)
            i = tl.arange(0, KS * 2)  # the k + 1 output tokens
            drafts_i = tl.load(drafts + row * k + tl.minimum(i, k - 1))
            out = tl.where(i < accepted, drafts_i, tl.where(i == accepted, token.to(tl.int64), -1))
            tl.store(tokens + row * (k + 1) + i, out, mask=i <= k)
            tl.store(accepted_out + row, accepted)


def chain_rejection(drafts, draft_probs, target_probs, uniforms, noise):
    """`chain_rejection_reference`'s contract; the Triton kernel on CUDA (each row split over programs), else the
    reference."""
    if not triton_ready(drafts, target_probs) or drafts.shape[1] == 0:
        return chain_rejection_reference(drafts, draft_probs, target_probs, uniforms, noise)
    rows, k = drafts.shape
    vocab = target_probs.shape[-1]
    block, blocks, warps = vocab_blocks(vocab)
    device = drafts.device
    tokens = torch.empty(rows, k + 1, dtype=torch.long, device=device)
    accepted = torch.empty(rows, dtype=torch.long, device=device)
    partial = torch.empty(3 * rows * blocks, dtype=torch.float32, device=device)
    finished = counters(device, rows)  # kept per stream, set back to 0 by the kernel: no fill a call
    q = draft_probs.contiguous() if draft_probs is not None else target_probs  # unused when there is no q
    _chain[(rows, blocks)](drafts.contiguous(), q, target_probs.contiguous(), uniforms.contiguous(),
                           noise.contiguous(), tokens, accepted, partial, partial.view(torch.int32), finished, blocks,
                           k, vocab, HAS_Q=draft_probs is not None, KS=triton.next_power_of_2(k),
                           BLOCKS=triton.next_power_of_2(blocks), BLOCK=block, num_warps=warps)
    return tokens, accepted
