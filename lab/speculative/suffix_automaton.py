"""A suffix automaton over token ids: every substring of a growing text, built online in linear time.

The automaton of Blumer et al. (1985): one state per class of substrings with the same end positions,
a transition per next token and a suffix link to the longest suffix in another class; appending a token
adds at most two states (amortised O(1)). SAM Decoding drafts with two of them: a static one over a
corpus, matched against the context token by token (`Match`), and a dynamic one over the prompt and the
generated text, where the longest earlier repeat of the context's suffix is simply `link[last]`.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Match:
    """Where a token stream stands in a (static) automaton: its longest suffix found there."""

    state: int = 0
    length: int = 0


class SuffixAutomaton:
    """States 0..n: `next[s]` (token -> state), `link[s]`, `length[s]` (its longest string), `end[s]`
    (an end position of its strings in `tokens`: the first one, refreshed by `repeat` to a recent one)."""

    def __init__(self, tokens=()):
        self.next: list[dict[int, int]] = [{}]
        self.link: list[int] = [-1]
        self.length: list[int] = [0]
        self.end: list[int] = [-1]
        self.tokens: list[int] = []
        self.last = 0
        self.extend(tokens)

    def __len__(self) -> int:
        """Number of states (at most 2n - 1 for a text of n >= 2 tokens)."""
        return len(self.length)

    def _state(self, length: int, end: int, link: int = -1, nxt: dict | None = None) -> int:
        self.next.append(dict(nxt or {}))
        self.link.append(link)
        self.length.append(length)
        self.end.append(end)
        return len(self.length) - 1

    def append(self, token: int) -> None:
        """Extend the text by one token (the classic online construction)."""
        token = int(token)
        self.tokens.append(token)
        cur = self._state(self.length[self.last] + 1, len(self.tokens) - 1)
        p = self.last
        while p != -1 and token not in self.next[p]:
            self.next[p][token] = cur
            p = self.link[p]
        if p == -1:
            self.link[cur] = 0
        else:
            q = self.next[p][token]
            if self.length[p] + 1 == self.length[q]:
                self.link[cur] = q
            else:  # split q: its shorter strings also end here now
                clone = self._state(self.length[p] + 1, self.end[q], self.link[q], self.next[q])
                while p != -1 and self.next[p].get(token) == q:
                    self.next[p][token] = clone
                    p = self.link[p]
                self.link[q] = self.link[cur] = clone
        self.last = cur

    def extend(self, tokens) -> None:
        for token in tokens:
            self.append(token)

    def repeat(self) -> tuple[int, int]:
        """(length, end) of the longest suffix of the text that also occurs earlier, ending at `end`.

        The strings of `last` occur only at the very end, so the longest suffix seen before is the
        longest string of `link[last]`; its `end` lies before the last token, so a continuation exists.
        The state then remembers the current end, so the next lookup copies the most recent repeat.
        """
        state = self.link[self.last]
        if state <= 0:
            return 0, -1
        length, end = self.length[state], self.end[state]
        self.end[state] = len(self.tokens) - 1
        return length, end

    def follow(self, match: Match, token: int) -> Match:
        """Extend a stream matched against this automaton by one token (suffix links on a mismatch)."""
        state, length = match.state, match.length
        while state > 0 and token not in self.next[state]:
            state = self.link[state]
            length = self.length[state]
        if token in self.next[state]:
            return Match(self.next[state][token], length + 1)
        return Match(0, 0)

    def continuation(self, end: int, n: int) -> list[int]:
        """Up to n tokens of the text after position `end`, up to a separator (a negative token) if any."""
        out = self.tokens[end + 1:end + 1 + n] if end >= 0 else []
        return out[:next((i for i, t in enumerate(out) if t < 0), len(out))]
