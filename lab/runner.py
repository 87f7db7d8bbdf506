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


class Runner:
    """Prefill, tree forwards and cache compaction over one sequence (batch 1) of a causal LM."""

    def __init__(self, model: nn.Module, layers: list[int] | None = None):
        self.base = model
        self.layers = layers
        self.model = layer_view(model, layers) if layers is not None else model
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self.num_layers = model.config.get_text_config().num_hidden_layers
        self.forwards = 0
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
        """The decoder without its LM head (`model.model` for most architectures)."""
        return self.model.get_decoder() if hasattr(self.model, "get_decoder") else self.model.base_model

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
