"""A Jacobi window: guesses for the next n tokens, refreshed from the target's own outputs after each forward.

Shared by the Jacobi-iteration drafters (`jacobi`, `sjd`). The window is forwarded as a chain behind the root;
the verifier keeps its longest correct prefix; the target's outputs at the positions after the committed
ones become the next guesses (one Jacobi fixed-point step). How an output becomes a guess is the method's
rule: its argmax (Jacobi) or a draw from it that remembers the distribution (speculative Jacobi).
Positions the target has not predicted yet are filled with tokens picked at random from the context
(Lookahead decoding's initialisation), from the window's own seeded stream so the run's stream is untouched.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..decoding import Decoding
from ..errors import LabError
from ..tree import Tree
from .drafter import Drafter
from .verify import Verdict

# (dec, logits of one position) -> (guess, the distribution it was drawn from or None for a fixed guess)
GuessRule = Callable[[Decoding, torch.Tensor], "tuple[int, torch.Tensor | None]"]


def fill_from_context(context: list[int], count: int, generator: torch.Generator) -> list[int]:
    """`count` tokens picked uniformly at random from the context (initial guesses carry no information)."""
    if count <= 0 or not context:
        return []
    picks = torch.randint(len(context), (count,), generator=generator).tolist()
    return [int(context[i]) for i in picks]


class JacobiWindow(Drafter):
    """A drafter whose draft is the current Jacobi iterate of the next `size` tokens."""

    def __init__(self, size: int, rule: GuessRule, seed: int = 0):
        if size < 1:
            raise LabError(f"window must be >= 1 (the number of guessed tokens), got {size}")
        self.size = size
        self.rule = rule
        self.guesses: list[int] = []
        self.q: list[torch.Tensor | None] = []
        self.filler = torch.Generator().manual_seed(seed)
        self.rejected_drawn = False  # the last verification rejected a drawn guess (residual resampling)

    def propose(self, dec: Decoding, root: int) -> Tree:
        missing = self.size - len(self.guesses)
        self.guesses += fill_from_context(dec.context, missing, self.filler)
        self.q += [None] * missing
        n = min(self.size, dec.remaining)
        return Tree.from_chain(self.guesses[:n], q=self.q[:n]) if n > 0 else Tree()

    def accepted(self, dec: Decoding, tree: Tree, verdict: Verdict, logits: torch.Tensor, taps=None) -> None:
        """Jacobi step: the outputs after the committed prefix become the next guesses."""
        kept = len(verdict.accepted)  # the bonus replaced node `kept`; node i's output is row i + 1
        self.rejected_drawn = kept < len(tree) and tree.q[kept] is not None
        rows = logits[kept + 1: len(tree) + 1]
        new = [self.rule(dec, row) for row in rows]
        self.guesses = [token for token, _ in new]
        self.q = [q for _, q in new]
