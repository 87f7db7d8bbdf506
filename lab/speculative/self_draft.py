"""Self-speculation: the target drafts for itself through a cheaper path (a layer subset, an early exit, part of
its KV cache, a trimmed LM head), then verifies the draft with its full self.

Shared by layer-skip, clasp, del, specpv and vocabtrim:
- the target's `draft_on_cache(layers)` (lab/backends): the target through a subset of its layers, reading and
  writing the target's own KV cache (the draft never prefills a cache of its own: the verified context is
  already there, layer by layer). Draft entries are rolled back before the real verification.
- `draft_chain`: a chain drawn from any next-token function with the target's sampling rule (q for stochastic
  acceptance), optionally on a vocabulary subset (q = 0 outside it).
Each drafter sets `info` (exit layer, skipped layers ...) per proposal; the loop copies it into the Step so the
views can show why a draft was good or bad. CLaSp and DEL tap the verification forward's hidden states.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..decoding import Decoding
from ..errors import LabError
from ..tree import Tree
from .expand import draft_token
from .verify import Verdict


def exit_layer(num_layers: int, fraction: float) -> int:
    """Number of layers of an early exit at `fraction` of the depth, clamped to [1, num_layers - 1]
    (a 1-layer model can only draft with its one layer)."""
    if not 0.0 < fraction <= 1.0:
        raise LabError(f"an exit fraction must be in (0, 1], got {fraction}")
    return max(1, min(num_layers - 1, round(fraction * num_layers))) if num_layers > 1 else 1


def draft_chain(dec: Decoding, step: Callable[[int], torch.Tensor], root: int, n: int,
                vocab: torch.Tensor | None = None) -> Tree:
    """A chain of n draft tokens under `root`: step(token) feeds a token and returns the draft's next logits.

    Tokens follow the target's sampling rule applied to the draft logits (argmax at T = 0); at T > 0 each node
    carries the full distribution q it was drawn from. With `vocab`, the logits cover only those token ids and
    q is 0 elsewhere, so no token outside `vocab` can ever be drafted.
    """
    tree = Tree()
    logits = step(root) if n > 0 else None
    for i in range(n):
        index, belief, q = draft_token(dec, logits)
        token = index if vocab is None else int(vocab[index])
        if vocab is not None and q is not None:
            q = torch.zeros(dec.target.vocab_size, device=q.device).index_copy_(0, vocab.to(q.device), q)
        tree.add(token, i - 1, belief, q)
        if i + 1 < n:
            logits = step(token)
    return tree


def chain_from_view(dec: Decoding, view, root: int, n: int, vocab: torch.Tensor | None = None) -> Tree:
    """`draft_chain` through a draft on the target's cache (`draft_on_cache`), leaving the cache as it was."""
    if n <= 0:
        return Tree()
    view.start()
    try:
        return draft_chain(dec, lambda token: view.step(token, vocab), root, n, vocab)
    finally:
        view.finish()


def path_rows(verdict: Verdict) -> list[int]:
    """Rows of the verification forward that lie on the committed path: the root, then each accepted node."""
    return [0] + [i + 1 for i in verdict.accepted]
