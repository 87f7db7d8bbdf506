"""Free Draft-and-Verification: Toward Lossless Parallel Decoding for Diffusion Large Language Models
(FreeDave, 2025).

The idea: one forward already ranks every masked position; take its next few decisions as a draft (the surest
position and token, then the next surest ...), build the canvases those decisions lead to, and run them all in
one forward. Candidate j verifies draft decision j + 1: it is exactly what one-token-per-step decoding would do
from candidate j. Accept the longest verified run; the forward on the last accepted canvas is the next round's
draft, for free. The output is that of one-token-per-step low-confidence decoding (`llada` with steps=0), token
for token, in fewer forwards.
"""
from __future__ import annotations

from ...errors import LabError
from ...registry import method
from ..loop import check_order, decision, draft_and_verify


@method("freedave", family="diffusion", lossless=True,
        paper="Free Draft-and-Verification: Toward Lossless Parallel Decoding for Diffusion Large Language Models "
              "(Wu and Zhang, 2025)",
        departures="Lossless with respect to the lab's one-token-per-step low-confidence decoding (llada steps=0, same "
                   "block_size and cache); drafts stay inside the current block; a round's candidates run as copies "
                   "in one forward of one row (each sees the cached context and itself) and count as one forward; "
                   "order=left-to-right verifies against llada remasking=left_to_right instead, order=leftmost-N "
                   "against llada leftmost=N and leftmost-N@T against llada leftmost=N sure=T (the lab's additions).")
def freedave(dec, *, drafts: int = 4, block_size: int = 0, cache: str = "auto", order: str = "confidence"):
    """FreeDave: draft the next decisions from one forward, verify them all in the next; one-per-step exactly
    (order: the reference's commit order, `llada remasking=low_confidence`, `left_to_right`, `leftmost=N`
    (leftmost-N) or `leftmost=N sure=T` (leftmost-N@T))."""
    if drafts < 1:
        raise LabError("drafts must be >= 1")
    check_order(order)

    def verify(den, window, logits, start, end, ranked, tokens, conf):
        draft = ranked[:drafts]  # rows of the window, in the reference's order; draft[0] is certain
        candidates = []
        for j in range(1, min(len(draft), len(ranked) - 1) + 1):  # canvas after the first j decisions (masks left)
            block = den.canvas[start:end]
            for r in draft[:j]:
                block[window[r] - start] = tokens[r]
            candidates.append(block)
        accepted, after = 1, None
        if candidates:
            cwindow, many = den.predict_many(start, end, candidates)
            saved = list(den.canvas)
            while accepted <= len(candidates):
                den.canvas[start:end] = candidates[accepted - 1]
                order_j, tokens_j = decision(den, cwindow, many[accepted - 1], start, end, order)[:2]
                after = cwindow, many[accepted - 1]
                if accepted == len(draft):
                    break
                r = draft[accepted]
                if (cwindow[order_j[0]], tokens_j[order_j[0]]) != (window[r], tokens[r]):
                    break  # one-token-per-step decoding would choose otherwise here
                accepted += 1
            den.canvas = saved
        after = after if accepted <= len(candidates) else None
        return draft[:accepted], tokens, conf, after, {"drafted": len(draft), "verified_rows": len(candidates)}

    return draft_and_verify(dec, "freedave", block_size, cache, verify, order)
