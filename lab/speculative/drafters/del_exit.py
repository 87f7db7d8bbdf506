"""DEL: Context-Aware Dynamic Exit Layer for Efficient Self-Speculative Decoding (Zarch et al., 2025).

The one idea: pick the early-exit layer and the draft length anew every round, from what the context says about
each layer. The verification forward computes every layer's hidden state anyway; through the final norm and
the LM head they give each candidate exit's "shadow" prediction at the committed positions, so one verification
measures how often every exit would have been accepted (alpha_e, a decayed average). The next round drafts with
the exit e and length d that maximise tokens per layer, TPL(e, d) = (1 + alpha_e + ... + alpha_e^d) / (d e + L):
the expected tokens of a round over the layers it runs.

Departures from the paper:
- DEL's dynamic draft exiting (stopping a chain mid-round on a confidence threshold) is left out, and d >= 1
  always: a round without a draft would measure nothing.
- At T > 0 the agreement of exit e at a position is the exact acceptance probability sum(min(p, q_e)) of a
  token drawn from the exit's distribution; at T = 0 it is argmax agreement, as in the paper.
- Candidate exits are at most `candidates` evenly spaced layers (each costs one LM head per committed row).
"""
from __future__ import annotations

import torch

from ...decoding import Decoding
from ...errors import LabError
from ...registry import method
from ...tree import Tree
from ..drafter import Drafter
from ..loop import speculate
from ..self_draft import chain_from_view, exit_layer, path_rows
from ..verify import Verdict


def tokens_per_layer(alpha: float, exit_at: int, length: int, num_layers: int) -> float:
    """DEL's TPL: expected committed tokens of a round (accepted drafts + 1) per layer run."""
    expected = sum(alpha ** k for k in range(length + 1))
    return expected / (length * exit_at + num_layers)


class ExitTracker:
    """Decayed per-exit acceptance estimates and the (exit, length) they favour."""

    def __init__(self, num_layers: int, exits: list[int], decay: float, max_length: int):
        self.num_layers, self.exits, self.decay, self.max_length = num_layers, exits, decay, max_length
        self.alpha: dict[int, float] = {}

    def observe(self, agreement: dict[int, float]) -> None:
        for e, a in agreement.items():
            self.alpha[e] = a if e not in self.alpha else self.decay * self.alpha[e] + (1 - self.decay) * a

    def choose(self) -> tuple[int, int]:
        """The (exit layer, draft length) of highest TPL; half depth and length 4 before any measurement."""
        if not self.alpha:
            return exit_layer(self.num_layers, 0.5), min(4, self.max_length)
        options = [(tokens_per_layer(a, e, d, self.num_layers), -e, e, d)
                   for e, a in self.alpha.items() for d in range(1, self.max_length + 1)]
        _, _, e, d = max(options)
        return e, d


class DynamicExit(Drafter):
    def __init__(self, dec: Decoding, max_length: int, candidates: int, decay: float):
        if max_length < 1 or candidates < 1 or not 0.0 <= decay < 1.0:
            raise LabError("del needs max_length >= 1, candidates >= 1 and decay in [0, 1)")
        n = dec.target.num_layers
        exits = sorted(set(torch.linspace(1, max(1, n - 1), candidates).round().long().tolist()))
        self.tracker = ExitTracker(n, exits, decay, max_length)
        self.forwards = 0
        self.info: dict = {}
        self.taps = ("hidden",)  # accepted() learns from the verification's hidden states
        self._views: dict = {}

    def propose(self, dec: Decoding, root: int) -> Tree:
        e, d = self.tracker.choose()
        if e not in self._views:
            self._views[e] = dec.target.draft_on_cache(range(e))
        view = self._views[e]
        before = view.forwards
        tree = chain_from_view(dec, view, root, min(d, dec.remaining))
        self.forwards += view.forwards - before
        self.info = {"exit_layer": e, "length": d, "layers": self.tracker.num_layers,
                     "alpha": {str(k): round(v, 3) for k, v in sorted(self.tracker.alpha.items())}}
        return tree

    def accepted(self, dec: Decoding, tree: Tree, verdict: Verdict, logits: torch.Tensor, taps=None) -> None:
        self.tracker.observe(self.agreement(dec, taps["hidden"], logits, path_rows(verdict)))

    def agreement(self, dec: Decoding, hidden, logits: torch.Tensor, rows: list[int]) -> dict[int, float]:
        """Shadow predictions of every candidate exit at the committed rows, against the target's."""
        exits = self.tracker.exits
        states = torch.cat([hidden[e][rows] for e in exits])  # [exits * rows, H]
        shadow = dec.target.exit_logits(states).reshape(len(exits), len(rows), -1)
        target = logits[rows]
        if dec.greedy:
            agree = (shadow.argmax(-1) == target.argmax(-1)).float()
        else:
            agree = torch.minimum(dec.probs(shadow), dec.probs(target)[None]).sum(-1)
        return {e: float(a) for e, a in zip(exits, agree.mean(-1))}


@method("del", family="speculative", lossless=True, training_free=True,
        paper="DEL: Context-Aware Dynamic Exit Layer for Efficient Self-Speculative Decoding",
        departures="DEL's dynamic draft exiting (stopping a chain mid-round on a confidence threshold) is left out "
                   "and the draft length is at least 1; at T > 0 an exit's agreement is the exact acceptance "
                   "probability sum(min(p, q)); at most `candidates` evenly spaced exits")
def del_exit(dec, *, max_length: int = 8, candidates: int = 8, decay: float = 0.7):
    """Early-exit self-speculation whose exit layer and length follow each layer's measured acceptance."""
    yield from speculate(dec, DynamicExit(dec, max_length, candidates, decay))
