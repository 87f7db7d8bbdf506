"""A Katz back-off n-gram model over token ids: staged speculative decoding's draft for the draft.

Paper: "Accelerating LLM Inference with Staged Speculative Decoding" (Spector & Re, 2023) drafts its draft
model with a Katz back-off trigram model; the back-off is Katz's ("Estimation of probabilities from sparse
data for the language model component of a speech recognizer", 1987). For a history h (the last n - 1 tokens)
and its shortening h' (one token fewer):

    P(w | h) = (c(h, w) - D) / c(h)            if w was seen after h,
             = alpha(h) * P(w | h')            otherwise,

    alpha(h) = (D * #{w seen after h} / c(h)) / (1 - sum over w seen after h of P(w | h')),

so the mass taken from the seen continuations goes to the unseen ones in proportion to the shorter history's
belief, and every P(. | h) sums to 1. A history never seen backs off whole (P(w | h) = P(w | h')); the bottom
is the unigram frequency over the tokens seen at all. D is one absolute discount for every count (Katz's own
discounts are Good-Turing's, per count); D is 0 for a history whose shortening puts no mass outside h's
continuations (nowhere to move it).

Counts come from a corpus (`base`, shared and never written) plus text read as decoding goes (`read`).
"""
from __future__ import annotations

Rows = dict[tuple[int, ...], dict[int, int]]  # history -> next token -> count


def count(documents: list[list[int]], order: int) -> Rows:
    """The counts of every n-gram of length 1 .. order inside each document."""
    rows: Rows = {}
    for doc in documents:
        for i, token in enumerate(doc):
            for k in range(min(order - 1, i) + 1):
                row = rows.setdefault(tuple(doc[i - k:i]), {})
                row[token] = row.get(token, 0) + 1
    return rows


class KatzModel:
    """Katz back-off over histories of up to `order - 1` tokens. `predict` gives the most probable next token."""

    def __init__(self, order: int = 3, discount: float = 0.5, base: Rows | None = None):
        if order < 1 or not 0.0 <= discount < 1.0:
            raise ValueError("a Katz model needs order >= 1 and 0 <= discount < 1")
        self.order, self.discount = order, discount
        self.base = base or {}
        self.own: Rows = {}
        self._cache: dict[tuple[int, ...], tuple[dict[int, int], int, float]] = {}  # history -> row, total, alpha
        self._ranked: list[int] | None = None  # unigrams, most frequent first

    def read(self, tokens: list[int], start: int = 0) -> None:
        """Count the n-grams of `tokens` that end at positions start, start + 1, ... (text read so far)."""
        for i in range(start, len(tokens)):
            for k in range(min(self.order - 1, i) + 1):
                row = self.own.setdefault(tuple(tokens[i - k:i]), {})
                row[tokens[i]] = row.get(tokens[i], 0) + 1
        if start < len(tokens):
            self._cache, self._ranked = {}, None

    def _row(self, h: tuple[int, ...]) -> tuple[dict[int, int], int, float]:
        """The counts after h, their total and h's back-off weight alpha (cached until the counts change)."""
        if h not in self._cache:
            base, own = self.base.get(h, {}), self.own.get(h)
            row = base if not own else {**base, **{t: base.get(t, 0) + c for t, c in own.items()}}
            total, alpha = sum(row.values()), 0.0
            if h and total:
                left = 1.0 - sum(self.prob(w, h[1:]) for w in row)  # the shorter history's mass outside row
                alpha = self.discount * len(row) / total / left if left > 1e-12 else 0.0
            self._cache[h] = (row, total, alpha)
        return self._cache[h]

    def prob(self, w: int, h: tuple[int, ...] = ()) -> float:
        """P(w | h) under Katz back-off; h is cut to its last order - 1 tokens."""
        h = tuple(h[max(0, len(h) - self.order + 1):]) if self.order > 1 else ()
        row, total, alpha = self._row(h)
        if not h:
            return row.get(w, 0) / total if total else 0.0
        if not total:
            return self.prob(w, h[1:])
        if w in row:
            return (row[w] - (self.discount if alpha > 0.0 else 0.0)) / total
        return alpha * self.prob(w, h[1:])

    def predict(self, h: tuple[int, ...]) -> int | None:
        """The most probable next token after h, or None when no suffix of h (one token or more) was ever followed
        by anything: then the model would only guess the commonest token, which is no guess about this text."""
        h = tuple(h[max(0, len(h) - self.order + 1):]) if self.order > 1 else ()
        seen = set()
        for k in range(len(h)):
            seen.update(self._row(h[k:])[0])
        if not seen:
            return None
        if self._ranked is None:
            unigrams = self._row(())[0]
            self._ranked = sorted(unigrams, key=lambda t: -unigrams[t])
        rest = next((t for t in self._ranked if t not in seen), None)  # the best of the tokens never seen after h
        candidates = seen | ({rest} if rest is not None else set())
        return max(sorted(candidates), key=lambda t: self.prob(t, h))

    def guess(self, tokens: list[int], n: int) -> list[int]:
        """Up to n tokens continuing `tokens`, each the model's prediction given the ones before."""
        out: list[int] = []
        while len(out) < n:
            token = self.predict(tuple((tokens + out)[-(self.order - 1):]) if self.order > 1 else ())
            if token is None:
                break
            out.append(token)
        return out
