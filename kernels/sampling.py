"""Temperature and min-p sampling without a sort, each row split over several programs; and the exponential race.

"Turning Up the Heat: Min-p Sampling for Creative and Coherent LLM Outputs" (Nguyen et al., 2024) keeps the tokens
whose probability is at least min_p times the top one's: x >= max(x) + log(min_p) with x = logits / T, so the row's
maximum and one draw suffice. The draw is an exponential race, argmax over kept tokens of x - log E (E ~ Exp(1) given
per row), which samples softmax(x) restricted to the kept tokens without normalising or sorting; `race_step` and
`race_winner` run it, shared with `topk_topp`.

A row is split into `splits` ranges of whole blocks so that rows x splits programs fill the GPU (one program per row
left most of an H200's 132 SMs idle at 64 rows): launch 1 takes each range's maximum logit, launch 2 each range's
race winner under the row's threshold (its logits then come from the L2; with min_p > 0 it loads only the kept
tokens' noise, so 32-byte sectors without a kept token are not read), and the row's last range to finish (an
acq_rel counter a row, the split-K semaphore pattern) takes the row's winner from them and sets the counter back to
0 (kernels.counters keeps it per stream: no fill launched per call). min_p = 0 skips launch 1; a row of one range
writes its winner itself. The output and the partials are one allocation. x is logits / T rounded as torch divides
on the CPU (div_rn; on CUDA torch multiplies by 1 / T, which can differ in the last bit), so the kernel is the
reference exactly, ties to the lowest token included.
"""
from __future__ import annotations

import functools
import math

import torch

from . import counters, triton_ready

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None

BLOCK = 1024  # tokens per step of a program (8 warps: 4 a thread)
WAVES = 2  # programs for twice what the SMs hold at once: 16 ranges of 8,192 a row at 64 x 128,256 ran 6% faster
# than 8 ranges of 16,384 in blocks of 2,048 on the H200 (results/sweep-min-p-2026-12-01.txt)
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
    def _scratch(out, rows, SPLITS: tl.constexpr):
        """The partials after `out` (int64 [rows]): maxima, values (float32) and tokens (int32), rows x SPLITS each."""
        maxima = (out + rows).to(tl.pointer_type(tl.float32))
        values = maxima + rows * SPLITS
        return maxima, values, (values + rows * SPLITS).to(tl.pointer_type(tl.int32))

    @triton.jit
    def _range_max(logits, out, vocab: tl.constexpr, SPLIT: tl.constexpr, SPLITS: tl.constexpr,
                   BLOCK: tl.constexpr):
        row, part = tl.program_id(0).to(tl.int64), tl.program_id(1)
        maxima = _scratch(out, tl.num_programs(0), SPLITS)[0]
        top = tl.full((BLOCK,), -float("inf"), tl.float32)
        for start in range(0, SPLIT, BLOCK):
            v = part * SPLIT + start + tl.arange(0, BLOCK)
            top = tl.maximum(top, tl.load(logits + row * vocab + v, mask=v < vocab, other=-float("inf")).to(tl.float32))
        tl.store(maxima + row * SPLITS + part, tl.max(top, 0))

    @triton.jit
    def _range_race(logits, noise, out, finished, vocab: tl.constexpr, temperature, log_min_p, SPLIT: tl.constexpr,
                    SPLITS: tl.constexpr, WIDTH: tl.constexpr, MIN_P: tl.constexpr, BLOCK: tl.constexpr):
        row, part = tl.program_id(0).to(tl.int64), tl.program_id(1)
        maxima, values, tokens = _scratch(out, tl.num_programs(0), SPLITS)
        parts = tl.arange(0, WIDTH)
        floor = -float("inf")
        if MIN_P:  # the row's maximum of x: division by T > 0 keeps the order, so it is the maximum logit's
            top = tl.load(maxima + row * SPLITS + parts, mask=parts < SPLITS, other=-float("inf"))
            floor = tl.max(divide(top, temperature), 0) + log_min_p
        best = tl.full((BLOCK,), -float("inf"), tl.float32)
        best_token = tl.zeros((BLOCK,), tl.int32)
        for start in range(0, SPLIT, BLOCK):
            v = part * SPLIT + start + tl.arange(0, BLOCK)
            inside = v < vocab
            x = divide(tl.load(logits + row * vocab + v, mask=inside, other=-float("inf")).to(tl.float32), temperature)
            keep = inside & (x >= floor)
            if MIN_P:  # only kept tokens' noise is read (a token's noise matters only if it is kept): fewer bytes
                e = tl.load(noise + row * vocab + v, mask=keep, other=1.0)
            else:  # every token's, as 16-byte vectors
                e = tl.load(noise + row * vocab + v, mask=inside, other=1.0)
            best, best_token = race_step(x, e, keep, v, best, best_token)
        value, token = race_winner(best, best_token)
        if SPLITS == 1:  # the row's winner
            tl.store(out + row, token.to(tl.int64))
        else:  # the range's; the row's last range to finish (an acq_rel counter a row) takes the row's
            tl.store(values + row * SPLITS + part, value)
            tl.store(tokens + row * SPLITS + part, token)
            tl.debug_barrier()  # every thread's stores before the release
            if tl.atomic_add(finished + row, 1, sem="acq_rel") == SPLITS - 1:
                tl.store(finished + row, 0)  # no other program touches it again: zero for the next launch
                inside = parts < SPLITS
                value, token = race_winner(
                    tl.load(values + row * SPLITS + parts, mask=inside, other=-float("inf"), volatile=True),
                    tl.load(tokens + row * SPLITS + parts, mask=inside, other=2147483647, volatile=True))
                tl.store(out + row, token.to(tl.int64))


@functools.lru_cache(maxsize=None)
def _sms(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 8


def plan(rows: int, vocab: int, sms: int, block: int = BLOCK) -> tuple[int, int]:
    """(splits, tokens per split): ranges of whole blocks, WAVES times as many programs as the SMs hold at once (whole
    waves: no tail of a few programs), or one per row when the rows alone fill them."""
    blocks = -(-vocab // block)
    per = -(-blocks // min(blocks, max(1, WAVES * RESIDENT * sms // rows)))
    return -(-blocks // per), per * block


@functools.lru_cache(maxsize=256)
def _launch(rows: int, vocab: int, device: torch.device, block: int, splits: int | None) -> tuple[int, int, int]:
    """(ranges a row, tokens a range, the next power of two of the ranges): `plan`'s, or `splits` ranges."""
    parts, split = plan(rows, vocab, _sms(device), block)
    if splits is not None:
        split = -(-vocab // (splits * block)) * block
        parts = -(-vocab // split)
    return parts, split, triton.next_power_of_2(parts)


def sample_min_p(logits: torch.Tensor, temperature: float, min_p: float, noise: torch.Tensor,
                 splits: int | None = None, block: int = BLOCK) -> torch.Tensor:
    """`sample_min_p_reference`'s contract; the Triton kernels on CUDA, else the reference. `splits` (ranges per
    row) and `block` override the plan (tests)."""
    if not temperature > 0:
        raise ValueError("sampling needs a temperature > 0 (temperature 0 is argmax)")
    if not triton_ready(logits, noise):
        return sample_min_p_reference(logits, temperature, min_p, noise)
    rows, vocab = logits.shape
    parts, split, width = _launch(rows, vocab, logits.device, block, splits)
    # out [rows] int64, then the partials (`_scratch`): one allocation
    out = torch.empty(rows + -(-3 * rows * parts // 2), dtype=torch.long, device=logits.device)
    logits, noise = logits.contiguous(), noise.contiguous()
    if min_p > 0:
        _range_max[(rows, parts)](logits, out, vocab, SPLIT=split, SPLITS=parts, BLOCK=block, num_warps=8)
    finished = counters(logits.device, rows) if parts > 1 else out  # (one range a row: no counter read)
    _range_race[(rows, parts)](logits, noise, out, finished, vocab, float(temperature),
                               math.log(min_p) if min_p > 0 else 0.0, SPLIT=split, SPLITS=parts, WIDTH=width,
                               MIN_P=min_p > 0, BLOCK=block, num_warps=8)
    return out[:rows]
