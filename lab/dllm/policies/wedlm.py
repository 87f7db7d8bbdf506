"""WeDLM: Reconciling Diffusion Language Models with Standard Causal Attention for Fast Inference (Liu et al., 2025).

The idea: decode masks under plain causal attention, so the KV cache stays an autoregressive one. A window of W
positions follows the committed text; each forward puts the window's filled tokens first and its masks after
(topological reordering: logical positions ride on RoPE), causally. Every mask whose entropy, plus a penalty
growing with its distance from the first mask, is below a threshold is filled (else the one with the lowest);
once the window's leading positions are all filled, they join the cache for good (they were computed causally,
in order, in that very forward) and the window slides on with fresh masks (streaming).
"""
from __future__ import annotations

import torch

from ...errors import LabError
from ...registry import method
from ...trace import Step
from .. import rules
from ..model import spec_of


@method("wedlm", family="diffusion", lossless=False,
        paper="WeDLM: Reconciling Diffusion Language Models with Standard Causal Attention for Fast Inference "
              "(Liu et al., 2025)",
        departures="Runs WeDLM's causal window on any dLLM of the lab: a model trained with block or global attention "
                   "sees less inside the window than it was trained with. On a shifted model a mask's prediction is "
                   "read at the row of the position before it (the last committed token's logits for the first).")
def wedlm(dec, *, window: int = 16, entropy_threshold: float = 0.4, position_penalty: float = 0.02):
    """WeDLM: a causal window of masks; fill the low-entropy ones, stream the filled prefix into the cache."""
    if window < 1:
        raise LabError("window must be >= 1")
    spec = spec_of(dec.target, "wedlm")
    backend, mask, P, length = dec.target, spec.mask_id, len(dec.prompt), dec.max_new_tokens
    last = dec.prefill()  # the logits after the last committed token (a shifted model's next prediction)
    base, filled = 0, {}  # output positions [0, base) are in the cache; filled: decided, not yet in the cache
    while base < length and not dec.done:
        span = range(base, min(base + window, length))
        order = [p for p in span if p in filled] + [p for p in span if p not in filled]
        tokens = [filled.get(p, mask) for p in order]
        before = backend.forwards
        k = len(order)
        logits = backend.forward(tokens, positions=[P + p for p in order],
                                 among=torch.ones(k, k, dtype=torch.bool).tril()).logits
        row = {p: i for i, p in enumerate(order)}
        masked = [p for p in span if p not in filled]
        if spec.shift:
            preds = torch.stack([last if p == base else logits[row[p - 1]] for p in masked]) if masked else None
        else:
            preds = logits[[row[p] for p in masked]] if masked else None
        prefix = 0
        while base + prefix in filled:
            prefix += 1
        if prefix:  # the window's filled lead joins the cache, as computed in this forward
            backend.keep(list(range(prefix)))
            last = logits[prefix - 1]
            for p in range(base, base + prefix):
                del filled[p]
            base += prefix
        else:
            backend.rollback(P + base)
        if preds is None:
            yield Step(forwards=backend.forwards - before, canvas=None, info={"pruned": prefix})
            continue
        preds = preds.index_fill(-1, torch.tensor([mask], device=preds.device), float("-inf"))
        chosen = rules.propose(preds, dec.sampling.temperature, dec.rng)
        sure = rules.confidence(preds, chosen, "entropy")  # minus the entropy
        chosen, sure = rules.host(chosen, sure)  # the step's one sync
        adjusted = [-c + position_penalty * (p - masked[0]) for c, p in zip(sure, masked)]
        rows = [r for r, a in enumerate(adjusted) if a < entropy_threshold] or [adjusted.index(min(adjusted))]
        for r in rows:
            filled[masked[r]] = chosen[r]
        canvas = [dec.tokens[p] if p < len(dec.tokens) else filled.get(p, -1) for p in range(length)]
        yield Step(committed=[chosen[r] for r in rows], origin=["plain"] * len(rows),
                   positions=[masked[r] for r in rows],
                   confidence=[round(sure[r], 6) for r in rows], canvas=canvas, forwards=backend.forwards - before,
                   info={"masked": masked, "predicted": chosen, "predicted_confidence": [round(c, 6) for c in sure],
                         "pruned": prefix})
