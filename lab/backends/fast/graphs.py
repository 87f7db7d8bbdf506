"""Static KV caches and the CUDA graphs captured over them, pooled per model.

A `Slab` is one static cache (keys and values [layer, kv_heads, capacity, head_dim]) with the graphs captured on
it: one per bucket of new-token counts (1 for decoding, 2..128 for chains and trees) and of visible columns, each
reading its inputs from static buffers. Capture happens once per bucket; any prompt then replays it, whatever its
length. A backend borrows a slab from its model's pool and gives it back when it is dropped, so forks made per
call reuse slabs and graphs instead of allocating a cache each time.
"""
from __future__ import annotations

import threading

import torch

from ...kernels import graph_counters, triton_ready
from ...kernels.dllm_commit import commit_rows
from .weights import Weights, step

NEW_TOKENS = (1, 2, 4, 8, 16, 32, 64, 128)  # 128: token recycling's and SAM's 80-node static tree
BURST = 8  # the most greedy decode steps in one `Burst` graph (runs of 1, 2, 4 and 8 steps)
ONE = torch.ones(1, 1, dtype=torch.bool)


def bucket(n: int, sizes) -> int | None:
    return next((s for s in sizes if s >= n), None)


class Inputs:
    """A graph's static inputs for k new tokens over `columns` cache columns.

    Ids, positions, cache slots, the cache length and the count of columns every row sees (`visible`) travel in one
    (pinned) host buffer, the [k, k] tree mask in another, each copied to the device without a host sync; `mask()`
    builds the [k, columns] attention mask on the device from them (the first `length` columns minus those a
    `visible` argument hid, then the tree over the new columns), so it can run inside the graph. Rows past the n
    real tokens are padding: they write to the `scratch` column and their outputs are never read."""

    def __init__(self, k: int, columns: int, scratch: int, device: torch.device):
        self.k, self.columns, self.scratch = k, columns, scratch
        pinned = torch.device(device).type == "cuda"
        self.host = torch.zeros(3 * k + 2, dtype=torch.long)
        self.host_tree = torch.zeros(k, k, dtype=torch.bool)
        if pinned:
            self.host, self.host_tree = self.host.pin_memory(), self.host_tree.pin_memory()
        self.host[2 * k:3 * k] = scratch
        self.host[3 * k:] = 1  # until the first write (warm-up, capture) rows see column 0: no row sees nothing
        self.numbers, self.tree_numbers = self.host.numpy(), self.host_tree.numpy()
        self.tree_n = -1  # the n of the tree mask on the device (-1: none copied yet)
        self.meta = self.host.to(device)
        self.tree = torch.zeros(k, k, dtype=torch.bool, device=device)
        self.hide = torch.zeros(k, columns, dtype=torch.bool, device=device)
        self.hiding = False
        self.copied = torch.cuda.Event() if pinned else None
        self.device = torch.device(device)
        if pinned and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.cols = torch.arange(columns, device=device)

    @property
    def ids(self):
        return self.meta[:self.k]

    @property
    def positions(self):
        return self.meta[self.k:2 * self.k]

    @property
    def slots(self):
        return self.meta[2 * self.k:3 * self.k]

    @property
    def visible(self) -> torch.Tensor:
        """[1]: how many leading columns every row sees (`length`, or 0 while a `visible` argument hides some):
        the attention kernel reads no mask there."""
        return self.meta[3 * self.k + 1:]

    def mask(self) -> torch.Tensor:
        length, k = self.meta[3 * self.k], self.k
        offset = self.cols - length
        new = (offset >= 0) & (offset < k)
        return ((self.cols < length) & ~self.hide) | (self.tree[:, offset.clamp(0, k - 1)] & new)

    def write(self, tokens: list[int], positions: torch.Tensor, length: int, among: torch.Tensor,
              visible: torch.Tensor | None) -> None:
        """n new tokens at host `positions` [n] into cache columns length..length+n-1, seeing the first `length`
        columns (or those `visible` [length] / [n, length] shows) and each other by `among` [n, n] (host bool)."""
        n, k = len(tokens), self.k
        if self.copied is not None:
            self.copied.synchronize()  # the last call's copies have left the pinned buffers
        numbers = self.numbers
        numbers[:n] = tokens
        numbers[n:k] = 0
        numbers[k:k + n] = positions.numpy()
        numbers[k + n:2 * k] = 0
        numbers[2 * k:2 * k + n] = range(length, length + n)
        numbers[2 * k + n:3 * k] = self.scratch
        numbers[3 * k] = length
        numbers[3 * k + 1] = length if visible is None else 0
        self.meta.copy_(self.host, non_blocking=True)
        tree = among.numpy()
        if n != self.tree_n or not (self.tree_numbers[:n, :n] == tree).all():  # a new shape: copy it (chains and
            self.tree_numbers[:] = False  # decode steps repeat theirs)
            self.tree_numbers[:n, :n] = tree
            self.tree.copy_(self.host_tree, non_blocking=True)
            self.tree_n = n
        if self.copied is not None:  # the stream named by an indexed device: torch.cuda.current_stream() without
            self.copied.record(torch.cuda.current_stream(self.device))  # one asks NVML for the device (40 us a call)
        if visible is not None:
            self.hide[:n, :length] = ~visible.to(self.hide.device, torch.bool).reshape(-1, length)
            self.hiding = True
        elif self.hiding:
            self.hide.zero_()
            self.hiding = False


def burst_inputs(meta: torch.Tensor, cols: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A burst's steps from one token's inputs `meta` ([id, position, slot, length]): each step's (position, cache
    slot, length) [steps, 3], `offsets` [steps, 1] further than the first, and its mask [steps, columns], the columns
    up to its own (nothing hidden). Two kernels for the whole burst, instead of a copy, an add and the general mask's
    eleven small kernels every step."""
    ladder = meta[1:4][None] + offsets
    return ladder, cols[None] <= ladder[:, 2:3]


def argmax_belief(logits: torch.Tensor, live: torch.Tensor, fused: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One row's argmax [1] and its softmax probability [] from logits [1, V], on the device. `fused`: one Triton
    kernel over the row split in blocks (`commit_rows`; torch's argmax, max and logsumexp are 4 reductions, ~31 us
    on the H200 for the default model's row; float32 sums: the probability may differ from exp(max - logsumexp) in
    the last bits). `live` is a [1] True tensor the caller keeps (a graph reads it)."""
    if fused:
        token, belief, _ = commit_rows(logits, live)
        return token[:1], belief[0]
    row = logits[0].float()
    return row.argmax().view(1), (row.max() - row.logsumexp(-1)).exp()


def pick(w: Weights, out, live: torch.Tensor, fused: bool, probs: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The last row's greedy token [1] (a trimmed head's column mapped to its token) and its probability [] (None
    where none was asked for and none computed) from a step's output: its (tokens, probabilities or None) with
    `w.fused_ends` (`logits=head_mode(w, probs)`), else its logits."""
    if w.fused_ends:
        return out[0][-1:], (None if out[1] is None else out[1][-1])
    if probs:
        token, belief = argmax_belief(out[-1:], live, fused)
    else:
        token, belief = out[-1].argmax().view(1), None
    return (token if w.vocab is None else w.vocab[token]), belief


def head_mode(w: Weights, probs: bool) -> str:
    """The `logits` argument of a greedy step's `step` call: with `w.fused_ends` "last" (the last row's argmax and
    its probability) or, without `probs`, "tokens" (argmaxes alone: no probability where the kernel after the last
    layer cannot run), else the trimmed head's own rows."""
    return ("last" if probs else "tokens") if w.fused_ends else "rows"


CAPTURING = threading.Lock()  # one capture at a time in this process
_ONE_OFFS = [0]  # static caches made and graphs captured in this process (`one_offs`)
_ONE_OFFS_LOCK = threading.Lock()


def one_offs() -> int:
    """How many one-off allocations (a static cache made, a graph captured) this process has made so far: memory
    that stays allocated after the call that made it, which a per-step memory budget (SpecMemo) must not count as
    the step's own."""
    return _ONE_OFFS[0]


def capture(run, pool, before=lambda: None):
    """(graph, its output): `run` warmed up twice on a side stream (lazy inits, kernel selection, Triton's compiles),
    each time after `before` (which writes the inputs: nothing may sync during the capture), then captured on that
    same stream into a graph drawing on the slab's memory `pool`.

    Threads (PEARL's and SpecBranch's drafts beside the target) may ask for graphs at the same time: without a
    stream of its own a capture goes to torch's one default capture stream, shared by every thread, and two
    concurrent captures would interleave their kernels into each other's graphs (seen on the H200: SpecBranch left
    greedy's tokens in float32 and hit an illegal address). So each capture has its own stream, and captures take
    turns."""
    with CAPTURING:
        with _ONE_OFFS_LOCK:
            _ONE_OFFS[0] += 1
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(2):
                before()
                run()
        graph = torch.cuda.CUDAGraph()
        # thread_local: the other thread may launch and allocate on its own stream while this one captures (the
        # default, "global", would forbid that). The graph's kernel counters are zeroed before the capture, not in it.
        with graph_counters(torch.device("cuda", torch.cuda.current_device())) as graph.counters, \
                torch.inference_mode(), torch.cuda.graph(graph, pool=pool, stream=stream,
                                                         capture_error_mode="thread_local"):
            out = run()
        torch.cuda.current_stream().wait_stream(stream)
    return graph, out


class Graph:
    """`step` through `layers`, captured for k new tokens over `columns` visible columns of one slab, reading its
    `Inputs`: a replay costs the host two copies and a launch."""

    def __init__(self, slab: "Slab", layers: list[int], k: int, columns: int):
        w = slab.weights
        self.inputs = inputs = Inputs(k, columns, slab.capacity - 1, slab.keys.device)
        self.graph, self.logits = capture(lambda: step(w, layers, inputs.ids, inputs.positions, inputs.slots,
                                                       inputs.mask(), slab.keys, slab.values, columns,
                                                       visible=inputs.visible)[0], slab.memory)

    def __call__(self, tokens: list[int], positions: torch.Tensor, length: int, among: torch.Tensor,
                 visible: torch.Tensor | None) -> torch.Tensor:
        """Logits [n, V] of the n new tokens (arguments as `Inputs.write`)."""
        self.inputs.write(tokens, positions, length, among, visible)
        self.graph.replay()
        return self.logits[:len(tokens)]


class Burst:
    """`steps` greedy decode steps in one graph, each step's argmax fed to the next on the device: the host launches
    once and reads the tokens back once per burst instead of once per token. The same tokens as `steps` calls of
    `argmax(decode(token))`; with `probs`, also each token's softmax probability (a draft chain's beliefs).
    Captured at the first call, whose own columns the warm-up runs write (with the very values the replay then
    writes again): no other column of a cache in use is touched."""

    def __init__(self, slab: "Slab", layers: list[int], columns: int, token: int, length: int, steps: int = BURST,
                 probs: bool = False):
        w = slab.weights
        self.inputs = inputs = Inputs(1, columns, slab.capacity - 1, slab.keys.device)

        # tensors the graph reads are kept by the burst: freed with `run`'s closure after the capture, their memory
        # would go to other tensors and the replays would read those (seen on the H200: cache slots out of range)
        self.live = live = torch.ones(1, dtype=torch.bool, device=slab.keys.device)
        self.offsets = offsets = torch.arange(steps, device=slab.keys.device)[:, None]
        fused = probs and triton_ready(live)

        def run():
            tokens, beliefs = [], []
            ladder, masks = burst_inputs(inputs.meta, inputs.cols, offsets)
            ids = inputs.ids
            for i in range(steps):  # step i: the last argmax at the next position, cache column and length
                out = step(w, layers, ids, ladder[i, :1], ladder[i, 1:2], masks[i:i + 1], slab.keys, slab.values,
                           columns, logits=head_mode(w, probs), visible=inputs.visible)[0]
                ids, belief = pick(w, out, live, fused, probs)
                if probs:
                    beliefs.append(belief)
                tokens.append(ids[0])
            if not probs:
                return torch.stack(tokens)
            return torch.cat([torch.stack(tokens).double(), torch.stack(beliefs).double()])  # one readback

        self.steps, self.probs = steps, probs
        self.graph, self.out = capture(run, slab.memory, lambda: self._write(token, length))

    def _write(self, token: int, length: int) -> None:
        self.inputs.write([int(token)], torch.tensor([length]), length, ONE, None)

    def __call__(self, token: int, length: int) -> tuple[list[int], list[float]]:
        """The argmax tokens after feeding `token` at cache column `length`, then each argmax in turn (and their
        probabilities, or [] without `probs`)."""
        self._write(token, length)
        self.graph.replay()
        out = self.out.tolist()
        if not self.probs:
            return out, []
        return [int(t) for t in out[:self.steps]], out[self.steps:]


class Slab:
    """One static cache of every layer of a model (a layer view writes only its layers) and its graphs."""

    def __init__(self, weights: Weights, capacity: int, graphs: bool):
        self.weights, self.capacity = weights, capacity
        with _ONE_OFFS_LOCK:
            _ONE_OFFS[0] += 1
        shape = (len(weights.layers), weights.kv_heads, capacity, weights.head_dim)
        self.keys = torch.zeros(shape, dtype=weights.dtype, device=weights.device)
        self.values = torch.zeros_like(self.keys)
        self.graphs: dict[tuple, Graph | Burst] | None = {} if graphs else None
        self.asked: dict[tuple, int] = {}  # how often each graph was asked for before it was captured
        self.memory = torch.cuda.graph_pool_handle() if graphs else None
        self.column_buckets = [c for c in (2 ** i for i in range(8, 20)) if c < capacity] + [capacity]

    def graph(self, layers: list[int], k: int, columns: int) -> Graph | None:
        """The graph for k new tokens seeing `columns` columns, or None (run eagerly) when none fits or, for a subset
        of the layers, when it was not asked for twice before: a layer set used once (CLaSp's, DEL's exits) is not
        worth a capture. The whole model's graphs are captured at the first ask."""
        kb, cb = bucket(k, NEW_TOKENS), bucket(columns, self.column_buckets)
        if self.graphs is None or kb is None or cb is None:
            return None
        key = (tuple(layers), kb, cb)
        if key not in self.graphs:
            self.asked[key] = self.asked.get(key, 0) + 1
            if self.asked[key] < (1 if len(layers) == len(self.weights.layers) else 3):
                return None
            self.graphs[key] = Graph(self, layers, kb, cb)
        return self.graphs[key]

    def burst(self, layers: list[int], columns: int, token: int, length: int, steps: int = BURST,
              probs: bool = False) -> Burst | None:
        """The burst graph of `steps` steps over `columns` columns (captured now, on this call's token and length,
        if new), or None on the CPU or when no column bucket fits."""
        cb = bucket(columns, self.column_buckets)
        if self.graphs is None or cb is None:
            return None
        key = ("burst", tuple(layers), cb, steps, probs)
        if key not in self.graphs:
            self.graphs[key] = Burst(self, layers, cb, token, length, steps, probs)
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
