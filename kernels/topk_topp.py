"""Temperature, top-k and top-p sampling without a sort: two radix searches for the thresholds, then a race.

Top-k and top-p come from "The Curious Case of Neural Text Degeneration" (Holtzman et al., 2020) and apply in
transformers' order: temperature, top-k, top-p (lab.sampling). Both keep every token whose logit is at least a
threshold, so no sort is needed, only the thresholds (sort-free like FlashInfer's top-k/top-p samplers, but exact for
a given random stream rather than by rejection). With x = logits / T and A(v) an aggregate over the tokens strictly
above x_v, a token is kept iff count(x > x_v) < k and mass(x > x_v) < p * mass(top-k survivors), mass being
exp(x - max). Each threshold is found by a radix select over the float's order-preserving 32-bit key, 4 bits a
pass (16 buckets), the way torch's topk finds the k-th value: 8 passes for top-k, 8 for top-p, one for the maximum,
one for the draw, an exponential race argmax over kept tokens of x - log E (E ~ Exp(1) given per row, as
`sampling.sample_min_p`).

Ties: a token's fate depends only on its value, so tied tokens are kept or dropped together (top-k keeps all ties at
the k-th value, as `lab.sampling.top_k`; top-p keeps all ties at its threshold, where `lab.sampling.top_p`'s sort may
keep some of them). Top-p's mass is summed in another order than the reference's cumsum, so the two can differ only
when the mass before a token is within float32 rounding of p. Logits are finite or -inf; a row of -inf draws token 0.
"""
from __future__ import annotations

import torch

from lab.sampling import top_k as lab_top_k, top_p as lab_top_p

from . import triton_ready

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None


def sample_top_k_top_p_reference(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
                                 noise: torch.Tensor) -> torch.Tensor:
    """logits [B, V], noise [B, V] Exp(1): one token per row from softmax(logits / T) after top-k (0: off) and
    top-p (1: off), lab.sampling's rules, with top-p's ties at its threshold all kept."""
    scaled = lab_top_k(logits.float() / temperature, top_k)
    kept = lab_top_p(scaled, top_p) > float("-inf")
    floor = torch.where(kept, scaled, float("inf")).min(-1, keepdim=True).values  # the smallest kept logit
    scaled = torch.where(scaled >= floor, scaled, float("-inf"))
    return (scaled - noise.log()).argmax(-1)


if triton is not None:
    @triton.jit
    def _scaled(logits, row, v, vocab: tl.constexpr, temperature):
        """x = logit / T (IEEE division, as torch's), its order-preserving key in [0, 2^32), and whether v < V."""
        inside = v < vocab
        x = tl.load(logits + row * vocab + v, mask=inside, other=-float("inf")).to(tl.float32)
        x = tl.math.div_rn(x, tl.full(x.shape, 1.0, tl.float32) * temperature)
        x = tl.where(x == 0.0, 0.0, x)  # -0.0 and 0.0 are one value, so one key
        bits = x.to(tl.int32, bitcast=True).to(tl.int64)
        key = tl.where(bits >= 0, bits + 2147483648, -1 - bits)
        return x, key, inside

    @triton.jit
    def _level(logits, row, vocab: tl.constexpr, temperature, top, floor, prefix, shift, MASS: tl.constexpr,
               BLOCK: tl.constexpr):
        """One radix pass over the row's tokens with key >= floor: among those whose key >> (shift + 4) is
        `prefix`, the count and mass in each of the 16 buckets of the next 4 bits; and the count and mass of
        those above the prefix."""
        digits = tl.arange(0, 16)
        counts = tl.zeros((BLOCK, 16), tl.int32)
        masses = tl.zeros((BLOCK, 16), tl.float32)
        above_count = tl.zeros((BLOCK,), tl.int32)
        above_mass = tl.zeros((BLOCK,), tl.float32)
        for start in range(0, vocab, BLOCK):
            x, key, inside = _scaled(logits, row, start + tl.arange(0, BLOCK), vocab, temperature)
            eligible = inside & (key >= floor)
            high = key >> (shift + 4)
            hit = (eligible & (high == prefix))[:, None] & (((key >> shift) & 15)[:, None] == digits[None, :])
            above = eligible & (high > prefix)
            counts += hit.to(tl.int32)
            above_count += above.to(tl.int32)
            if MASS:
                w = tl.exp(x - top)
                masses += tl.where(hit, w[:, None], 0.0)
                above_mass += tl.where(above, w, 0.0)
        return tl.sum(counts, 0), tl.sum(masses, 0), tl.sum(above_count, 0), tl.sum(above_mass, 0)

    @triton.jit
    def _choose(bucket, count, above, bound, prefix):
        """The threshold's next digit: the lowest non-empty bucket whose tokens have an aggregate above them
        (`above` the prefix plus the higher buckets) below `bound`; returns the longer prefix."""
        digits = tl.arange(0, 16)
        higher = tl.sum(tl.where(digits[None, :] > digits[:, None], bucket[None, :], 0), 1)
        ok = (count > 0) & (above + higher < bound)
        return prefix * 16 + tl.min(tl.where(ok, digits, 16), 0)

    @triton.jit
    def _sample(logits, noise, out, vocab: tl.constexpr, temperature, k, p, USE_K: tl.constexpr,
                USE_P: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        top = -float("inf")
        for start in range(0, vocab, BLOCK):
            x, key, inside = _scaled(logits, row, start + tl.arange(0, BLOCK), vocab, temperature)
            top = tl.maximum(top, tl.max(x, 0))
        top = tl.where(top == -float("inf"), 0.0, top)  # a row of -inf: no mass anywhere, nothing kept
        floor = tl.zeros((), tl.int64)
        if USE_K:  # the k-th largest value: count(x > x_v) < k
            prefix = tl.zeros((), tl.int64)
            for level in range(8):
                shift = 28 - 4 * level
                counts, masses, above_count, above_mass = _level(logits, row, vocab, temperature, top, floor, prefix,
                                                                 shift, False, BLOCK)
                prefix = _choose(counts, counts, above_count, k, prefix)
            floor = prefix
        if USE_P:  # among the top-k survivors: mass(x > x_v) < p * their mass
            prefix = tl.zeros((), tl.int64)
            bound = tl.zeros((), tl.float32)
            for level in range(8):
                shift = 28 - 4 * level
                counts, masses, above_count, above_mass = _level(logits, row, vocab, temperature, top, floor, prefix,
                                                                 shift, True, BLOCK)
                if level == 0:
                    bound = p * tl.sum(masses, 0)
                prefix = _choose(masses, counts, above_mass, bound, prefix)
            floor = prefix
        best_value = -float("inf")
        best_token = 0
        for start in range(0, vocab, BLOCK):
            v = start + tl.arange(0, BLOCK)
            x, key, inside = _scaled(logits, row, v, vocab, temperature)
            e = tl.load(noise + row * vocab + v, mask=inside, other=1.0)
            score = tl.where(inside & (key >= floor), x - tl.log(e), -float("inf"))
            value = tl.max(score, 0)
            token = start + tl.argmax(score, 0)
            better = value > best_value
            best_token = tl.where(better, token, best_token)
            best_value = tl.where(better, value, best_value)
        tl.store(out + row, best_token)


def sample_top_k_top_p(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
                       noise: torch.Tensor) -> torch.Tensor:
    """`sample_top_k_top_p_reference`'s contract; the Triton kernel on CUDA (one program per row), else the
    reference."""
    if not temperature > 0:
        raise ValueError("sampling needs a temperature > 0 (temperature 0 is argmax)")
    if top_k < 0 or not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_k must be >= 0 (0: off) and top_p in (0, 1], got {top_k} and {top_p}")
    if not triton_ready(logits, noise):
        return sample_top_k_top_p_reference(logits, temperature, top_k, top_p, noise)
    rows, vocab = logits.shape
    out = torch.empty(rows, dtype=torch.long, device=logits.device)
    _sample[(rows,)](logits.contiguous(), noise.contiguous(), out, vocab, float(temperature), int(top_k),
                     float(top_p), USE_K=0 < top_k < vocab, USE_P=top_p < 1.0, BLOCK=256, num_warps=8)
    return out
