"""SpecPV: Improving Self-Speculative Decoding for Long-Context Generation via Partial Verification.

The one idea: in a long context the verification forward costs the most (it reads the whole KV cache), and most of
that cache matters little, so verify against a partial KV instead: the first tokens (attention sinks), the blocks of
the context that the model attends to most (retrieval), and a recent window. The partially verified tokens drift a
little from what the full model would say, and their own cached keys and values were computed on the partial view,
so every `full_every` tokens a full verification runs on the whole cache; it also re-forwards the partially
verified tokens, so their cache entries become exact again and the drift never accumulates beyond one period.
That makes SpecPV lossy (the paper's "minor degradation"); lab/bench/quality.py reports how much.

Here the draft is the target's own early exit on its own cache (`self_draft.chain_from_view`), the partial view is a
`visible` mask on the verification forward (lab/speculative/drafter.py), and the full verification re-forwards
the pending tokens as extra rows of the same forward, kept in the cache before the root (`kept`). The retrieval
blocks are the ones that got the most attention (summed over layers and heads) from the root at the last full
verification. The paper ranks blocks per step with Quest's query-aware key bounds, drafts with a trained EAGLE-3
head, and uses larger blocks and buffers (16-token blocks, 2 sink and 8 window blocks, 256 retrieval blocks); the
defaults here are scaled to the short contexts a CPU runs, so that the partial view hides something.
"""
from __future__ import annotations

import torch

from ...decoding import Decoding
from ...errors import LabError
from ...registry import method
from ...tree import Tree, buffers
from ..drafter import Drafter
from ..loop import speculate
from ..self_draft import chain_from_view, exit_layer
from ..verify import Verdict


def partial_view(length: int, sink: int, window: int, retrieval: int = 0, block: int = 8,
                 importance: torch.Tensor | None = None) -> torch.Tensor:
    """Bool [length]: the first `sink` and the last `window` cached tokens, and the `retrieval // block` blocks in
    between with the most `importance` (a score per cached token; missing scores count as 0)."""
    visible = torch.zeros(length, dtype=torch.bool)
    visible[:sink] = True
    visible[max(0, length - window):] = True
    middle = range(sink, max(sink, length - window), block)
    if retrieval >= block and importance is not None and len(middle):
        score = torch.zeros(length)
        score[:min(length, len(importance))] = importance[:length].float()
        sums = torch.stack([score[start:start + block].sum() for start in middle])
        for b in sums.topk(min(retrieval // block, len(middle))).indices.tolist():
            visible[middle[b]:middle[b] + block] = True
    return visible


class PartialVerification(Drafter):
    """An early-exit draft; verification on sinks + retrieved blocks + a window, fully every `full_every` tokens."""

    def __init__(self, dec: Decoding, sink: int, window: int, retrieval: int, block: int, full_every: int,
                 length: int, exit_fraction: float):
        if min(window, block, full_every, length) < 1 or min(sink, retrieval) < 0:
            raise LabError("specpv needs window, block, full_every and length >= 1, sink and retrieval >= 0")
        self.sink, self.window, self.retrieval, self.block = sink, window, retrieval, block
        self.full_every, self.length = full_every, length
        self.view = dec.target.draft_on_cache(range(exit_layer(dec.target.num_layers, exit_fraction)))
        self.exact: int | None = None  # cached tokens whose keys and values saw the whole context (the prefill's)
        self.importance: torch.Tensor | None = None  # attention each cached token got at the last full verification
        self.since = 0  # tokens committed by partial verifications since the last full one
        self.full, self.pending, self.rows = True, 0, 0
        self.info: dict = {}

    @property
    def forwards(self) -> int:
        return self.view.forwards

    def propose(self, dec: Decoding, root: int) -> Tree:
        if self.exact is None:
            self.exact = dec.target.length
        self.full = self.importance is None or self.since >= self.full_every
        self.was_exact = self.exact == dec.target.length
        self.taps = ("attentions",) if self.full else ()
        return chain_from_view(dec, self.view, root, min(self.length, dec.remaining))

    def visible(self, dec: Decoding) -> torch.Tensor | None:
        if self.full:
            return None
        mask = partial_view(dec.target.length, self.sink, self.window, self.retrieval, self.block, self.importance)
        self.info = {"verification": "partial", "hidden": int((~mask).sum()), "cached": len(mask)}
        return None if mask.all() else mask

    def layout(self, dec: Decoding, root: int, tree: Tree):
        """On a full verification after partial ones: the tokens cached since `exact` go through the forward again,
        as rows after the tree that the root and the tree see (they come first in the context)."""
        self.pending, self.rows = (dec.target.length - self.exact if self.full else 0), 1 + tree.rows
        if self.full:
            self.info = {"verification": "full", "rectified": self.pending}
        if not self.pending:
            return None
        pending = dec.target.tokens()[self.exact:]
        dec.target.rollback(self.exact)
        tokens, parents = tree.with_root(root)
        shape = buffers(parents[1:] and [p - 1 for p in parents[1:]])  # the root and the tree, as forwarded
        k, m = len(tokens), self.pending
        among = torch.zeros(k + m, k + m, dtype=torch.bool)
        among[:k, :k] = shape.among
        among[:, k:] = torch.cat([torch.ones(k, m, dtype=torch.bool), torch.ones(m, m, dtype=torch.bool).tril()])
        positions = [self.exact + m + int(o) for o in shape.offsets] + list(range(self.exact, self.exact + m))
        return tokens + pending, among, positions

    def kept(self, rows: list[int]) -> list[int]:
        return list(range(self.rows, self.rows + self.pending)) + rows

    def accepted(self, dec: Decoding, tree: Tree, verdict: Verdict, logits: torch.Tensor, taps=None) -> None:
        committed = len(verdict.accepted) + (verdict.bonus is not None)
        if self.full:  # everything cached now saw the whole context
            columns = self.exact  # the cache before this forward's rows
            found = (taps or {}).get("attentions")
            if found:
                self.importance = torch.stack([a[:, 0, :columns].float().sum(0) for a in found]).sum(0).cpu()
            self.exact, self.since = dec.target.length, 0
        else:
            self.since += committed
            if self.info["hidden"] == 0 and self.was_exact:  # the view hid nothing: these entries are exact too
                self.exact = dec.target.length


@method("specpv", family="speculative", lossless=False, training_free=True,
        paper="SpecPV: Improving Self-Speculative Decoding for Long-Context Generation via Partial Verification",
        departures="the draft is the target's own early exit, not a trained EAGLE-3 head; retrieval blocks are "
                   "ranked by the attention they got at the last full verification, not per step by Quest's key "
                   "bounds; block and buffer sizes scaled down to CPU-sized contexts")
def specpv(dec, *, sink: int = 4, window: int = 32, retrieval: int = 32, block: int = 8, full_every: int = 16,
           length: int = 4, exit_fraction: float = 0.5):
    """Self-speculation verified on a partial KV (sinks + retrieved blocks + window), fully every full_every tokens."""
    yield from speculate(dec, PartialVerification(dec, sink, window, retrieval, block, full_every, length,
                                                  exit_fraction))
