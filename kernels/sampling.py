"""Temperature and min-p sampling without a sort, each row split over several programs; and the exponential race.

"Turning Up the Heat: Min-p Sampling for Creative and Coherent LLM Outputs" (Nguyen et al., 2024) keeps the tokens
whose probability is at least min_p times the top one's: x >= max(x) + log(min_p) with x = logits / T, so the row's
maximum and one draw suffice. The draw is an exponential race, argmax over kept tokens of x - log E (E ~ Exp(1) given
per row), which samples softmax(x) restricted to the kept tokens without normalising or sorting; `race_step` and
`race_winner` run it, shared with `topk_topp`.

A row is split into `splits` ranges of whole blocks so that rows x splits programs fill the GPU (one program per row
left most of an H200's 132 SMs idle at 64 rows): launch 1 takes each range's maximum logit, launch 2 each range's
race winner under the row's threshold (its logits then come from the L2), launch 3 the row's winner. min_p = 0 skips
launch 1. x is logits / T rounded as torch divides on the CPU (div_rn; on CUDA torch multiplies by 1 / T, which
can differ in the last bit), so the kernel is the reference exactly, ties to the lowest token included.
"""
from __future__ import annotations

import functools
import math

import torch

from . import triton_ready

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None

BLOCK = 2048  # tokens per step of a program (8 warps: 8 a thread)
RESIDENT = 4  # programs of 8 warps an SM holds at once (64 registers a thread)


def sample_min_p_reference(logits: torch.Tensor, temperature: float, min_p: float, noise: torch.Tensor) -> torch.Tensor:
    """logits [B, V], noise [B, V] Exp(1): one token per row from softmax(logits / T) after min-p (0: off)."""
    scaled = logits.float() / temperature
    keep = scaled >= scaled.max(-1, keepdim=True).values + (math.log(min_p) if min_p > 0 else -math.inf)
    return torch.where(keep, scaled - noise.log(), float("-inf")).argmax(-1)


if triton is not None:
    @triton.jit
    def divide(x, temperature):
        """x / T as torch's float32 division rounds it (IEEE round to nearest)."""
        return tl.math.div_rn(x, tl.full(x.shape, 1.0, tl.float32) * temperature)

    @triton.jit
    def race_step(x, e, keep, token, best, best_token):
        """One block of the exponential race, lane by lane: where x - log e over a kept token beats the lane's best
        so far (strictly: blocks come in token order, so a tie keeps the lower token), take it."""
        score = tl.where(keep, x - tl.log(e), -float("inf"))
        better = score > best
        return tl.where(better, score, best), tl.where(better, token, best_token)

    @triton.jit
    def race_winner(best, best_token):
        """The race's best score over the lanes and its lowest token (token 0 if nothing was kept)."""
        value = tl.max(best, 0)
        return value, tl.min(tl.where(best == value, best_token, 2147483647), 0)

    @triton.jit
    def _range_max(logits, maxima, vocab: tl.constexpr, SPLIT: tl.constexpr, SPLITS: tl.constexpr,
                   BLOCK: tl.constexpr):
        row, part = tl.program_id(0).to(tl.int64), tl.program_id(1)
        top = tl.full((BLOCK,), -float("inf"), tl.float32)
        for start in range(0, SPLIT, BLOCK):
            v = part * SPLIT + start + tl.arange(0, BLOCK)
            top = tl.maximum(top, tl.load(logits + row * vocab + v, mask=v < vocab, other=-float("inf")).to(tl.float32))
        tl.store(maxima + row * SPLITS + part, tl.max(top, 0))

    @triton.jit
    def _range_race(logits, noise, maxima, values, tokens, vocab: tl.constexpr, temperature, log_min_p,
                    SPLIT: tl.constexpr, SPLITS: tl.constexpr, WIDTH: tl.constexpr, MIN_P: tl.constexpr,
                    BLOCK: tl.constexpr):
        row, part = tl.program_id(0).to(tl.int64), tl.program_id(1)
        floor = -float("inf")
        if MIN_P:  # the row's maximum of x: division by T > 0 keeps the order, so it is the maximum logit's
            parts = tl.arange(0, WIDTH)
            top = tl.load(maxima + row * SPLITS + parts, mask=parts < SPLITS, other=-float("inf"))
            floor = tl.max(divide(top, temperature), 0) + log_min_p
        best = tl.full((BLOCK,), -float("inf"), tl.float32)
        best_token = tl.zeros((BLOCK,), tl.int32)
        for start in range(0, SPLIT, BLOCK):
            v = part * SPLIT + start + tl.arange(0, BLOCK)
            inside = v < vocab
            x = divide(tl.load(logits + row * vocab + v, mask=inside, other=-float("inf")).to(tl.float32), temperature)
            e = tl.load(noise + row * vocab + v, mask=inside, other=1.0)
            best, best_token = race_step(x, e, inside & (x >= floor), v, best, best_token)
        value, token = race_winner(best, best_token)
        tl.store(values + row * SPLITS + part, value)
        tl.store(tokens + row * SPLITS + part, token)

    @triton.jit
    def _pick(values, tokens, out, SPLITS: tl.constexpr, WIDTH: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        parts = tl.arange(0, WIDTH)
        inside = parts < SPLITS
        value, token = race_winner(tl.load(values + row * SPLITS + parts, mask=inside, other=-float("inf")),
                                   tl.load(tokens + row * SPLITS + parts, mask=inside, other=2147483647))
        tl.store(out + row, token.to(tl.int64))


@functools.lru_cache(maxsize=None)
def _sms(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 8


def plan(rows: int, vocab: int, sms: int, block: int = BLOCK) -> tuple[int, int]:
    """(splits, tokens per split): ranges of whole blocks, as many programs as the SMs hold at once (one wave: no
    tail of a few programs) or one per row when the rows alone fill them."""
    blocks = -(-vocab // block)
    per = -(-blocks // min(blocks, max(1, RESIDENT * sms // rows)))
    return -(-blocks // per), per * block


def sample_min_p(logits: torch.Tensor, temperature: float, min_p: float, noise: torch.Tensor,
                 splits: int | None = None, block: int = BLOCK) -> torch.Tensor:
    """`sample_min_p_reference`'s contract; the Triton kernels on CUDA, else the reference. `splits` (ranges per
    row) and `block` override the plan (tests)."""
    if not temperature > 0:
        raise ValueError("sampling needs a temperature > 0 (temperature 0 is argmax)")
    if not triton_ready(logits, noise):
        return sample_min_p_reference(logits, temperature, min_p, noise)
    rows, vocab = logits.shape
    parts, split = plan(rows, vocab, _sms(logits.device), block)
    if splits is not None:
        split = -(-vocab // (splits * block)) * block
        parts = -(-vocab // split)
    logits, noise = logits.contiguous(), noise.contiguous()
    maxima = torch.empty(rows, parts, dtype=torch.float32, device=logits.device)
    values = torch.empty(rows, parts, dtype=torch.float32, device=logits.device)
    tokens = torch.empty(rows, parts, dtype=torch.int32, device=logits.device)
    out = torch.empty(rows, dtype=torch.long, device=logits.device)
    width = triton.next_power_of_2(parts)
    if min_p > 0:
        _range_max[(rows, parts)](logits, maxima, vocab, SPLIT=split, SPLITS=parts, BLOCK=block, num_warps=8)
    _range_race[(rows, parts)](logits, noise, maxima, values, tokens, vocab, float(temperature),
                               math.log(min_p) if min_p > 0 else 0.0, SPLIT=split, SPLITS=parts, WIDTH=width,
                               MIN_P=min_p > 0, BLOCK=block, num_warps=8)
    _pick[(rows,)](values, tokens, out, SPLITS=parts, WIDTH=width, num_warps=1)
    return out
