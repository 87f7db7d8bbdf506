"""The canvas of one diffusion generation and the model calls that predict its masked positions.

A canvas of `length` mask tokens follows the prompt and is decoded in semi-autoregressive blocks. `predict`
runs the denoiser once on the current canvas and returns the logits of every masked position it sees (the
window); `predict_many` runs several candidate contents of the current block in one forward (copies that see the
cached context but not each other), which draft-and-verify policies use. Where the logits come from:

- block attention (block diffusion): the prompt and every finished block sit in the backend's cache as clean causal
  context; a finished block joins it in the next block's first forward (no extra call). `cache="none"` rebuilds
  that context every step (the same numbers, the reference); `prefix` and `dual` keep it (exact here).
- global attention (LLaDA, Dream): `none` runs prompt + whole canvas every step; `prefix` (Fast-dLLM) runs it at a
  block's start and keeps the keys and values before the block, re-running block and suffix; `dual` (Fast-dLLM)
  also keeps the suffix's, re-running the block only. Both are approximations: the kept entries go stale.

With shifted logits the prediction for position i is read at position i - 1. The mask token is never predicted.
"""
from __future__ import annotations

import torch

from ..backends import Backend
from .model import DLLM

CACHES = ("none", "prefix", "dual")


class Denoiser:
    def __init__(self, backend: Backend, spec: DLLM, prompt: list[int], length: int, block_size: int,
                 cache: str = "prefix", eos: frozenset[int] = frozenset()):
        if cache not in CACHES:
            raise ValueError(f"cache is one of {', '.join(CACHES)}, got {cache!r}")
        if block_size < 1:
            raise ValueError("block_size must be >= 1")
        self.backend, self.spec, self.cache = backend, spec, cache
        self.length, self.block_size = length, block_size
        self.mask = spec.mask_id
        self.eos = frozenset(eos)  # tokens that end the output (the run stops once one is reached, as Decoding does)
        self.shift = int(spec.shift)
        self.canvas = [self.mask] * length  # output positions; the mask token where nothing is committed yet
        self.block: tuple[int, int] | None = None
        self.reset(prompt)

    def reset(self, prompt: list[int]) -> None:
        """A new prompt (context) and an empty canvas; block attention keeps what it can of the cache."""
        self.prompt = list(prompt)
        self.canvas = [self.mask] * self.length
        self.block, self.fresh = None, True
        self.plan: list[int] = []  # the current block's commits per step, for schedules that plan ahead
        self.clean = 0  # block attention: output positions [0, clean) are clean context in the cache
        self.kept = 0  # global attention: cache entries kept since the block's first forward
        if self.spec.attention == "block":
            self.last = self.backend.sync(self.prompt)  # logits after the last clean token

    # -- the canvas --------------------------------------------------------------------------------
    def blocks(self) -> list[tuple[int, int]]:
        return [(s, min(s + self.block_size, self.length)) for s in range(0, self.length, self.block_size)]

    def masked(self, start: int = 0, end: int | None = None) -> list[int]:
        end = self.length if end is None else end
        return [i for i in range(start, end) if self.canvas[i] == self.mask]

    def ends(self, filled: dict[int, int] | None = None) -> bool:
        """Whether the output is over on the canvas with `filled` (position -> token) written on it: every position
        decided, or decided from the start up to an end-of-text token (nothing after it counts)."""
        filled = filled or {}
        for i, token in enumerate(self.canvas):
            token = filled.get(i, token)
            if token == self.mask:
                return False
            if token in self.eos:
                return True
        return True

    def snapshot(self) -> list[int]:
        return [-1 if t == self.mask else t for t in self.canvas]

    # -- the model calls -----------------------------------------------------------------------------
    def predict(self, start: int, end: int) -> tuple[list[int], torch.Tensor]:
        """One forward on the canvas while block [start, end) is decoded: (window positions, logits [w, V])."""
        window, logits = self._run(start, end, [self.canvas[start:end]])
        return window, logits[0]

    def predict_many(self, start: int, end: int, blocks: list[list[int]]) -> tuple[list[int], torch.Tensor]:
        """One forward over several contents of block [start, end): (window positions, logits [K, w, V])."""
        return self._run(start, end, blocks)

    def _run(self, start: int, end: int, blocks: list[list[int]]) -> tuple[list[int], torch.Tensor]:
        if self.block != (start, end):
            self.block, self.fresh = (start, end), True
        run = self._block_attention if self.spec.attention == "block" else self._global_attention
        window, logits = run(start, end, blocks)
        mask = torch.tensor([self.mask], device=logits.device)
        return window, logits.index_fill(-1, mask, float("-inf"))

    def _forward(self, segments: list[list[int]], first: int, inner: torch.Tensor) -> torch.Tensor:
        """K copies of a segment at positions first.., each seeing the cache and itself by `inner`: [K, n, V]."""
        k, n = len(segments), len(segments[0])
        among = torch.block_diag(*[inner] * k) if k > 1 else inner
        out = self.backend.forward([t for s in segments for t in s], positions=list(range(first, first + n)) * k,
                                   among=among).logits
        return out.reshape(k, n, -1)

    def _block_attention(self, start: int, end: int, blocks: list[list[int]]):
        if any(t == self.mask for t in self.canvas[self.clean:start]):
            raise ValueError("a block starts before the one before it is finished")
        P = len(self.prompt)
        if self.cache == "none":
            self.backend.rollback(0)
            tail, first = self.prompt + self.canvas[:start], 0
        else:
            tail, first = self.canvas[self.clean:start], P + self.clean
        c, m = len(tail), end - start
        inner = torch.ones(c + m, c + m, dtype=torch.bool)
        inner[:c, :c] = torch.ones(c, c, dtype=torch.bool).tril()
        inner[:c, c:] = False  # clean context never sees the block
        cached = self.backend.length
        logits = self._forward([tail + list(b) for b in blocks], first, inner)
        last = logits[:, c - 1] if c else self.last.expand(len(blocks), -1)
        if self.cache != "none" and c and len(blocks) == 1:
            self.backend.keep(list(range(c)))  # the finished block joins the clean context
            self.clean, self.last = start, logits[0, c - 1]
        else:
            self.backend.rollback(cached if self.cache != "none" else 0)
        rows = torch.cat([last[:, None], logits[:, c:c + m - 1]], 1) if self.shift else logits[:, c:c + m]
        return list(range(start, end)), rows

    def _global_attention(self, start: int, end: int, blocks: list[list[int]]):
        P, s, L = len(self.prompt), self.shift, self.length
        full = lambda b: self.prompt + self.canvas[:start] + list(b) + self.canvas[end:]  # noqa: E731
        if self.cache == "none" or self.fresh:
            self.backend.rollback(0)
            logits = self._forward([full(b) for b in blocks], 0, torch.ones(P + L, P + L, dtype=torch.bool))
            window, rows = list(range(L)), logits[:, P - s:P + L - s]
            if self.cache != "none" and len(blocks) == 1:
                keep = list(range(P + start - s))
                if self.cache == "dual":
                    keep += list(range(P + end, P + L))
                self.backend.keep(keep)
                self.kept, self.fresh = len(keep), False
            else:
                self.backend.rollback(0)
            return window, rows
        stop = L if self.cache == "prefix" else end
        first = P + start - s
        segments = [full(b)[first:P + stop] for b in blocks]
        n = len(segments[0])
        logits = self._forward(segments, first, torch.ones(n, n, dtype=torch.bool))
        self.backend.rollback(self.kept)
        return list(range(start, stop)), logits[:, :stop - start]
