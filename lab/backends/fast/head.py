"""The LM head of the fast backend's forward: logits over the vocabulary, or over a trimmed head's rows, or each
row's argmax token and its probability (`logits="argmax"`: a greedy step's and a draft chain's)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def head_logits(w, normed: torch.Tensor, logits: bool | str) -> torch.Tensor | None:
    """float32 logits [k, V] of the final states `normed` [k, hidden]; with a trimmed head (`w.vocab`, lab.vocab_trim)
    -inf outside its tokens, or its own rows [k, len(w.vocab)] when `logits` is "rows" (column j is token
    w.vocab[j]: a greedy draft's argmax needs no scatter). None when not `logits`."""
    if not logits:
        return None
    out = F.linear(normed, w.head).float()
    if w.vocab is None or logits == "rows":
        return out
    return out.new_full((out.shape[0], w.vocab_size), float("-inf")).index_copy_(1, w.vocab, out)


def head_out(w, normed: torch.Tensor, logits: bool | str):
    """`head_logits`, or each row's first argmax (a trimmed head's column mapped to its token): with
    `logits="argmax"` (tokens [k] long, their softmax probabilities [k] float32), "last" (the same for the last row
    only: a draft step that fed two tokens) or "tokens" (tokens, None)."""
    if logits not in ("argmax", "last", "tokens"):
        return head_logits(w, normed, logits)
    rows = head_logits(w, normed[-1:] if logits == "last" else normed, "rows")
    if logits == "tokens":
        column = rows.argmax(-1)
        return (column if w.vocab is None else w.vocab[column]), None
    top, column = rows.max(-1)
    return (column if w.vocab is None else w.vocab[column]), (top - rows.logsumexp(-1)).exp()
