"""CLaSp: In-Context Layer Skip for Self-Speculative Decoding (Chen et al., 2025).

The one idea: choose afresh which layers the draft skips, from the context itself. After a verification the
target's hidden states of the last verified token are known at every layer; a dynamic program walks the layers
with them as the objective. g(i, j) is the best draft state after layer i with j layers skipped so far, reached
either by running decoder layer i on g(i-1, j) (attending to the cached context, as the draft would) or by
skipping layer i from g(i-1, j-1), whichever is closer (cosine) to the full model's state after layer i. The
skip set behind g(L-1, M) drafts the next chains, through the kept layers on the target's own KV cache. Running
layer i on the candidate states is one batched call of the backend's `run_layer` per layer, about one forward of
M + 1 tokens. Sparse persistence: the skip sets of neighbouring rounds are nearly the same, so the programme runs
only every `every` verifications and the set is kept in between.

Departures: the last layer is always kept (its output is only known after the final norm), and before the first
verification the skipped layers are evenly spaced.
"""
from __future__ import annotations

import torch

from ...backends import Backend
from ...decoding import Decoding
from ...errors import LabError
from ...registry import method
from ...tree import Tree
from ..drafter import Drafter
from ..loop import speculate
from ..self_draft import chain_from_view, path_rows
from ..verify import Verdict

Table = list[dict[int, tuple[torch.Tensor, list[int]]]]  # per layer: j skipped -> (draft state, skipped layers)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))


def optimise(target: Backend, states: list[torch.Tensor], count: int, position: int) -> tuple[list[int], Table]:
    """CLaSp's dynamic programme for the token at `position` (its context is the target's cache before it):
    which `count` of layers 0 .. L-2 to skip, given its hidden states `states[0..L]` in the full model (the
    embedding, then after each layer). Returns the skip set and the table g (one row per layer)."""
    context = torch.arange(target.length) < position
    count = max(0, min(count, len(states) - 2))
    best: dict[int, tuple[torch.Tensor, list[int]]] = {0: (states[0].float(), [])}
    table: Table = []
    for i in range(len(states) - 2):  # the last layer always runs
        ran = target.run_layer(i, torch.stack([best[j][0] for j in sorted(best)]), [position] * len(best), context)
        run = {j: state for j, state in zip(sorted(best), ran)}
        row = {}
        for j in range(min(i + 1, count) + 1):
            options = ([(run[j], best[j][1])] if j in best else []) + \
                ([(best[j - 1][0], best[j - 1][1] + [i])] if j - 1 in best else [])
            row[j] = max(options, key=lambda option: _cosine(option[0], states[i + 1]))
        best = row
        table.append(row)
    return best[count][1], table


class InContextSkip(Drafter):
    """Chains drafted through the layers CLaSp keeps; the skip set is re-optimised every `every` verifications."""

    def __init__(self, dec: Decoding, skip: float, length: int, every: int):
        if not 0.0 <= skip < 1.0:
            raise LabError(f"skip is the fraction of layers to skip, in [0, 1); got {skip}")
        if length < 1 or every < 1:
            raise LabError(f"length and every must be >= 1, got {length} and {every}")
        self.num_layers = dec.target.num_layers
        self.count = max(0, min(round(skip * self.num_layers), self.num_layers - 1))
        spaced = torch.linspace(0, self.num_layers - 2, self.count).round().long().tolist() if self.count else []
        self.skipped = sorted(set(spaced))
        self.length, self.every = length, every
        self.rounds = 0  # verifications heard so far
        self.forwards = 0
        self.info: dict = {}
        self.taps: tuple[str, ...] = ()
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
        self.taps = ("hidden",) if self.rounds % self.every == 0 else ()  # this verification re-optimises
        self.info = {"skipped": list(self.skipped), "kept": len(view.layers), "layers": self.num_layers}
        return tree

    def accepted(self, dec: Decoding, tree: Tree, verdict: Verdict, logits: torch.Tensor, taps=None) -> None:
        """Layer optimisation on the last verified token: the last row of the committed path, the cache's last."""
        self.rounds += 1
        if "hidden" in (taps or {}):
            row = path_rows(verdict)[-1]
            self.skipped, _ = optimise(dec.target, [h[row] for h in taps["hidden"]], self.count,
                                       dec.target.length - 1)
            self.info["optimised"] = True


@method("clasp", family="speculative", lossless=True, training_free=True,
        paper="CLaSp: In-Context Layer Skip for Self-Speculative Decoding",
        departures="the last layer is always kept; the skipped layers are evenly spaced until the first "
                   "verification")
def clasp(dec, *, skip: float = 0.5, length: int = 4, every: int = 4):
    """Self-speculation skipping the layers a DP over the last verified token's states picks, every few rounds."""
    yield from speculate(dec, InContextSkip(dec, skip, length, every))
