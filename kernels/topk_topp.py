"""Temperature, top-k and top-p sampling without a sort: the thresholds from a few candidates, then a race.

Top-k and top-p come from "The Curious Case of Neural Text Degeneration" (Holtzman et al., 2020) and apply in
transformers' order: temperature, top-k, top-p (lab.sampling). With x = logits / T (div_rn) a token is kept iff
count(x > x_v) < k and mass(x > x_v) < p * mass(top-k survivors), mass being exp(x - max), so no sort is needed
(sort-free like FlashInfer's samplers, but exact for a given random stream rather than by rejection); the draw is
`sampling`'s exponential race over the kept tokens.

One program a row. A row does not fit in registers (49152 floats are 48K of an SM's 64K), so it is read twice and
the threshold work is done on candidates:
1. each lane's maximum (lane v mod CHUNK, slot v mod SLOTS), from HBM;
2. a floor the thresholds cannot be under: the k-th largest slot maximum (pairwise over the SLOTS), or for
   SLOTS < k <= CHUNK the k-th largest lane maximum (bisection in registers): k tokens reach it; for top-p alone,
   the x under which even V tokens would hold at most (1 - p) / 2 of the lane maxima's mass. The tokens at or above
   it (about k for top-k on random logits) are compacted in token order into a scratch row, from L2;
3. up to CAPACITY candidates: each one's count and mass above it, pairwise (the same summation order for every
   one, so both are monotone in x); more: bisection on x's order-preserving int32 key, at most 32 steps a
   threshold over the candidates (the first CHUNK held in registers);
4. the race over the kept candidates, gathering their noise.
A row is one SM's work (B=1 included: splitting a row would need a grid-wide reduction at every step). Ties: a
token's fate depends only on its value, so tied tokens are kept or dropped together (top-k keeps all ties at the
k-th value, as `lab.sampling.top_k`; top-p keeps all ties at its threshold, where `lab.sampling.top_p`'s sort may
keep some of them). Masses are summed in another order than the reference's cumsum, so the two can differ only
when the mass before a token is within float32 rounding of p. Logits are finite or -inf; a row of -inf draws
token 0.
"""
from __future__ import annotations

import torch

from lab.sampling import top_k as lab_top_k, top_p as lab_top_p

from . import sampling, triton_ready

try:
    import triton
    import triton.language as tl

    from .sampling import divide, race_step, race_winner
except ImportError:
    triton = None

SLOTS = 256  # slot maxima of step 1 (a floor for top-k up to 256, pairwise)
CAPACITY = 512  # candidates ranked pairwise in step 3; more are bisected
CHUNK = 8192  # tokens per step of a pass, lanes of step 1 (16 a thread; a floor for top-k up to 8192, bisected)
PAIRS = 32  # candidates per step of the pairwise count


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
    NEG_INF_KEY = tl.constexpr(-2139095041)  # the key of -inf

    @triton.jit
    def _key(x):
        """x's order-preserving int32 key (x is never -0.0 here)."""
        bits = x.to(tl.int32, bitcast=True)
        return bits ^ ((bits >> 31) & 0x7FFFFFFF)

    @triton.jit
    def _above_in(y, x):
        """For each of x: how many of y are strictly above it."""
        return tl.sum((y[None, :] > x[:, None]).to(tl.int32), 1)

    @triton.jit
    def _above(x, values, n, top, MASS: tl.constexpr, PAIRS: tl.constexpr):
        """For each of x: how many of the n values at `values` are strictly above it, and (MASS) their mass."""
        count = tl.zeros(x.shape, tl.int32)
        mass = tl.zeros(x.shape, tl.float32)
        start = tl.zeros((), tl.int32)
        while start < n:  # (a while: the interpreter takes no tensor as a range bound)
            j = start + tl.arange(0, PAIRS)
            y = tl.load(values + j, mask=j < n, other=-float("inf"))
            above = y[None, :] > x[:, None]
            count += tl.sum(above.to(tl.int32), 1)
            if MASS:
                mass += tl.sum(tl.where(above, tl.exp(y - top)[None, :], 0.0), 1)
            start += PAIRS
        return count, mass

    @triton.jit
    def _pairwise(noise, row_start, xs, ids, n, top, k, p, total, USE_K: tl.constexpr, USE_P: tl.constexpr,
                  CAP: tl.constexpr, PAIRS: tl.constexpr):
        """Step 3 and 4 for at most CAP candidates: each one kept or not from its count and mass above."""
        i = tl.arange(0, CAP)
        valid = i < n
        x = tl.load(xs + row_start + i, mask=valid, other=-float("inf"))
        count, mass = _above(x, xs + row_start, n, top, USE_P, PAIRS)
        keep = valid
        if USE_K:
            keep = keep & (count < k)
            if USE_P:  # top-p's mass is the top-k survivors'
                total = tl.sum(tl.where(keep, tl.exp(x - top), 0.0), 0)
        if USE_P:
            keep = keep & (mass < p * total)
        token = tl.load(ids + row_start + i, mask=valid, other=0)
        e = tl.load(noise + row_start + token, mask=keep, other=1.0)
        best, best_token = race_step(x, e, keep, token, tl.full((CAP,), -float("inf"), tl.float32),
                                     tl.zeros((CAP,), tl.int32))
        return race_winner(best, best_token)[1]

    @triton.jit
    def _tally(values, n, first, t, top, MASS: tl.constexpr, STREAM: tl.constexpr, CHUNK: tl.constexpr):
        """The count (MASS: mass) of the n values whose key is above t: the first CHUNK of them given in registers
        (`first`, -inf past n), the rest (STREAM) read from `values`."""
        if MASS:
            acc = tl.where(_key(first) > t, tl.exp(first - top), 0.0)
        else:
            acc = (_key(first) > t).to(tl.int32)
        if STREAM:
            start = tl.zeros((), tl.int32) + CHUNK
            while start < n:  # (a while: the interpreter takes no tensor as a range bound)
                i = start + tl.arange(0, CHUNK)
                y = tl.load(values + i, mask=i < n, other=-float("inf"))
                if MASS:
                    acc += tl.where(_key(y) > t, tl.exp(y - top), 0.0)
                else:
                    acc += (_key(y) > t).to(tl.int32)
                start += CHUNK
        return tl.sum(acc, 0)

    @triton.jit
    def _search(values, n, first, lo, hi, bound, top, MASS: tl.constexpr, STREAM: tl.constexpr, CHUNK: tl.constexpr):
        """The smallest key t in [lo, hi] at which `_tally` is under `bound` (it is at hi), by bisection (lo is
        at least -inf's key, so the -inf padding is never above t)."""
        lo = tl.zeros((), tl.int64) + lo
        hi = tl.zeros((), tl.int64) + hi
        while lo < hi:
            mid = lo + (hi - lo) // 2
            ok = _tally(values, n, first, mid.to(tl.int32), top, MASS, STREAM, CHUNK) < bound
            hi = tl.where(ok, mid, hi)
            lo = tl.where(ok, lo, mid + 1)
        return lo.to(tl.int32)

    @triton.jit
    def _bisected(noise, row_start, xs, ids, n, low, top, k, p, total, USE_K: tl.constexpr, USE_P: tl.constexpr,
                  CHUNK: tl.constexpr):
        """Step 3 and 4 for more candidates: each threshold by bisection over the candidates (the first CHUNK of
        them held in registers), then the race over them."""
        i = tl.arange(0, CHUNK)
        first = tl.load(xs + row_start + i, mask=i < n, other=-float("inf"))
        floor = _key(low)
        if USE_K:
            floor = _search(xs + row_start, n, first, floor, _key(top), k, top, False, True, CHUNK)
            if USE_P:  # top-p's mass is the top-k survivors'
                total = _tally(xs + row_start, n, first, floor - 1, top, True, True, CHUNK)
        if USE_P:
            floor = _search(xs + row_start, n, first, floor, _key(top), p * total, top, True, True, CHUNK)
        keep = (i < n) & (_key(first) >= floor)
        token = tl.load(ids + row_start + i, mask=i < n, other=0)
        e = tl.load(noise + row_start + token, mask=keep, other=1.0)
        best, best_token = race_step(first, e, keep, token, tl.full((CHUNK,), -float("inf"), tl.float32),
                                     tl.zeros((CHUNK,), tl.int32))
        start = tl.zeros((), tl.int32) + CHUNK
        while start < n:
            i = start + tl.arange(0, CHUNK)
            x = tl.load(xs + row_start + i, mask=i < n, other=-float("inf"))
            keep = (i < n) & (_key(x) >= floor)
            token = tl.load(ids + row_start + i, mask=i < n, other=0)
            e = tl.load(noise + row_start + token, mask=keep, other=1.0)
            best, best_token = race_step(x, e, keep, token, best, best_token)
            start += CHUNK
        return race_winner(best, best_token)[1]

    @triton.jit
    def _sample(logits, noise, out, xs, ids, vocab: tl.constexpr, temperature, k, p, USE_K: tl.constexpr,
                USE_P: tl.constexpr, SLOTS: tl.constexpr, CAP: tl.constexpr, CHUNK: tl.constexpr,
                PAIRS: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        row_start = row * vocab
        # 1. each lane's maximum x (lane v mod CHUNK, slot v mod SLOTS; division by T > 0 keeps the order)
        tile = tl.arange(0, CHUNK // SLOTS)[:, None] * SLOTS + tl.arange(0, SLOTS)[None, :]
        lanes = tl.full((CHUNK // SLOTS, SLOTS), -float("inf"), tl.float32)
        for start in range(0, vocab, CHUNK):
            v = start + tile
            logit = tl.load(logits + row_start + v, mask=v < vocab, other=-float("inf"))
            lanes = tl.maximum(lanes, logit.to(tl.float32))
        lanes = divide(lanes, temperature)
        lanes = tl.where(lanes == 0.0, 0.0, lanes)  # -0.0 and 0.0 are one value, so one key
        peaks = tl.max(lanes, 0)
        top = tl.max(peaks, 0)
        empty = top == -float("inf")  # a row of -inf: no candidate, token 0
        top = tl.where(empty, 0.0, top)
        # 2. the floor, then the candidates x >= low in token order
        if USE_K:  # the k-th largest slot (or lane) maximum: k tokens reach it
            if k <= SLOTS:
                a, b = tl.split(tl.reshape(peaks, (SLOTS // 4, 2, 2)))  # in quarters: fewer registers at once
                a0, a1 = tl.split(a)
                b0, b1 = tl.split(b)
                above = _above_in(a0, peaks) + _above_in(a1, peaks) + _above_in(b0, peaks) + _above_in(b1, peaks)
                low = tl.min(tl.where(above < k, peaks, float("inf")), 0)
            elif k <= CHUNK:
                t = _search(xs, 0, tl.reshape(lanes, (CHUNK,)), NEG_INF_KEY, _key(top), k, top, False, False, CHUNK)
                low = (t ^ ((t >> 31) & 0x7FFFFFFF)).to(tl.float32, bitcast=True)  # the key's value
            else:
                low = tl.full((), -float("inf"), tl.float32)
        else:  # V tokens under low hold at most V exp(low - top) = (1 - p) / 2 of the lane maxima's mass (>= 1)
            low = top + tl.log((1.0 - p) * tl.maximum(tl.sum(tl.exp(lanes - top)), 1.0) / (2 * vocab))
        low = tl.where(empty, float("inf"), low)
        n = tl.zeros((), tl.int32)
        mass = tl.zeros((CHUNK,), tl.float32)
        for start in range(0, vocab, CHUNK):
            v = start + tl.arange(0, CHUNK)
            inside = v < vocab
            x = divide(tl.load(logits + row_start + v, mask=inside, other=-float("inf")).to(tl.float32), temperature)
            x = tl.where(x == 0.0, 0.0, x)
            take = inside & (x >= low)
            at = n + tl.cumsum(take.to(tl.int32), 0) - 1
            tl.store(xs + row_start + at, x, mask=take)
            tl.store(ids + row_start + at, v, mask=take)
            n += tl.sum(take.to(tl.int32), 0)
            if not USE_K:  # top-p alone: its mass is the whole row's
                mass += tl.exp(x - top)
        total = tl.sum(mass, 0)
        tl.debug_barrier()
        # 3. and 4.
        if n <= CAP:
            token = _pairwise(noise, row_start, xs, ids, n, top, k, p, total, USE_K, USE_P, CAP, PAIRS)
        else:
            token = _bisected(noise, row_start, xs, ids, n, low, top, k, p, total, USE_K, USE_P, CHUNK)
        tl.store(out + row, token.to(tl.int64))


def sample_top_k_top_p(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, noise: torch.Tensor,
                       slots: int = SLOTS, capacity: int = CAPACITY) -> torch.Tensor:
    """`sample_top_k_top_p_reference`'s contract; the Triton kernel on CUDA (one program per row; neither top-k nor
    top-p: `sampling.sample_min_p`'s race), else the reference. `slots` and `capacity` (powers of two) override
    steps 1 and 3 (tests)."""
    if not temperature > 0:
        raise ValueError("sampling needs a temperature > 0 (temperature 0 is argmax)")
    if top_k < 0 or not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_k must be >= 0 (0: off) and top_p in (0, 1], got {top_k} and {top_p}")
    if not triton_ready(logits, noise):
        return sample_top_k_top_p_reference(logits, temperature, top_k, top_p, noise)
    rows, vocab = logits.shape
    use_k, use_p = 0 < top_k < vocab, top_p < 1.0
    if not (use_k or use_p):
        return sampling.sample_min_p(logits, temperature, 0.0, noise)
    device = logits.device
    out = torch.empty(rows, dtype=torch.long, device=device)
    xs = torch.empty(rows, vocab, dtype=torch.float32, device=device)
    ids = torch.empty(rows, vocab, dtype=torch.int32, device=device)
    _sample[(rows,)](logits.contiguous(), noise.contiguous(), out, xs, ids, vocab, float(temperature),
                     int(top_k), float(top_p), USE_K=use_k, USE_P=use_p, SLOTS=slots, CAP=capacity,
                     CHUNK=max(CHUNK, slots), PAIRS=PAIRS, num_warps=16)
    return out
