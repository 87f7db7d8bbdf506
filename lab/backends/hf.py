"""The HF backend: any transformers causal LM, on the CPU or a GPU, one row or B ragged rows of a DynamicCache.

The reference backend. Row b's tokens sit in cache columns `slots[b]`, in order. While every row holds the same
columns in order (one row always, beams while they grow in step) the cache is dense and a causal chain runs
with no mask at all: exactly the path transformers' `generate` runs. Otherwise each new token gets a mask over
the columns it may see: its row's valid slots (or the `visible` part of them) and its ancestors among the new
tokens. After a ragged acceptance `keep(rows, row=b)` only forgets the rejected columns of row b (with one row
they are squeezed out at once); holes are gathered away once `compact_after` columns could be saved.
"""
from __future__ import annotations

import copy
import inspect

import torch
from torch import nn

from ..tree import ancestor_mask, buffers, chain, depths
from . import taps as tapping
from .base import Backend, Description, Forward
from .layers import (copy_model, decoder_body, execution_device, final_norm, kv_bytes_per_token, layer_list,
                     layer_view)
from .transfer import to_device


class HFBackend(Backend):
    def __init__(self, model: nn.Module, layers: list[int] | None = None, *, compact_after: int = 32):
        self.base = model
        self.layers = sorted(int(i) for i in layers) if layers is not None else None
        self.model = layer_view(model, self.layers) if layers is not None else model
        self.device, self.dtype = execution_device(model), next(model.parameters()).dtype  # (a device_map's first)
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self.num_layers = model.config.get_text_config().num_hidden_layers
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self.compact_after = compact_after
        self.forwards = 0
        self.reset(1)

    # -- state -------------------------------------------------------------------------------------
    def reset(self, rows: int = 1) -> None:
        from transformers import DynamicCache

        self.cache = DynamicCache()
        self._ids: list[list[int]] = [[] for _ in range(rows)]
        self.slots: list[list[int]] = [[] for _ in range(rows)]  # cache columns of row b's tokens, in order
        self.columns = 0
        self._pending: list[tuple[int, list[int]]] = [(0, []) for _ in range(rows)]  # (length before, new columns)

    @property
    def rows(self) -> int:
        return len(self._ids)

    @property
    def weights(self) -> nn.Module:
        return self.base

    def tokens(self, row: int = 0) -> list[int]:
        return self._ids[row]

    def describe(self) -> Description:
        config = self.base.config.get_text_config()
        layers = len(self.layers) if self.layers is not None else self.num_layers
        return Description(
            name=str(getattr(self.base, "name_or_path", "") or type(self.base).__name__),
            architecture=type(self.base).__name__, layers=layers, vocab_size=self.vocab_size,
            hidden_size=config.hidden_size, dtype=str(self.dtype).removeprefix("torch."), device=str(self.device),
            kv_bytes_per_token=kv_bytes_per_token(self.base, layers, self.dtype),
            max_positions=getattr(config, "max_position_embeddings", None),
            layer_subset=tuple(self.layers) if self.layers is not None else None, backend="hf")

    def _dense(self) -> bool:
        """Every row holds the columns 0 .. columns-1 in order (so a causal chain needs no mask)."""
        return all(len(s) == self.columns for s in self.slots)

    # -- the model call ------------------------------------------------------------------------------
    def _mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """[B, 1, k, columns + k] bool (sdpa) or additive float (eager and others)."""
        allowed = to_device(allowed, self.device, torch.bool)
        if self.model.config._attn_implementation == "sdpa":
            return allowed
        out = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device)
        return out.masked_fill(~allowed, torch.finfo(self.dtype).min)

    @torch.inference_mode()
    def _call(self, x: torch.Tensor, positions: torch.Tensor, allowed: torch.Tensor | None, *, head: str,
              taps: tuple[str, ...] = (), wanted: torch.Tensor | None = None) -> tuple[torch.Tensor | None, dict]:
        """Run the model on new tokens x [B, k]. head: 'all' (logits [B, k, V]), 'last' ([B, 1, V]), 'wanted'
        (the LM head on the rows `wanted` [B, k] only: [N, V]) or 'none'."""
        eager = "attentions" in taps
        with tapping.eager_attention(self.model, eager), tapping.hooked(self.model, taps) as hooked:
            kwargs = dict(input_ids=x, position_ids=positions, use_cache=True,
                          attention_mask=None if allowed is None else self._mask(allowed),
                          output_hidden_states="hidden" in taps or head in ("none", "wanted"),
                          **{self._cache_arg: self.cache})
            if eager:
                kwargs["output_attentions"] = True
            if head in ("all", "last"):
                out = self.model(**kwargs, logits_to_keep=1 if head == "last" else 0)
                logits = out.logits.float().to(self.device)  # a device_map may end on another device
            else:
                out = decoder_body(self.model)(**kwargs)
                logits = None
                if head == "wanted":
                    logits = self.model.get_output_embeddings()(out.last_hidden_state[to_device(wanted, self.device, torch.bool)]).float()
        found = {}
        if "hidden" in taps:
            found["hidden"] = tuple(out.hidden_states)
        elif head == "none":
            found["hidden"] = (out.hidden_states[-1],)
        if eager:
            found["attentions"] = tuple(out.attentions)
        found.update({name: tuple(values) for name, values in hooked.items()})
        return logits, found

    def _append(self, rows: list[list[int]], k: int) -> None:
        """Record row b's new tokens in columns columns .. columns + len - 1 (padding takes the rest)."""
        for b, row in enumerate(rows):
            new = list(range(self.columns, self.columns + len(row)))
            self._pending[b] = (len(self._ids[b]), new)
            self.slots[b].extend(new)
            self._ids[b].extend(int(t) for t in row)
        self.columns += k
        self.forwards += 1

    # -- one row -----------------------------------------------------------------------------------
    def prefill(self, ids: list[int]) -> torch.Tensor:
        if not ids:
            raise ValueError("prefill needs at least one token")
        out = self.prefill_rows([list(ids)])[0]
        return out

    def forward(self, tokens: list[int], parents: list[int] | None = None, *, positions: list[int] | None = None,
                among: torch.Tensor | str | None = None, visible: torch.Tensor | None = None,
                taps: tuple[str, ...] = (), logits: bool = True) -> Forward:
        if self.rows != 1:
            raise ValueError(f"forward is for one row; this backend holds {self.rows}: use forward_rows")
        if not tokens:
            raise ValueError("forward needs at least one token")
        taps = tapping.check(taps)
        k, length = len(tokens), self.length
        if self.columns != length:
            self._compact()
        if among is None:
            parents = chain(k) if parents is None else [int(p) for p in parents]
            if len(parents) != k:
                raise ValueError("forward needs one parent per token")
            is_chain = parents == chain(k)
            if positions is None:
                shape = buffers(parents[1:] and [p - 1 for p in parents[1:]], self.device) \
                    if parents[0] == -1 and all(p >= 0 for p in parents[1:]) else None
                offsets = shape.offsets if shape is not None else to_device([d - 1 for d in depths(parents)], self.device)
                pos = (offsets + length)[None]
            else:
                pos = to_device([positions], self.device)
            new = shape.among if (positions is None and shape is not None) else ancestor_mask(parents)
        else:
            is_chain = False
            if isinstance(among, str):
                if among != "block":
                    raise ValueError("among is a bool [k, k] mask or 'block'")
                among = torch.ones(k, k, dtype=torch.bool)
            if positions is None:
                if among.all():
                    positions = list(range(length, length + k))
                else:
                    raise ValueError("a custom `among` mask needs explicit positions")
            pos = to_device([positions], self.device)
            new = among.to(torch.bool)
        if is_chain and visible is None:
            allowed = None  # the plain causal path
        else:
            prefix = torch.ones(k, length, dtype=torch.bool, device=self.device) if visible is None else \
                to_device(visible, self.device, torch.bool).reshape(-1, length).expand(k, -1)
            allowed = torch.cat([prefix, to_device(new, self.device)], dim=1)[None, None]
        x = to_device([[int(t) for t in tokens]], self.device)
        out, found = self._call(x, pos, allowed, head="all" if logits else "none", taps=taps)
        self._append([tokens], k)
        found = {name: tuple(t[0] for t in values) for name, values in found.items()}
        return Forward(out[0] if out is not None else None, found)

    def keep(self, rows: list[int], row: int = 0) -> None:
        base, new = self._pending[row]
        rows = [int(r) for r in rows]
        self.slots[row] = self.slots[row][:base] + [new[r] for r in rows]
        self._ids[row] = self._ids[row][:base] + [self._ids[row][base + r] for r in rows]
        self._pending[row] = (base, [new[r] for r in rows])
        if self.rows == 1 and self.slots[0] != list(range(len(self.slots[0]))):
            self._compact()
        else:
            self._crop()

    def rollback(self, length: int, row: int = 0) -> None:
        if length < len(self._ids[row]):
            self.slots[row] = self.slots[row][:length]
            self._ids[row] = self._ids[row][:length]
            self._crop()

    # -- several rows ------------------------------------------------------------------------------
    def prefill_rows(self, prompts: list[list[int]]) -> torch.Tensor:
        if not prompts or any(not p for p in prompts):
            raise ValueError("prefill needs at least one token per row")
        self.reset(len(prompts))
        logits = self.forward_rows(prompts, last=True)
        self.forwards -= 1  # the prefill is not counted
        return torch.stack([row[-1] for row in logits])

    def forward_rows(self, tokens: list[list[int]], parents: list[list[int] | None] | None = None, *,
                     last: bool = False) -> list[torch.Tensor]:
        if len(tokens) != self.rows:
            raise ValueError(f"forward_rows needs tokens for each of the {self.rows} rows")
        sizes = [len(t) for t in tokens]
        k = max(sizes, default=0)
        if k == 0:
            return [torch.empty(0, self.vocab_size, device=self.device) for _ in tokens]
        if self.columns - max(self.lengths) >= self.compact_after:
            self._compact()
        trees = []
        for b, row in enumerate(tokens):
            par = chain(len(row)) if parents is None or parents[b] is None else [int(p) for p in parents[b]]
            if len(par) != len(row):
                raise ValueError("forward needs one parent per token")
            trees.append(par)
        plain = self._dense() and all(n == k and par == chain(k) for n, par in zip(sizes, trees))
        x = torch.zeros(self.rows, k, dtype=torch.long)
        positions = torch.zeros(self.rows, k, dtype=torch.long)
        for b, (row, par) in enumerate(zip(tokens, trees)):
            if row:
                x[b, :len(row)] = torch.tensor([int(t) for t in row])
                positions[b, :len(row)] = torch.tensor(depths(par)) + len(self._ids[b]) - 1
        allowed = None if plain else self._ragged_mask(trees, k)
        x, positions = to_device(x, self.device), to_device(positions, self.device)
        if last and len(set(sizes)) == 1:
            out, _ = self._call(x, positions, allowed, head="last")
            per_row = [out[b] for b in range(self.rows)]
        elif last or len(set(sizes)) > 1:  # the LM head on the wanted rows only (padding skips it)
            wanted = torch.zeros(self.rows, k, dtype=torch.bool)
            for b, n in enumerate(sizes):
                wanted[b, n - 1 if last else 0:n] = True
            out, _ = self._call(x, positions, allowed, head="wanted", wanted=wanted)
            per_row = list(out.split(wanted.sum(1).tolist()))
        else:
            out, _ = self._call(x, positions, allowed, head="all")
            per_row = [out[b] for b in range(self.rows)]
        self._append(tokens, k)
        return per_row

    def _ragged_mask(self, trees: list[list[int]], k: int) -> torch.Tensor:
        """[B, 1, k, columns + k]: row b's new token i sees row b's valid slots and its ancestors."""
        L = self.columns
        allowed = torch.zeros(self.rows, k, L + k, dtype=torch.bool)
        for b, par in enumerate(trees):
            n = len(par)
            if n and self.slots[b]:
                allowed[b, :n, self.slots[b]] = True
            if n:
                allowed[b, :n, L:L + n] = ancestor_mask(par)
            pad = torch.arange(n, k)
            allowed[b, pad, L + pad] = True  # padding attends to itself only: finite values, never seen
        return allowed[:, None]

    def reorder(self, index: torch.Tensor) -> None:
        index = index.to(torch.long)
        self.cache.reorder_cache(index.to(self.device))
        order = index.tolist()
        self._ids = [list(self._ids[i]) for i in order]
        self.slots = [list(self.slots[i]) for i in order]
        self._pending = [self._pending[i] for i in order]

    def select(self, rows: list[int]) -> None:
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        self._apply(lambda t: t.index_select(0, index))
        self._ids = [self._ids[r] for r in rows]
        self.slots = [self.slots[r] for r in rows]
        self._pending = [self._pending[r] for r in rows]
        self._crop()

    # -- cache surgery -------------------------------------------------------------------------------
    def _apply(self, fn) -> None:
        for layer in self.cache.layers:
            if getattr(layer, "keys", None) is not None and layer.keys.numel():
                layer.keys, layer.values = fn(layer.keys), fn(layer.values)

    def _crop(self) -> None:
        """Cut cache columns that no row uses any more (the common case after a rollback)."""
        used = max((s[-1] + 1 for s in self.slots if s), default=0)
        if used < self.columns:
            self._apply(lambda t: t[..., :used, :])
            self.columns = used

    def _compact(self) -> None:
        """Move each row's valid slots to columns 0 .. length-1 (one gather per layer); holes disappear."""
        width = max(self.lengths, default=0)
        if self.rows == 1:
            index = torch.tensor(self.slots[0], dtype=torch.long, device=self.device)
            self._apply(lambda t: t.index_select(-2, index.to(t.device)))
        else:
            index = torch.zeros(self.rows, width, dtype=torch.long)  # shorter rows point their padding at column 0
            for b, slots in enumerate(self.slots):
                index[b, :len(slots)] = torch.tensor(slots, dtype=torch.long)
            index = index.to(self.device)[:, None, :, None]
            self._apply(lambda t: t.gather(2, index.to(t.device).expand(t.shape[0], t.shape[1], width, t.shape[3])))
        self.slots = [list(range(len(s))) for s in self.slots]
        self._pending = [(len(s), []) for s in self.slots]
        self.columns = width

    # -- new backends on the same weights ------------------------------------------------------------
    def fork(self) -> "HFBackend":
        return type(self)(self.base, self.layers, compact_after=self.compact_after)

    def view(self, layers: list[int]) -> "HFBackend":
        return HFBackend(self.base, sorted(int(i) for i in layers), compact_after=self.compact_after)

    def draft_on_cache(self, layers: list[int]) -> "CacheView":
        return CacheView(self, layers)

    def on(self, device: str, dtype: torch.dtype | None = None) -> "HFBackend":
        return HFBackend(copy_model(self.model, device, dtype))

    # -- one decoder layer on given states ----------------------------------------------------------
    @torch.inference_mode()
    def run_layer(self, layer: int, hidden: torch.Tensor, positions: list[int],
                  visible: torch.Tensor | None = None) -> torch.Tensor:
        if self.rows != 1:
            raise ValueError("run_layer needs a one-row backend")
        if self.columns != self.length:
            self._compact()
        k, length = hidden.shape[0], self.length
        prefix = torch.ones(k, length, dtype=torch.bool) if visible is None else \
            to_device(visible, "cpu", torch.bool).reshape(-1, length).expand(k, -1)
        allowed = torch.cat([prefix, torch.eye(k, dtype=torch.bool)], dim=1)[None, None]
        if not hasattr(self, "_single_layers"):
            self._single_layers: dict[int, nn.Module] = {}
        if layer not in self._single_layers:
            self._single_layers[layer] = layer_view(self.base, [layer])
        view = self._single_layers[layer]
        scratch = copy.copy(self.cache)  # the layer appends its keys and values to copies: the cache stays as it is
        scratch.layers = [copy.copy(entry) for entry in self.cache.layers]
        states = hidden.to(self.device, self.dtype)[None]
        found = []

        def given(module, args, kwargs):  # the layer's input: the given states, not the embeddings
            if args:
                return (states, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": states}

        def output(module, args, out):
            found.append(out[0] if isinstance(out, tuple) else out)

        block = layer_list(view)[0]
        handles = [block.register_forward_pre_hook(given, with_kwargs=True), block.register_forward_hook(output)]
        try:
            decoder_body(view)(input_ids=torch.zeros(1, k, dtype=torch.long, device=self.device),
                               position_ids=to_device([positions], self.device), attention_mask=self._mask(allowed),
                               use_cache=True, **{self._cache_arg: scratch})
        finally:
            for handle in handles:
                handle.remove()
        return found[0][0].float()

    # -- the LM head -------------------------------------------------------------------------------
    @torch.inference_mode()
    def head(self, hidden: torch.Tensor, vocab: torch.Tensor | None = None) -> torch.Tensor:
        weight = self.model.get_output_embeddings().weight
        if vocab is not None:
            weight = weight[vocab.to(weight.device)]
        return (hidden.to(weight.dtype) @ weight.T).float()

    @torch.inference_mode()
    def exit_logits(self, hidden: torch.Tensor, vocab: torch.Tensor | None = None) -> torch.Tensor:
        norm = final_norm(self.model)
        return self.head(norm(hidden) if norm is not None else hidden, vocab)


class CacheView:
    """The owner's model through some of its layers, reading and writing the owner's own KV cache.

    Kept layer i attends to the owner's layer-i keys and values of the verified context (what LayerSkip, Draft &
    Verify, SWIFT and CLaSp do), so switching layer sets costs nothing. `start()` attaches to the owner's current
    cache, `step(token)` appends one draft token and returns its next-token logits, `finish()` drops the draft's
    entries again, so the owner's cache and tokens stay exactly what they were.
    """

    def __init__(self, owner: HFBackend, layers):
        self.owner = owner
        self.layers = sorted(int(i) for i in layers)
        self.runner = owner.view(self.layers)
        self.forwards = 0

    def start(self) -> None:
        if self.owner.rows != 1:
            raise ValueError("a draft on the cache needs a one-row backend")
        if self.owner.columns != self.owner.length:
            self.owner._compact()
        runner = self.runner
        runner.cache = self.owner.cache  # the owner replaces its cache object at every prefill
        runner._ids = [list(self.owner.tokens())]
        runner.slots = [list(range(self.owner.length))]
        runner.columns = self.owner.length
        runner._pending = [(self.owner.length, [])]

    def step(self, token: int, vocab: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [V] (or [len(vocab)] on a trimmed head) after appending `token`."""
        self.forwards += 1
        if vocab is None:
            return self.runner.forward([token]).logits[-1]
        normed = self.runner.forward([token], logits=False).hidden[-1]
        return self.runner.head(normed[-1:], vocab)[0]

    def finish(self) -> None:
        self.runner.rollback(self.owner.length)
