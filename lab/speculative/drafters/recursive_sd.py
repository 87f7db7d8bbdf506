"""Recursive Speculative Decoding: sibling drafts drawn without replacement, verified by recursive rejection.

Paper: "Recursive Speculative Decoding: Accelerating LLM Inference via Sampling Without Replacement"
(Jeon et al., 2024). The idea it adds to SpecInfer's tree: i.i.d. siblings often repeat a token, which wastes
tree nodes. RSD draws the children of a node without replacement, so siblings are always distinct. Child i is
drawn from q_i, the draft's q with the earlier siblings removed and renormalised, and recursive rejection
sampling verifies it against q_i: accept with min(1, p_i(x) / q_i(x)), else go on with the residual
p_{i+1} = norm(max(p_i - q_i, 0)). Each round hands on exactly the distribution it was handed, so the output is
the target's (`lab/speculative/verify.py` runs this rule when each node carries its own q_i).

Departures from the paper: this is RSD with constant branching factors per level (RSD-C). Siblings are drawn
one after another from the renormalised q, which has the same distribution as the paper's Gumbel-top-k draw;
the stochastic-beam-search variant (RSD-S) is not implemented. At temperature 0 the children are the draft's
top-k tokens (sampling without replacement at T -> 0), so RSD then equals SpecInfer with the same shape.
"""
from __future__ import annotations

from ...registry import method
from ..draft_trees import ShapeDrafter, branching_shape, parse_branching
from ..loop import speculate


@method("recursive-sd", family="speculative", lossless=True, training_free=True,
        paper="Recursive Speculative Decoding: Accelerating LLM Inference via Sampling Without Replacement",
        departures="RSD with constant branching per level (RSD-C) only, siblings drawn one after another from the "
                   "renormalised q (same law as Gumbel-top-k); no stochastic beam search (RSD-S); the default draft is the lab's trained FastDraft on the default model (four layers of its shape, not a separate small model) and the target's first half of layers, untrained, on other models")
def recursive_sd(dec, *, branching: str = "3,2,1,1", draft: str = "default"):
    """Draft token tree with distinct siblings (drawn without replacement), recursive rejection sampling."""
    shape = branching_shape(parse_branching(branching))
    yield from speculate(dec, ShapeDrafter(dec.lab.draft(draft), shape, replacement=False))
