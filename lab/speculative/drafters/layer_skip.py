"""LayerSkip: Enabling Early Exit Inference and Self-Speculative Decoding (Elhoushi et al., 2024).

The one idea: the target's own first E layers, followed by its final norm and LM head (an early exit), are the
draft model; the full model verifies. There is no second model and no second KV cache: the draft reads the
keys and values that the full model already wrote for the verified context in layers < E (the paper's KV cache
reuse), so drafting never re-runs or prefills the context.

Departures from the paper:
- The paper trains with layer dropout and an early-exit loss so that early exits predict well. This method is
  training-free and runs the model as it is, so on SmolLM2-135M a half-depth exit accepts little; each Step's
  info names the exit layer and the draft probabilities show how unsure the early exit is.
- The paper's exit query cache (the verification continues from layer E for the draft tokens, reusing the
  draft's computation of layers < E) needs a runner forward that starts at a given layer from given hidden
  states; the runner has none yet, so the verification recomputes every layer (same tokens, more compute).
"""
from __future__ import annotations

from ...decoding import Decoding
from ...errors import LabError
from ...registry import method
from ...tree import Tree
from ..drafter import Drafter
from ..loop import speculate
from ..self_draft import chain_from_view, exit_layer


class EarlyExit(Drafter):
    """Chains drafted by the first `exit_layer(L, fraction)` layers of the target, on its own cache."""

    def __init__(self, dec: Decoding, exit_fraction: float, length: int):
        if length < 1:
            raise LabError(f"length must be >= 1, got {length}")
        self.layers = exit_layer(dec.target.num_layers, exit_fraction)
        self.view = dec.target.draft_on_cache(range(self.layers))
        self.length = length
        self.info = {"exit_layer": self.layers, "layers": dec.target.num_layers}

    @property
    def forwards(self) -> int:
        return self.view.forwards

    def propose(self, dec: Decoding, root: int) -> Tree:
        return chain_from_view(dec, self.view, root, min(self.length, dec.remaining))


@method("layer-skip", family="speculative", lossless=True, training_free=True,
        paper="LayerSkip: Enabling Early Exit Inference and Self-Speculative Decoding",
        departures="training-free: the model is not trained with layer dropout and an early-exit loss, so early "
                   "exits accept little; no exit query cache: the verification recomputes every layer")
def layer_skip(dec, *, exit_fraction: float = 0.5, length: int = 4):
    """Self-speculation by early exit: the first layers draft a chain, the full model verifies it."""
    yield from speculate(dec, EarlyExit(dec, exit_fraction, length))
