"""DySpec: a draft token tree whose shape follows the draft's confidence, grown greedily by a priority queue.

Paper: "DySpec: Faster Speculative Decoding with Dynamic Token Tree Structure" (Xiong et al., 2024).
The idea it adds to fixed-shape trees (SpecInfer, Sequoia): the chance that the target accepts a draft
token correlates with the draft's probability of it, so the product of draft probabilities along a path
estimates the chance the whole path is accepted. DySpec grows the tree greedily: a priority queue holds
every possible next expansion keyed by that estimate, and the best is popped until the node budget is
spent. A confident draft yields a deep narrow tree, an unsure one a wide shallow tree, per step.
At T > 0 the children of a node are sampled without replacement, each carrying its conditional q, and a
node's next-child key is its value times the draft mass not drawn yet (lab/speculative/best_first.py).

Departures from the paper: the draft is by default the lab's default draft (FastDraft on the default model). Rather than one
draft forward per popped node, growth goes in rounds with one draft forward each, over the nodes the
round added: the tree deepens by one level per round. At T = 0 the result is still exactly the `nodes`
most valuable paths (a better node found later evicts the worst leaf); at T > 0 a node that has no draft
logits yet gets its draw reserved when popped and drawn after the next forward, and its later siblings'
keys wait for that draw. A `max_depth` caps the tree so that a very confident draft does not spend a
step on one long chain.
"""
from __future__ import annotations

from typing import Iterator

from ...decoding import Decoding
from ...registry import method
from ...trace import Step
from ..best_first import BestFirstDrafter
from ..loop import speculate


def with_estimates(steps: Iterator[Step], drafter: BestFirstDrafter) -> Iterator[Step]:
    """Add to each speculative step what the priority queue did: the expected accepted length
    (the sum of the nodes' estimated acceptance) and the number of nodes run through the draft."""
    for step in steps:
        if step.proposed:
            step.info["expected_accepted"] = round(sum(drafter.values), 4)
            step.info["draft_rows"] = drafter.draft_rows
        yield step


@method("dyspec", family="speculative", lossless=True, training_free=True,
        paper="DySpec: Faster Speculative Decoding with Dynamic Token Tree Structure",
        departures="growth goes in rounds, one draft forward per level, not one per popped node (at T = 0 still "
                   "exactly the `nodes` most valuable paths); a max_depth cap; the default draft is the lab's trained FastDraft on the default model (four layers of its shape, not a separate small model) and the target's first half of layers, untrained, on other models")
def dyspec(dec: Decoding, *, nodes: int = 24, max_depth: int = 8, draft: str = "default"):
    """Dynamic draft tree grown greedily by estimated acceptance (product of draft probabilities)."""
    drafter = BestFirstDrafter(dec.lab.draft(draft), nodes=nodes, max_depth=max_depth)
    yield from with_estimates(speculate(dec, drafter), drafter)
