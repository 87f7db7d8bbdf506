"""SpecInfer: a token tree from a draft model, verified in one forward by multi-round speculative sampling.

Paper: "SpecInfer: Accelerating Large Language Model Serving with Tree-based Speculative Inference and
Verification" (Miao et al., 2024). The idea it adds to speculative sampling: instead of one chain, the draft
expands a token tree with a fixed expansion shape (children per node at each level), the target scores the whole
tree in one forward with a tree attention mask, and the verifier walks it with multi-round rejection: at each
accepted node its children are tried in order against the target's residual distribution. At temperature 0 the
children are the draft's top-k tokens; at T > 0 they are drawn i.i.d. from the draft's distribution q (each
carrying q), which keeps the output exactly the target's.

Departures from the paper: one draft model (SpecInfer can pool several boost-tuned small models), by default
the lab's default draft (FastDraft on the default model). A token drawn twice among siblings stays in the tree (the verifier needs every
draw) but is not expanded: after its first copy is rejected it has residual probability 0.
"""
from __future__ import annotations

from ...registry import method
from ..draft_trees import ShapeDrafter, branching_shape, parse_branching
from ..loop import speculate


@method("specinfer", family="speculative", lossless=True, training_free=True,
        paper="SpecInfer: Accelerating Large Language Model Serving with Tree-based Speculative Inference and "
              "Verification",
        departures="one draft model (the paper can pool several boost-tuned ones); a token drawn twice among "
                   "siblings stays in the tree but is not expanded; the default draft is the lab's trained FastDraft on the default model (four layers of its shape, not a separate small model) and the target's first half of layers, untrained, on other models")
def specinfer(dec, *, expansion: str = "2,2,1,1", draft: str = "default"):
    """Draft token tree of a fixed expansion shape (children per level, '2,2,1,1'), multi-round verification."""
    shape = branching_shape(parse_branching(expansion))
    yield from speculate(dec, ShapeDrafter(dec.lab.draft(draft), shape, replacement=True))
