"""CLaSp: In-Context Layer Skip for Self-Speculative Decoding (Chen et al., 2025).

The one idea: after every verification, choose afresh which layers the draft skips, from the context itself.
A dynamic program walks the layers with the hidden states of the last verified token as the objective: g(i, j)
is the best draft state after layer i with j layers skipped so far, reached either by running layer i on
g(i-1, j) or by skipping it from g(i-1, j-1), whichever is closer (cosine) to the full model's state after layer
i. The skip set behind g(L, M) drafts the next chain, through the kept layers on the target's own KV cache.

Departures from the paper:
- The paper runs decoder layer i on each candidate state g(i-1, j) (attending to the cached context). The runner
  cannot run one layer on a given hidden vector yet, so layer i's effect on a candidate is taken to be its
  effect on the full model's own state, delta_i = h_i - h_(i-1) (first order: a residual layer adds about the
  same update to a nearby input). The DP, its objective and its per-round recomputation are the paper's.
- The last layer is never skipped: the runner returns the last hidden state after the final norm, so that
  layer's own update is unknown. Before the first verification the skipped layers are evenly spaced.
- The paper's sparse persistence (keeping a set for several rounds) is left out: the set is recomputed after
  every verification, as the method's own test checks.
"""
from __future__ import annotations

import torch

from ...decoding import Decoding
from ...errors import LabError
from ...registry import method
from ...tree import Tree
from ..drafter import Drafter
from ..loop import speculate
from ..self_draft import chain_from_view, path_rows
from ..verify import Verdict


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def select_skipped(states: list[torch.Tensor], count: int) -> list[int]:
    """CLaSp's dynamic program: which `count` of layers 0 .. L-2 to skip, given one token's hidden states
    `states[0..L]` (embedding, then after each layer). Layer i's update on any input is approximated by
    states[i + 1] - states[i]."""
    h = [s.double().reshape(-1) for s in states]
    candidates = len(h) - 2  # the last layer stays
    count = max(0, min(count, candidates))
    best: dict[int, tuple[torch.Tensor, list[int]]] = {0: (h[0], [])}  # j skipped -> (state, skipped layers)
    for i in range(candidates):
        update, goal, row = h[i + 1] - h[i], h[i + 1], {}
        for j in range(min(i + 1, count) + 1):
            options = []
            if j in best:  # run layer i
                options.append((best[j][0] + update, best[j][1]))
            if j - 1 in best:  # skip layer i
                options.append((best[j - 1][0], best[j - 1][1] + [i]))
            row[j] = max(options, key=lambda option: _cosine(option[0], goal))
        best = row
    return best[count][1]


class InContextSkip(Drafter):
    """Chains drafted through the layers CLaSp keeps; the skip set is recomputed after each verification."""

    def __init__(self, dec: Decoding, skip: float, length: int):
        if not 0.0 <= skip < 1.0:
            raise LabError(f"skip is the fraction of layers to skip, in [0, 1); got {skip}")
        if length < 1:
            raise LabError(f"length must be >= 1, got {length}")
        self.num_layers = dec.target.num_layers
        self.count = max(0, min(round(skip * self.num_layers), self.num_layers - 1))
        spaced = torch.linspace(0, self.num_layers - 2, self.count).round().long().tolist() if self.count else []
        self.skipped = sorted(set(spaced))
        self.length = length
        self.forwards = 0
        self.history: list[list[int]] = []  # the skip set of every proposal, for tests and views
        self.info: dict = {}
        self.taps = ("hidden",)  # accepted() learns from the verification's hidden states
        self._views: dict = {}

    def view(self, dec: Decoding):
        kept = tuple(i for i in range(self.num_layers) if i not in self.skipped)
        if kept not in self._views:
            self._views[kept] = dec.target.draft_on_cache(kept)
        return self._views[kept]

    def propose(self, dec: Decoding, root: int) -> Tree:
        view = self.view(dec)
        before = view.forwards
        tree = chain_from_view(dec, view, root, min(self.length, dec.remaining))
        self.forwards += view.forwards - before
        self.history.append(list(self.skipped))
        self.info = {"skipped": list(self.skipped), "kept": len(view.layers), "layers": self.num_layers}
        return tree

    def accepted(self, dec: Decoding, tree: Tree, verdict: Verdict, logits: torch.Tensor, taps=None) -> None:
        """Layer optimisation on the last verified token: the last row of the committed path."""
        row = path_rows(verdict)[-1]
        self.skipped = select_skipped([h[row] for h in taps["hidden"]], self.count)


@method("clasp", family="speculative", lossless=True, training_free=True,
        paper="CLaSp: In-Context Layer Skip for Self-Speculative Decoding",
        departures="layer i's effect on a candidate state is approximated by its effect on the full model's own "
                   "state (delta_i = h_i - h_(i-1)) instead of running layer i on the candidate; the last layer is "
                   "never skipped; no sparse persistence: the skip set is recomputed after every verification")
def clasp(dec, *, skip: float = 0.5, length: int = 4):
    """Self-speculation skipping the layers a DP picks after each verification from the context's hidden states."""
    yield from speculate(dec, InContextSkip(dec, skip, length))
