"""The only code that calls a model: prefill, forward new tokens as a tree, keep the accepted path.

The HF backend serves any transformers causal LM on CPU or GPU with a DynamicCache. A forward takes k
new tokens with their parents (a chain by default); they see the whole cache plus their ancestors, at
positions `length + depth - 1`. `keep(rows)` then compacts the cache to the rows that were accepted.
`ids` always mirrors what the cache holds, so `sync(context)` can catch a cache up to any context.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from .spec.tree import ancestor_mask, chain, depths


@dataclass
class Forward:
    """What one forward returns: float32 logits [k, V] and, when asked, hidden states per layer [k, H]."""

    logits: torch.Tensor
    hidden: tuple[torch.Tensor, ...] | None = None


def decoder_layers(model: nn.Module) -> tuple[nn.Module, str]:
    """The module holding the decoder layers (a ModuleList of num_hidden_layers) and its attribute name."""
    n = model.config.get_text_config().num_hidden_layers
    for module in model.modules():
        for name, child in module.named_children():
            if isinstance(child, nn.ModuleList) and len(child) == n:
                return module, name
    raise ValueError(f"cannot find the {n} decoder layers of {type(model).__name__}")


def decoder_body(model: nn.Module) -> nn.Module:
    """The decoder without its LM head (`model.model` for most architectures); its output is final-normed."""
    return model.get_decoder() if hasattr(model, "get_decoder") else model.base_model


def layer_view(model: nn.Module, keep: list[int]) -> nn.Module:
    """A model that runs only the decoder layers `keep`, sharing every weight with `model`.

    Self-speculation (LayerSkip, CLaSp, SWIFT) drafts with such a view. Each kept layer keeps its
    original index into the cache, so the view needs its own cache (see Runner.view).
    """
    owner, attr = decoder_layers(model)
    path = []  # modules from the model down to the layers' owner, shallow-copied so nothing is shared by mistake
    for name, module in model.named_modules():
        if module is owner:
            path = name.split(".") if name else []
            break
    view = copy.copy(model)
    view._modules = dict(model._modules)
    parent = view
    for name in path:
        child = copy.copy(parent._modules[name])
        child._modules = dict(child._modules)
        parent._modules[name] = child
        parent = child
    layers = getattr(owner, attr)
    parent._modules[attr] = nn.ModuleList([layers[i] for i in keep])
    return view


class ModelRunner:
    """What every runner knows of its model: the model (or a view through some of its layers), device, dtype,
    vocabulary and depth, and how many forwards it ran."""

    def __init__(self, model: nn.Module, layers: list[int] | None = None):
        self.base = model
        self.layers = layers
        self.model = layer_view(model, layers) if layers is not None else model
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self.num_layers = model.config.get_text_config().num_hidden_layers
        self.forwards = 0


class Runner(ModelRunner):
    """Prefill, tree forwards and cache compaction over one sequence (batch 1) of a causal LM."""

    def __init__(self, model: nn.Module, layers: list[int] | None = None):
        super().__init__(model, layers)
        self.reset()

    def view(self, layers: list[int]) -> "Runner":
        """A runner through a subset of this model's decoder layers, with its own cache."""
        return Runner(self.base, sorted(layers))

    def reset(self) -> None:
        from transformers import DynamicCache

        self.cache = DynamicCache()
        self.ids: list[int] = []
        self._pending = 0

    @property
    def length(self) -> int:
        """Tokens held in the cache."""
        return len(self.ids)

    def _mask(self, among: torch.Tensor, visible: torch.Tensor | None = None) -> torch.Tensor:
        """[1, 1, k, length + k] mask: new token i sees the cache (or its `visible` part) and the new tokens
        j with among[i, j]."""
        k = among.shape[0]
        prefix = torch.ones(k, self.length, dtype=torch.bool) if visible is None else \
            visible.to(torch.bool).cpu().reshape(-1, self.length).expand(k, -1)
        allowed = torch.cat([prefix, among.to(torch.bool)], dim=1)[None, None].to(self.device)
        if self.model.config._attn_implementation == "sdpa":
            return allowed
        out = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device)
        return out.masked_fill(~allowed, torch.finfo(self.dtype).min)

    @torch.inference_mode()
    def prefill(self, ids: list[int]) -> torch.Tensor:
        """Reset, run the prompt, return the float32 logits [V] of its last position."""
        if not ids:
            raise ValueError("prefill needs at least one token")
        self.reset()
        x = torch.tensor([ids], device=self.device)
        out = self.model(input_ids=x, past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        self.ids = list(map(int, ids))
        return out.logits[0, -1].float()

    @torch.inference_mode()
    def decode(self, token: int) -> torch.Tensor:
        """One new token on the plain causal path (exactly what `generate` runs): logits [V]."""
        x = torch.tensor([[int(token)]], device=self.device)
        position = torch.tensor([[self.length]], device=self.device)
        out = self.model(input_ids=x, position_ids=position, past_key_values=self.cache, use_cache=True)
        self.ids.append(int(token))
        self.forwards += 1
        return out.logits[0, -1].float()

    @torch.inference_mode()
    def forward(self, tokens: list[int], parents: list[int] | None = None, *, hidden: bool = False,
                positions: list[int] | None = None, among: torch.Tensor | None = None,
                visible: torch.Tensor | None = None, logits: bool = True) -> Forward:
        """Append k tokens and return their logits [k, V] (and hidden states per layer if `hidden`).

        By default the tokens form a tree given by `parents` (a chain if None): each sees the cache and its
        ancestors, at position length + depth - 1. Methods whose new tokens are not a tree (lookahead's
        2-D window) pass `among` (bool [k, k]: who sees whom) and `positions` instead. `visible` (bool
        [length], or [k, length] per new token) hides parts of the cache: partial-KV drafting, or a tree grown
        level by level whose earlier levels already sit in the cache. `logits=False` skips the LM head.
        """
        if not tokens:
            raise ValueError("forward needs at least one token")
        if among is None:
            parents = chain(len(tokens)) if parents is None else list(parents)
            if len(parents) != len(tokens):
                raise ValueError("forward needs one parent per token")
            among = ancestor_mask(parents)
            if positions is None:
                positions = [self.length + d - 1 for d in depths(parents)]
        elif positions is None:
            raise ValueError("a custom `among` mask needs explicit positions")
        pos = torch.tensor([positions], device=self.device)
        x = torch.tensor([list(map(int, tokens))], device=self.device)
        kwargs = dict(input_ids=x, position_ids=pos, attention_mask=self._mask(among, visible),
                      past_key_values=self.cache, use_cache=True, output_hidden_states=hidden or not logits)
        if logits:
            out = self.model(**kwargs)
            scores = out.logits[0].float()
        else:
            out = self._body()(**kwargs)
            scores = None
        self._pending = self.length
        self.ids.extend(map(int, tokens))
        self.forwards += 1
        states = tuple(h[0] for h in out.hidden_states) if (hidden or not logits) else None
        return Forward(scores, states)

    def _body(self) -> nn.Module:
        return decoder_body(self.model)

    @torch.inference_mode()
    def head(self, hidden: torch.Tensor, vocab: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from final hidden states [k, H] (already normed, as `hidden[-1]` is), optionally only for
        the token ids in `vocab` (a trimmed drafter vocabulary): float32 [k, V or len(vocab)]."""
        weight = self.model.get_output_embeddings().weight
        if vocab is not None:
            weight = weight[vocab.to(weight.device)]
        return (hidden.to(weight.dtype) @ weight.T).float()

    @torch.inference_mode()
    def exit_logits(self, hidden: torch.Tensor, vocab: torch.Tensor | None = None) -> torch.Tensor:
        """Early-exit logits from an intermediate layer's hidden states: final norm, then the LM head."""
        norm = getattr(self._body(), "norm", None) or getattr(self._body(), "ln_f", None)
        return self.head(norm(hidden) if norm is not None else hidden, vocab)

    def keep(self, rows: list[int]) -> None:
        """After a forward of k tokens, keep only `rows` of them (in order) in the cache."""
        base = self._pending
        rows = [int(r) for r in rows]
        if rows == list(range(len(rows))):
            self.rollback(base + len(rows))
            return
        index = torch.tensor(list(range(base)) + [base + r for r in rows], device=self.device)
        for layer in self.cache.layers:
            if getattr(layer, "keys", None) is not None and layer.keys.numel():
                layer.keys = layer.keys.index_select(-2, index)
                layer.values = layer.values.index_select(-2, index)
        self.ids = self.ids[:base] + [self.ids[base + r] for r in rows]

    def rollback(self, length: int) -> None:
        """Drop everything after the first `length` tokens."""
        if length < self.length:
            for layer in self.cache.layers:
                if getattr(layer, "keys", None) is not None and layer.keys.numel():
                    layer.keys = layer.keys[..., :length, :]
                    layer.values = layer.values[..., :length, :]
            self.ids = self.ids[:length]

    # -- several rows of equal length (beam search) ---------------------------------------------------
    @torch.inference_mode()
    def prefill_rows(self, ids: list[int], rows: int) -> torch.Tensor:
        """Reset and run the same prompt in `rows` rows (as `generate` does for beams): logits [rows, V]."""
        self.reset()
        x = torch.tensor([ids] * rows, device=self.device)
        out = self.model(input_ids=x, past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        self.ids = [-1] * len(ids)  # with rows, ids only counts the length: no row is reusable by sync
        return out.logits[:, -1].float()

    @torch.inference_mode()
    def decode_rows(self, tokens: list[int]) -> torch.Tensor:
        """One new token per row on the plain causal path: logits [rows, V]."""
        x = torch.tensor([[int(t)] for t in tokens], device=self.device)
        position = torch.full((len(tokens), 1), self.length, device=self.device)
        out = self.model(input_ids=x, position_ids=position, past_key_values=self.cache, use_cache=True)
        self.ids.append(-1)
        self.forwards += 1
        return out.logits[:, -1].float()

    def reorder(self, rows: torch.Tensor) -> None:
        """Row i of the cache becomes old row rows[i] (beam reordering)."""
        self.cache.reorder_cache(rows.to(self.device))

    def sync(self, context: list[int]) -> torch.Tensor:
        """Make the cache hold exactly `context` (reusing the common prefix); return the last logits [V]."""
        common = 0
        for a, b in zip(self.ids, context):
            if a != b:
                break
            common += 1
        if common == 0:
            return self.prefill(context)
        common = min(common, len(context) - 1)  # re-run at least the last token to get its logits
        self.rollback(common)
        return self.forward(context[common:]).logits[-1]


class BatchRunner(ModelRunner):
    """B sequences in one cache, each at its own length: batched speculative decoding (BASS, TETRIS).

    Every forward appends its new tokens to the same cache columns for all rows (a row with fewer tokens is
    padded, the padding seeing only itself). A row's tokens see only that row's valid slots (a [B, 1, k, L + k]
    mask) at the row's own positions (position_ids [B, k]), so a row may have holes: `keep(row, rows)` after a
    ragged acceptance only forgets the rejected slots, and the next forward squeezes the holes out with one
    gather once `compact_after` columns could be saved. `select(rows)` drops finished rows so they stop
    costing. `ids[b]` mirrors what row b holds; row by row the logits equal a single-sequence Runner's.
    """

    def __init__(self, model: nn.Module, layers: list[int] | None = None, *, compact_after: int = 32):
        super().__init__(model, layers)
        self.compact_after = compact_after
        self.reset(0)

    @classmethod
    def like(cls, runner: Runner) -> "BatchRunner":
        """A batch runner over the same model (and layer subset) as a single-sequence runner."""
        return cls(runner.base, runner.layers)

    def reset(self, rows: int = 0) -> None:
        from transformers import DynamicCache

        self.cache = DynamicCache()
        self.ids: list[list[int]] = [[] for _ in range(rows)]
        self.slots: list[list[int]] = [[] for _ in range(rows)]  # cache columns of row b's tokens, in order
        self.columns = 0
        self._pending: list[tuple[int, list[int]]] = [(0, []) for _ in range(rows)]  # (length before, new columns)

    @property
    def rows(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.ids]

    def _mask(self, among: list[torch.Tensor], k: int) -> torch.Tensor:
        """[B, 1, k, L + k]: row b's new token i sees row b's valid slots and its new tokens j with among[b][i, j]."""
        L = self.columns
        allowed = torch.zeros(self.rows, k, L + k, dtype=torch.bool)
        for b, mask in enumerate(among):
            n = mask.shape[0]
            if n and self.slots[b]:
                allowed[b, :n, self.slots[b]] = True
            allowed[b, :n, L:L + n] = mask
            pad = torch.arange(n, k)
            allowed[b, pad, L + pad] = True  # padding attends to itself only: finite values, never seen
        allowed = allowed[:, None].to(self.device)
        if self.model.config._attn_implementation == "sdpa":
            return allowed
        out = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device)
        return out.masked_fill(~allowed, torch.finfo(self.dtype).min)

    @torch.inference_mode()
    def forward(self, tokens: list[list[int]], parents: list[list[int] | None] | None = None, *,
                last: bool = False) -> list[torch.Tensor]:
        """Append row b's tokens (a tree by `parents[b]`, a chain if None, [] for nothing) at positions
        length_b + depth - 1; return per row float32 logits [k_b, V] (only the last token's, [1, V], if `last`)."""
        if len(tokens) != self.rows:
            raise ValueError(f"forward needs tokens for each of the {self.rows} rows")
        sizes = [len(t) for t in tokens]
        k = max(sizes, default=0)
        if k == 0:
            return [torch.empty(0, self.vocab_size) for _ in tokens]
        if self.columns - max(self.lengths) >= self.compact_after:
            self.compact()
        x = torch.zeros(self.rows, k, dtype=torch.long)
        positions = torch.zeros(self.rows, k, dtype=torch.long)
        wanted = torch.zeros(self.rows, k, dtype=torch.bool)
        among = []
        for b, row in enumerate(tokens):
            n = len(row)
            par = chain(n) if parents is None or parents[b] is None else list(parents[b])
            if len(par) != n:
                raise ValueError("forward needs one parent per token")
            among.append(ancestor_mask(par) if n else torch.zeros(0, 0, dtype=torch.bool))
            if n:
                x[b, :n] = torch.tensor(list(map(int, row)))
                positions[b, :n] = torch.tensor(depths(par)) + len(self.ids[b]) - 1
                wanted[b, n - 1 if last else 0:n] = True
        # the decoder, then the LM head on the wanted rows only (padding and unwanted rows skip the head)
        out = decoder_body(self.model)(input_ids=x.to(self.device), position_ids=positions.to(self.device),
                                       attention_mask=self._mask(among, k), past_key_values=self.cache,
                                       use_cache=True)
        hidden = out.last_hidden_state[wanted.to(self.device)]  # [N, H], row-major
        flat = self.model.get_output_embeddings()(hidden).float()
        per_row = list(flat.split(wanted.sum(1).tolist()))
        for b, row in enumerate(tokens):
            new = list(range(self.columns, self.columns + len(row)))
            self._pending[b] = (len(self.ids[b]), new)
            self.slots[b].extend(new)
            self.ids[b].extend(map(int, row))
        self.columns += k
        self.forwards += 1
        return per_row

    @torch.inference_mode()
    def prefill(self, prompts: list[list[int]]) -> torch.Tensor:
        """Reset to one row per prompt, run them, return the logits of each prompt's last token [B, V]."""
        if not prompts or any(not p for p in prompts):
            raise ValueError("prefill needs at least one token per row")
        self.reset(len(prompts))
        logits = self.forward(prompts, last=True)
        self.forwards -= 1  # like Runner, the prefill is not counted
        return torch.stack([row[-1] for row in logits])

    def decode(self, tokens: list[int]) -> torch.Tensor:
        """One new token per row on the causal path: logits [B, V]."""
        return torch.stack([row[-1] for row in self.forward([[int(t)] for t in tokens])])

    def keep(self, row: int, rows: list[int]) -> None:
        """After a forward, keep only the new tokens `rows` (in order, a root-to-node path) of batch row `row`."""
        base, new = self._pending[row]
        self.slots[row] = self.slots[row][:base] + [new[r] for r in rows]
        self.ids[row] = self.ids[row][:base] + [self.ids[row][base + r] for r in rows]
        self._crop()

    def rollback(self, row: int, length: int) -> None:
        """Drop everything after the first `length` tokens of one row."""
        self.slots[row] = self.slots[row][:length]
        self.ids[row] = self.ids[row][:length]
        self._crop()

    def _crop(self) -> None:
        """Cut cache columns that no row uses any more (the common case after a rollback)."""
        used = max((max(s) + 1 for s in self.slots if s), default=0)
        if used < self.columns:
            self._apply(lambda t: t[..., :used, :])
            self.columns = used

    def _apply(self, fn) -> None:
        for layer in self.cache.layers:
            if getattr(layer, "keys", None) is not None and layer.keys.numel():
                layer.keys, layer.values = fn(layer.keys), fn(layer.values)

    def compact(self) -> None:
        """Move each row's valid slots to columns 0..length-1 (one gather per layer); holes disappear."""
        width = max(self.lengths, default=0)
        index = torch.zeros(self.rows, width, dtype=torch.long)  # shorter rows point their padding at column 0
        for b, slots in enumerate(self.slots):
            index[b, :len(slots)] = torch.tensor(slots, dtype=torch.long)
        index = index.to(self.device)[:, None, :, None]
        self._apply(lambda t: t.gather(2, index.expand(t.shape[0], t.shape[1], width, t.shape[3])))
        self.slots = [list(range(len(s))) for s in self.slots]
        self._pending = [(len(s), []) for s in self.slots]
        self.columns = width

    def select(self, rows: list[int]) -> None:
        """Keep only these batch rows, in this order (finished rows stop costing)."""
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        self._apply(lambda t: t.index_select(0, index))
        self.ids = [self.ids[r] for r in rows]
        self.slots = [self.slots[r] for r in rows]
        self._pending = [self._pending[r] for r in rows]
        self._crop()

    def sync(self, contexts: list[list[int]]) -> torch.Tensor:
        """Make row b hold exactly contexts[b] (reusing its common prefix); return each row's last logits [B, V]."""
        if len(contexts) != self.rows:
            self.reset(len(contexts))
        suffixes = []
        for b, context in enumerate(contexts):
            common = 0
            for a, c in zip(self.ids[b], context):
                if a != c:
                    break
                common += 1
            common = min(common, len(context) - 1)  # re-run at least the last token to get its logits
            self.rollback(b, common)
            suffixes.append(context[common:])
        return torch.stack([row[-1] for row in self.forward(suffixes, last=True)])
