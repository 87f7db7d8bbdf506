"""The fast backend: Llama-family models over a static KV cache indexed by position, CUDA graphs per bucket.

One row. New tokens are written at the cache columns after the committed ones; `keep` moves the accepted rows
down with one gather, `rollback` only moves the length back. On a GPU each forward of up to 128 new tokens replays
a graph captured once per bucket of new tokens and visible columns (taps and the prompt run outside the graphs);
on the CPU the same step runs eagerly, which is what the tests compare with the HF backend. Batches of rows and
beam reordering stay with the HF backend (`for_rows`).
"""
from __future__ import annotations

import weakref

import torch

from ...tree import ancestor_mask, buffers, chain, depths
from ..base import Backend, Description, Forward
from ..layers import kv_bytes_per_token
from ..taps import check
from ..transfer import to_device
from .graphs import BURST, Pool, Slab, bucket
from .rounds import GreedyRounds
from .weights import Weights, one_layer, step

PREFILL_CHUNK = 64  # prompt tokens per graph replay on a GPU (measured so: README)
_WEIGHTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> (Weights, Pool)


def weights_of(model) -> tuple[Weights, Pool]:
    if model not in _WEIGHTS:
        _WEIGHTS[model] = (Weights(model), Pool())
    return _WEIGHTS[model]


class FastBackend(Backend):
    def __init__(self, model, layers: list[int] | None = None, *, graphs: bool | None = None, capacity: int = 1024):
        self.base = model
        self.w, self.pool = weights_of(model)
        self.layers = sorted(int(i) for i in layers) if layers is not None else None
        self.run_layers = self.layers if self.layers is not None else list(range(len(self.w.layers)))
        self.device, self.dtype = self.w.device, self.w.dtype
        self.vocab_size, self.num_layers = self.w.head.shape[0], len(self.w.layers)
        self.graphs = self.device.type == "cuda" if graphs is None else graphs
        self.chunked = self.graphs  # prefill in chunks of up to 64 new tokens (what the graphs are captured for)
        self.min_capacity = capacity
        self.slab: Slab | None = None
        self._release = None
        self._ids: list[int] = []
        self._pending = (0, 0)  # (length before the last forward, its new tokens)
        self.forwards = 0

    # -- what it is --------------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        return 1

    @property
    def weights(self):
        return self.base

    def tokens(self, row: int = 0) -> list[int]:
        if row:
            raise ValueError("the fast backend holds one row")
        return self._ids

    def describe(self) -> Description:
        w, layers = self.w, len(self.run_layers)
        return Description(name=str(getattr(self.base, "name_or_path", "") or type(self.base).__name__),
                           architecture=type(self.base).__name__, layers=layers, vocab_size=self.vocab_size,
                           hidden_size=w.embed.shape[1], dtype=str(self.dtype).removeprefix("torch."),
                           device=str(self.device), kv_bytes_per_token=kv_bytes_per_token(self.base, layers, self.dtype),
                           max_positions=w.max_positions, layer_subset=tuple(self.layers) if self.layers else None,
                           backend="fast")

    # -- the cache ---------------------------------------------------------------------------------
    def _room(self, columns: int) -> None:
        """A slab with room for `columns` columns (plus the scratch column): borrowed, or a bigger one."""
        if self.slab is not None and columns < self.slab.capacity:
            return
        capacity = max(self.min_capacity, 1 << (columns).bit_length())
        if self.w.max_positions and capacity > self.w.max_positions + 1:
            capacity = self.w.max_positions + 1
        if columns >= capacity:
            raise ValueError(f"{columns} tokens do not fit the model's {self.w.max_positions} positions")
        slab = self.pool.take(self.w, capacity, self.graphs)
        if self.slab is not None:
            n = len(self._ids)
            slab.keys[:, :, :n].copy_(self.slab.keys[:, :, :n])
            slab.values[:, :, :n].copy_(self.slab.values[:, :, :n])
            self._release.detach()
            self.pool.give(self.slab)
        self.slab = slab
        self._release = weakref.finalize(self, self.pool.give, slab)

    # -- one row -----------------------------------------------------------------------------------
    @torch.inference_mode()
    def _run(self, tokens, positions: torch.Tensor, among: torch.Tensor, visible, taps=(), logits=True) -> Forward:
        """k new tokens at `positions` [k] (host) seeing the cache (or what `visible` shows) and each other by
        `among` [k, k] (host bool)."""
        k, length = len(tokens), len(self._ids)
        self._room(length + k)
        graph = self.slab.graph(self.run_layers, k, length + k) if not taps and logits else None
        if graph is not None:
            out = Forward(graph([int(t) for t in tokens], positions, length, among, visible).clone())
        else:
            ids = to_device([int(t) for t in tokens], self.device)
            slots = torch.arange(length, length + k, device=self.device)
            prefix = torch.ones(k, length, dtype=torch.bool, device=self.device) if visible is None else \
                to_device(visible, self.device, torch.bool).reshape(-1, length).expand(k, -1)
            mask = torch.cat([prefix, to_device(among, self.device, torch.bool)], dim=1)
            scores, found = step(self.w, self.run_layers, ids, to_device(positions, self.device), slots, mask,
                                 self.slab.keys, self.slab.values, length + k, taps, logits)
            out = Forward(scores, found)
        self._pending = (length, k)
        self._ids.extend(int(t) for t in tokens)
        self.forwards += 1
        return out

    @torch.inference_mode()
    def prefill(self, ids: list[int]) -> torch.Tensor:
        if not ids:
            raise ValueError("prefill needs at least one token")
        self._ids = []
        n = len(ids)
        if self.chunked:  # on a GPU, chunks of 64 through the captured graphs: launching a whole forward's
            self._room(n)  # kernels from Python costs more than the prompt's arithmetic at this model size
            for start in range(0, n, PREFILL_CHUNK):
                logits = self.forward(ids[start:start + PREFILL_CHUNK]).logits
            return logits[-1]
        mask = torch.ones(n, n, dtype=torch.bool, device=self.device).tril()
        self._room(n)
        scores, _ = step(self.w, self.run_layers, to_device(list(ids), self.device), torch.arange(n, device=self.device),
                         torch.arange(n, device=self.device), mask, self.slab.keys, self.slab.values, n)
        self._ids = [int(t) for t in ids]
        self._pending = (0, n)
        return scores[-1]

    def forward(self, tokens, parents=None, *, positions=None, among=None, visible=None, taps=(), logits=True):
        if not tokens:
            raise ValueError("forward needs at least one token")
        taps = check(taps)
        k, length = len(tokens), len(self._ids)
        if among is None:
            parents = chain(k) if parents is None else [int(p) for p in parents]
            if len(parents) != k:
                raise ValueError("forward needs one parent per token")
            if parents[0] == -1 and all(p >= 0 for p in parents[1:]):
                shape = buffers([p - 1 for p in parents[1:]])  # built once per shape, on the host
                new, offsets = shape.among, shape.offsets
            else:
                new, offsets = ancestor_mask(parents), torch.tensor([d - 1 for d in depths(parents)])
            pos = offsets + length if positions is None else positions
        else:
            if isinstance(among, str):
                if among != "block":
                    raise ValueError("among is a bool [k, k] mask or 'block'")
                among = torch.ones(k, k, dtype=torch.bool)
                positions = list(range(length, length + k)) if positions is None else positions
            if positions is None:
                raise ValueError("a custom `among` mask needs explicit positions")
            new, pos = among, positions
        pos = torch.as_tensor(pos, dtype=torch.long).cpu()
        new = torch.as_tensor(new).to("cpu", torch.bool)
        if visible is not None:
            visible = torch.as_tensor(visible)
        return self._run(tokens, pos, new, visible, taps, logits)

    @torch.inference_mode()
    def greedy_run(self, token: int, n: int) -> list[int]:
        return self._bursts(token, n, False)[0]

    @torch.inference_mode()
    def greedy_chain(self, token: int, n: int) -> tuple[list[int], list[float]]:
        return self._bursts(token, n, True)

    def _bursts(self, token: int, n: int, probs: bool) -> tuple[list[int], list[float]]:
        """n greedy steps as bursts of 8, 4, 2 and 1 steps (one host round trip each: n = 7 is 4 + 2 + 1), or the
        base class's loop where no graph runs (the CPU)."""
        if self.slab is None or self.slab.graphs is None:
            return super().greedy_chain(token, n) if probs else (super().greedy_run(token, n), [])
        tokens, beliefs = [], []
        while len(tokens) < n:
            steps = next(s for s in (BURST, 4, 2, 1) if s <= n - len(tokens))
            length = len(self._ids)
            self._room(length + steps)
            burst = self.slab.burst(self.run_layers, length + steps, token, length, steps, probs)
            if burst is None:
                out = super().greedy_chain(token, n - len(tokens)) if probs else (
                    super().greedy_run(token, n - len(tokens)), [])
                return tokens + out[0], beliefs + out[1]
            got, p = burst(token, length)
            self._ids.extend([int(token)] + got[:-1])
            self._pending = (len(self._ids) - 1, 1)
            self.forwards += steps
            tokens += got
            beliefs += p
            token = got[-1]
        return tokens, beliefs

    def rounds_with(self, draft: Backend) -> bool:
        return isinstance(draft, FastBackend) and draft.device == self.device

    @torch.inference_mode()
    def greedy_rounds(self, draft: Backend, token: int, k: int, rounds: int, siblings: bool = False) -> list:
        """Greedy speculative rounds with a fast-backend draft on this device (rounds.py: one graph on a GPU, the
        same tensor code eagerly elsewhere)."""
        if not self.rounds_with(draft) or draft._ids != self._ids or not self._ids:
            raise ValueError("greedy_rounds needs a fast-backend draft on this device holding this row's tokens")
        length = len(self._ids)
        need = length + rounds * (k + 1) + (k if siblings else 0)  # the most columns the rounds can write
        self._room(need)
        draft._room(need)
        graphs = self.slab.graphs is not None and draft.slab.graphs is not None
        columns = bucket(need, self.slab.column_buckets) if graphs else need  # need < capacity: always a bucket
        if columns > draft.slab.capacity:
            draft._room(columns)
        key = ("rounds", id(draft.slab), id(draft.w), tuple(draft.run_layers), tuple(self.run_layers), k, rounds,
               columns, siblings)
        runner = self.slab.graphs.get(key) if graphs else None
        if runner is None:
            runner = GreedyRounds(self, draft, k, rounds, columns, graphs, self._ids[-1], token, length, siblings)
            if graphs:
                self.slab.graphs[key] = runner  # it holds the draft's slab, so the id in the key stays its own
        got = runner(self._ids[-1], token, length)
        fed = [int(token)]
        for r in got:
            fed += r.committed
        for backend, forwards in ((self, rounds), (draft, rounds * k)):
            backend._ids.extend(fed[:-1])  # the last round's token is the next one to feed
            backend._pending = (len(backend._ids) - 1, 1)
            backend.forwards += forwards
        return got

    @torch.inference_mode()
    def keep(self, rows: list[int], row: int = 0) -> None:
        base, k = self._pending
        rows = [int(r) for r in rows]
        if rows != list(range(len(rows))):
            src = to_device([base + r for r in rows], self.device)
            dst = torch.arange(base, base + len(rows), device=self.device)
            for cache in (self.slab.keys, self.slab.values):
                cache.index_copy_(2, dst, cache.index_select(2, src))
        self._ids = self._ids[:base] + [self._ids[base + r] for r in rows]
        self._pending = (base, len(rows))

    def rollback(self, length: int, row: int = 0) -> None:
        self._ids = self._ids[:length]

    # -- several rows: not here --------------------------------------------------------------------
    def prefill_rows(self, prompts):
        if len(prompts) == 1:
            return self.prefill(prompts[0])[None]
        raise ValueError("the fast backend holds one row: batches run on the HF backend (for_rows)")

    def forward_rows(self, tokens, parents=None, *, last=False):
        if len(tokens) != 1:
            raise ValueError("the fast backend holds one row: batches run on the HF backend (for_rows)")
        out = self.forward(tokens[0], parents[0] if parents else None).logits
        return [out[-1:] if last else out]

    def reorder(self, index: torch.Tensor) -> None:
        if index.tolist() != [0]:
            raise ValueError("the fast backend holds one row: beams run on the HF backend (for_rows)")

    def select(self, rows: list[int]) -> None:
        if list(rows) != [0]:
            raise ValueError("the fast backend holds one row")

    def for_rows(self) -> Backend:
        """An HF backend on the same weights, for batches of rows and beams."""
        from ..hf import HFBackend
        return HFBackend(self.base, self.layers)

    # -- new backends on the same weights ------------------------------------------------------------
    def fork(self) -> "FastBackend":
        return type(self)(self.base, self.layers, graphs=self.graphs, capacity=self.min_capacity)

    def view(self, layers: list[int]) -> "FastBackend":
        return FastBackend(self.base, sorted(int(i) for i in layers), graphs=self.graphs, capacity=self.min_capacity)

    def draft_on_cache(self, layers: list[int]) -> "CacheDraft":
        return CacheDraft(self, layers)

    def on(self, device: str, dtype: torch.dtype | None = None) -> Backend:
        from ..hf import HFBackend
        return HFBackend(self.base, self.layers).on(device, dtype)

    # -- the LM head -------------------------------------------------------------------------------
    @torch.inference_mode()
    def run_layer(self, layer: int, hidden: torch.Tensor, positions: list[int],
                  visible: torch.Tensor | None = None) -> torch.Tensor:
        length = len(self._ids)
        states = hidden.to(self.device, self.dtype)
        out = one_layer(self.w, layer, states, to_device(list(positions), self.device), self.slab.keys,
                        self.slab.values, length, None if visible is None else to_device(visible, self.device))
        return out.float()

    @torch.inference_mode()
    def head(self, hidden: torch.Tensor, vocab: torch.Tensor | None = None) -> torch.Tensor:
        weight = self.w.head if vocab is None else self.w.head[vocab.to(self.device)]
        return (hidden.to(weight.dtype) @ weight.T).float()

    @torch.inference_mode()
    def exit_logits(self, hidden: torch.Tensor, vocab: torch.Tensor | None = None) -> torch.Tensor:
        from .weights import rms_norm
        return self.head(rms_norm(hidden, self.w.norm, self.w.eps), vocab)


class CacheDraft:
    """Some of the owner's layers drafting on the owner's own static cache: draft entries go in the columns after
    the committed ones (they are the next tokens' columns anyway) and `finish` forgets them."""

    def __init__(self, owner: FastBackend, layers):
        self.owner = owner
        self.layers = sorted(int(i) for i in layers)
        self.forwards = 0
        self.runner = None

    def start(self) -> None:
        owner = self.owner
        runner = FastBackend(owner.base, self.layers, graphs=owner.graphs)
        runner.slab, runner._ids = owner.slab, list(owner.tokens())
        runner.min_capacity = owner.slab.capacity
        self.runner = runner

    def step(self, token: int, vocab: torch.Tensor | None = None) -> torch.Tensor:
        self.forwards += 1
        if self.runner.slab.capacity <= len(self.runner._ids) + 1:  # no room on the owner's slab: stop here
            raise ValueError("the draft ran out of cache columns")
        if vocab is None:
            return self.runner.forward([token]).logits[-1]
        normed = self.runner.forward([token], logits=False, taps=("hidden",)).hidden[-1]
        return self.runner.head(normed[-1:], vocab)[0]

    def finish(self) -> None:
        self.runner = None
