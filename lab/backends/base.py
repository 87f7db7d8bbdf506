"""The backend protocol: the one seam between decoding methods and a model.

Every method talks to a model through a Backend: prefill prompts, forward new tokens with positions and a
visibility mask (a causal chain, a tree, a block that sees itself both ways, or any custom pattern), keep the
accepted rows of the cache or roll it back, reorder or drop rows (beams, finished batch rows), and derive new
backends that share the weights: `fork` (an own cache), `view` (the first n or any subset of the layers, an
own cache), `draft_on_cache` (a layer subset drafting on this backend's own cache). A forward can also tap
what happens inside: hidden states per layer, attention weights per head, per-head attention outputs (before
the output projection), MLP outputs.

One protocol serves one row (most methods: `forward`, `decode`, `keep(rows)`) and B rows, each at its own length
(batched speculation and beams: `forward_rows`, `decode_rows`, `keep(rows, row=b)`). Tokens go in as host ints;
logits come back as float32 tensors on the backend's device.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field

import torch

TAPS = ("hidden", "attentions", "heads", "mlp")


@dataclass
class Forward:
    """What one forward returns: float32 logits [k, V] (None when not asked) and the taps asked for.

    `taps["hidden"]`: per layer (the embeddings first, the final-normed state last) [k, H];
    `taps["attentions"]`: per layer [heads, k, visible columns]; `taps["heads"]`: per layer [k, heads, head_dim];
    `taps["mlp"]`: per layer [k, H]. Large tensors: they never go into a Trace.
    """

    logits: torch.Tensor | None
    taps: dict[str, tuple[torch.Tensor, ...]] = field(default_factory=dict)

    @property
    def hidden(self) -> tuple[torch.Tensor, ...] | None:
        return self.taps.get("hidden")


@dataclass(frozen=True)
class Description:
    """What a method may know of the model behind a backend."""

    name: str
    architecture: str
    layers: int
    vocab_size: int
    hidden_size: int
    dtype: str
    device: str
    kv_bytes_per_token: int
    max_positions: int | None
    layer_subset: tuple[int, ...] | None = None
    backend: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class Backend(ABC):
    """A model with a KV cache of one or more rows. Subclasses: `hf.HFBackend` (any causal LM, the reference)."""

    forwards: int  # forwards run after the prefill (the cost measure of every Trace)
    device: torch.device
    dtype: torch.dtype
    vocab_size: int
    num_layers: int

    # -- what it is --------------------------------------------------------------------------------
    @abstractmethod
    def describe(self) -> Description: ...

    @property
    @abstractmethod
    def rows(self) -> int: ...

    @property
    @abstractmethod
    def weights(self) -> object:
        """What identifies the weights (shared by forks and views): a key for caches kept per model."""

    @abstractmethod
    def tokens(self, row: int = 0) -> list[int]:
        """The tokens the cache holds for a row, in order."""

    @property
    def ids(self) -> list[int]:
        return self.tokens(0)

    @property
    def length(self) -> int:
        """Tokens held for row 0."""
        return len(self.tokens(0))

    @property
    def lengths(self) -> list[int]:
        return [len(self.tokens(b)) for b in range(self.rows)]

    # -- one row -----------------------------------------------------------------------------------
    @abstractmethod
    def prefill(self, ids: list[int]) -> torch.Tensor:
        """Reset to one row holding `ids`; the float32 logits [V] after its last token."""

    @abstractmethod
    def forward(self, tokens: list[int], parents: list[int] | None = None, *, positions: list[int] | None = None,
                among: torch.Tensor | str | None = None, visible: torch.Tensor | None = None,
                taps: tuple[str, ...] = (), logits: bool = True) -> Forward:
        """Append k tokens to row 0 and return their logits [k, V].

        By default the tokens form a tree by `parents` (a chain if None): each sees the cache and its ancestors,
        at position length + depth - 1. `among` replaces the tree: a bool [k, k] (who sees whom) with explicit
        `positions`, or "block" (every new token sees every other: a diffusion block). `visible` (bool [length],
        or [k, length]) hides parts of the cache. `logits=False` skips the LM head (ask for taps instead).
        """

    def decode(self, token: int) -> torch.Tensor:
        """One token on the plain causal path (what `generate` runs): logits [V]."""
        return self.forward([int(token)]).logits[-1]

    def greedy_run(self, token: int, n: int) -> list[int]:
        """n greedy steps: feed `token`, then each argmax in turn; the n argmax tokens (the cache then holds `token`
        and the first n - 1 of them). The fast backend runs them in one captured graph on a GPU."""
        out = []
        for _ in range(n):
            token = int(self.decode(token).argmax(-1))
            out.append(token)
        return out

    def rounds_with(self, draft: "Backend") -> bool:
        """Whether `greedy_rounds` runs with this draft (the fast backend, with a fast-backend draft)."""
        return False

    def greedy_rounds(self, draft: "Backend", token: int, k: int, rounds: int, siblings: bool = False) -> list:
        """`rounds` greedy speculative rounds of k drafts by `draft` (a backend holding this row's tokens but
        `token`, which both are fed next) without the host between them, with the draft's second choice at each
        depth as a sibling where `siblings`: a `Round` each (lab/backends/fast/rounds.py: the drafts, the target's
        argmax tokens, what was accepted, `committed`). Only where `rounds_with(draft)`."""
        raise NotImplementedError(f"{type(self).__name__} has no device path for speculative rounds")

    def greedy_chain(self, token: int, n: int) -> tuple[list[int], list[float]]:
        """`greedy_run`'s tokens and each one's softmax probability (a draft chain at temperature 0)."""
        out, probs = [], []
        for _ in range(n):
            row = self.decode(token).float()
            token = int(row.argmax(-1))
            out.append(token)
            probs.append(float((row.max() - row.logsumexp(-1)).exp()))
        return out, probs

    @abstractmethod
    def keep(self, rows: list[int], row: int = 0) -> None:
        """After a forward, keep only the new tokens `rows` (in order, e.g. the accepted path) of a row."""

    @abstractmethod
    def rollback(self, length: int, row: int = 0) -> None:
        """Drop everything after the first `length` tokens of a row."""

    def _common(self, context: list[int]) -> int:
        """How many leading tokens row 0 already shares with `context`."""
        ids = self.ids
        n = min(len(ids), len(context))
        if ids[:n] == list(context[:n]):  # the usual case (the context grew): one comparison in C
            return n
        common = 0
        for a, b in zip(ids, context):
            if a != b:
                break
            common += 1
        return common

    def sync(self, context: list[int]) -> torch.Tensor:
        """Make row 0 hold exactly `context` (reusing the common prefix); the last logits [V]."""
        common = self._common(context)
        if common == 0 or self.rows != 1:
            return self.prefill(context)
        common = min(common, len(context) - 1)  # re-run at least the last token to get its logits
        self.rollback(common)
        return self.forward(context[common:]).logits[-1]

    def hold(self, context: list[int]) -> None:
        """Make row 0 hold exactly `context`, running only the tokens it lacks (when no logits are wanted)."""
        common = self._common(context)
        if common == 0 or self.rows != 1:
            self.prefill(context)
            return
        self.rollback(common)
        if common < len(context):
            self.forward(context[common:])

    # -- several rows ------------------------------------------------------------------------------
    @abstractmethod
    def prefill_rows(self, prompts: list[list[int]]) -> torch.Tensor:
        """Reset to one row per prompt; the logits after each prompt's last token [B, V]."""

    @abstractmethod
    def forward_rows(self, tokens: list[list[int]], parents: list[list[int] | None] | None = None, *,
                     last: bool = False) -> list[torch.Tensor]:
        """Append row b's tokens (a tree by parents[b], a chain if None, [] for none) at positions
        length_b + depth - 1; per row float32 logits [k_b, V] (only the last token's, [1, V], if `last`)."""

    def decode_rows(self, tokens: list[int]) -> torch.Tensor:
        """One token per row on the causal path: logits [B, V]."""
        return torch.stack([row[-1] for row in self.forward_rows([[int(t)] for t in tokens])])

    def sync_rows(self, contexts: list[list[int]]) -> torch.Tensor:
        """Make row b hold exactly contexts[b] (reusing its common prefix); each row's last logits [B, V]."""
        if len(contexts) != self.rows:
            return self.prefill_rows(contexts)
        suffixes = []
        for b, context in enumerate(contexts):
            common = 0
            for a, c in zip(self.tokens(b), context):
                if a != c:
                    break
                common += 1
            common = min(common, len(context) - 1)
            self.rollback(common, row=b)
            suffixes.append(context[common:])
        return torch.stack([row[-1] for row in self.forward_rows(suffixes, last=True)])

    @abstractmethod
    def reorder(self, index: torch.Tensor) -> None:
        """Row i becomes old row index[i] (beam search)."""

    @abstractmethod
    def select(self, rows: list[int]) -> None:
        """Keep only these rows, in this order (finished rows stop costing)."""

    def for_rows(self) -> "Backend":
        """A backend on the same weights that holds several rows (batches, beams): a fork, unless this backend
        holds one row only."""
        return self.fork()

    # -- new backends on the same weights ------------------------------------------------------------
    @abstractmethod
    def fork(self) -> "Backend":
        """The same model (and layer subset) with its own empty cache."""

    @abstractmethod
    def view(self, layers: list[int]) -> "Backend":
        """The model through a subset of its decoder layers (shared weights), with its own cache."""

    @abstractmethod
    def draft_on_cache(self, layers: list[int]):
        """A layer subset that drafts on this backend's own cache: `start()`, `step(token)`, `finish()`."""

    @abstractmethod
    def on(self, device: str, dtype: torch.dtype | None = None) -> "Backend":
        """A copy of this backend's model (its layers only, own weights) on a device, in a dtype."""

    # -- one decoder layer on given states ----------------------------------------------------------
    def run_layer(self, layer: int, hidden: torch.Tensor, positions: list[int],
                  visible: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder layer `layer` on given hidden states [k, H] (the residual stream entering it), row i at
        positions[i]: each row attends to the cached context of row 0 (or its `visible` part, bool [length]) and
        to itself, never to the other rows, and nothing is written to the cache. Returns the residual stream
        leaving the layer [k, H], float32. CLaSp runs its candidate draft states through one layer at a time."""
        raise NotImplementedError(f"{type(self).__name__} cannot run one layer on given states")

    # -- the LM head -------------------------------------------------------------------------------
    @abstractmethod
    def head(self, hidden: torch.Tensor, vocab: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from final (normed) hidden states [k, H], optionally for the token ids `vocab` only."""

    @abstractmethod
    def exit_logits(self, hidden: torch.Tensor, vocab: torch.Tensor | None = None) -> torch.Tensor:
        """Early-exit logits from an intermediate layer's states: the final norm, then the LM head."""
