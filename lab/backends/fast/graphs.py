"""Static KV caches and the CUDA graphs captured over them, pooled per model.

A `Slab` is one static cache (keys and values [layer, kv_heads, capacity, head_dim]) with the graphs captured on
it: one per bucket of new-token counts (1 for decoding, 2..64 for chains and trees) and of visible columns, each
reading its inputs from static buffers. Capture happens once per bucket; any prompt then replays it, whatever its
length. A backend borrows a slab from its model's pool and gives it back when it is dropped, so forks made per
call reuse slabs and graphs instead of allocating a cache each time.
"""
from __future__ import annotations

import threading

import torch

from .weights import Weights, step

NEW_TOKENS = (1, 2, 4, 8, 16, 32, 64)


def bucket(n: int, sizes) -> int | None:
    return next((s for s in sizes if s >= n), None)


class Graph:
    """`step` through `layers`, captured for k new tokens over `columns` visible columns of one slab."""

    def __init__(self, slab: "Slab", layers: list[int], k: int, columns: int):
        w, device = slab.weights, slab.keys.device
        self.ids = torch.zeros(k, dtype=torch.long, device=device)
        self.positions = torch.zeros(k, dtype=torch.long, device=device)
        self.scratch = slab.capacity - 1  # padding rows write here; real tokens never use the last column
        self.slots = torch.full((k,), self.scratch, dtype=torch.long, device=device)
        self.mask = torch.zeros(k, columns, dtype=torch.bool, device=device)
        self.mask[:, 0] = True
        run = lambda: step(w, layers, self.ids, self.positions, self.slots, self.mask, slab.keys,  # noqa: E731
                           slab.values, columns)[0]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(2):  # warm up (lazy inits, kernel selection) outside the graph
                run()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: PEARL's draft thread may capture while the target's thread runs (or the other way round);
        # the default ("global") would forbid the other thread's allocations and syncs during the capture
        with torch.inference_mode(), torch.cuda.graph(self.graph, pool=slab.memory, capture_error_mode="thread_local"):
            self.logits = run()

    def __call__(self, ids, positions, slots, mask) -> torch.Tensor:
        k = ids.shape[0]
        self.ids[:k].copy_(ids)
        self.positions[:k].copy_(positions)
        self.slots[:k].copy_(slots)
        self.mask[:k].copy_(mask)
        if k < self.ids.shape[0]:  # padding rows write to the scratch column; their outputs are never read
            self.slots[k:].fill_(self.scratch)
        self.graph.replay()
        return self.logits[:k]


class Slab:
    """One static cache of every layer of a model (a layer view writes only its layers) and its graphs."""

    def __init__(self, weights: Weights, capacity: int, graphs: bool):
        self.weights, self.capacity = weights, capacity
        shape = (len(weights.layers), weights.kv_heads, capacity, weights.head_dim)
        self.keys = torch.zeros(shape, dtype=weights.dtype, device=weights.device)
        self.values = torch.zeros_like(self.keys)
        self.graphs: dict[tuple, Graph] | None = {} if graphs else None
        self.asked: dict[tuple, int] = {}  # how often each graph was asked for before it was captured
        self.memory = torch.cuda.graph_pool_handle() if graphs else None
        self.column_buckets = [c for c in (2 ** i for i in range(8, 20)) if c < capacity] + [capacity]

    def graph(self, layers: list[int], k: int, columns: int) -> Graph | None:
        """The graph for k new tokens seeing `columns` columns, or None (run eagerly) when none fits or when it was
        not asked for before: a layer set used once (CLaSp's, DEL's exits) is not worth a capture."""
        kb, cb = bucket(k, NEW_TOKENS), bucket(columns, self.column_buckets)
        if self.graphs is None or kb is None or cb is None:
            return None
        key = (tuple(layers), kb, cb)
        if key not in self.graphs:
            self.asked[key] = self.asked.get(key, 0) + 1
            if self.asked[key] < 3:
                return None
            self.graphs[key] = Graph(self, layers, kb, cb)
        return self.graphs[key]


class Pool:
    """Free slabs of one model by capacity; `take` reuses one or makes one, `give` returns it."""

    def __init__(self):
        self.free: dict[tuple, list[Slab]] = {}
        self.lock = threading.Lock()

    def take(self, weights: Weights, capacity: int, graphs: bool) -> Slab:
        with self.lock:
            if self.free.get((capacity, graphs)):
                return self.free[(capacity, graphs)].pop()
        return Slab(weights, capacity, graphs)

    def give(self, slab: Slab) -> None:
        with self.lock:
            self.free.setdefault((slab.capacity, slab.graphs is not None), []).append(slab)
