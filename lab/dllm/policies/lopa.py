"""LoPA: Scaling dLLM Inference via Lookahead Parallel Decoding (Xu et al., 2025).

The idea: how many tokens a step can commit depends on the order tokens were filled in. Keep an anchor branch (the
usual rule: every position above a confidence threshold, else the surest) and k - 1 lookahead branches, each the
anchor plus one more of the next surest fills; run all branches in one forward and continue from the branch whose
remaining masks look surest (branch confidence: the mean of the lowest `branch_topp` share of their confidences,
mixed with the lookahead fill's own confidence by `alpha`).
"""
from __future__ import annotations

import torch

from ...errors import LabError
from ...registry import method
from .. import rules
from ..loop import commit_step, make_denoiser


@method("lopa", family="diffusion", lossless=False,
        paper="LoPA: Scaling dLLM Inference via Lookahead Parallel Decoding (Xu et al., 2025)",
        departures="All branches run as copies in one forward of one row (LoPA's branch parallelism spreads them over "
                   "devices) and count as one forward; confidence is the top probability (LoPA also offers entropy and "
                   "margin); branches stay inside the current block.")
def lopa(dec, *, branches: int = 3, threshold: float = 0.9, branch_topp: float = 1.0, alpha: float = 0.0,
         block_size: int = 0, cache: str = "auto"):
    """LoPA: an anchor branch and lookahead branches (one extra fill each); continue from the surest-looking one."""
    if branches < 1:
        raise LabError("branches must be >= 1")
    if not 0 < branch_topp <= 1 or not 0 <= alpha <= 1:
        raise LabError("branch_topp must be in (0, 1] and alpha in [0, 1]")
    den = make_denoiser(dec, "lopa", block_size, cache)
    backend = dec.target
    for start, end in den.blocks():
        candidates = [(den.canvas[start:end], 1.0)]  # (block contents, the lookahead fill's confidence)
        while den.masked(start, end):
            before = backend.forwards
            window, many = den.predict_many(start, end, [c for c, _ in candidates])
            futures = []  # on the device; one transfer for all branches
            for (content, _), logits in zip(candidates, many):
                rows = [j for j, p in enumerate(window)
                        if (content[p - start] if start <= p < end else den.canvas[p]) == den.mask]
                if rows:
                    conf = rules.confidence(logits[rows], logits[rows].argmax(-1)).sort().values
                    futures.append(conf[:max(1, int(len(rows) * branch_topp))].mean())
                else:
                    futures.append(torch.ones((), dtype=torch.float64, device=logits.device))
            scores = [alpha * created + (1 - alpha) * f
                      for (_, created), f in zip(candidates, torch.stack(futures).tolist())]
            win = max(range(len(candidates)), key=lambda k: scores[k])  # ties: the anchor
            looked_ahead = [p for p in range(start, end) if den.canvas[p] == den.mask
                            and candidates[win][0][p - start] != den.mask]
            logits = many[win]
            proposal = rules.propose(logits, dec.sampling.temperature, dec.rng)
            token_list, conf_list = rules.host(proposal, rules.confidence(logits, proposal))
            for p in looked_ahead:  # the winning branch's extra fill is decided now
                den.canvas[p] = candidates[win][0][p - start]
            live = [j for j, p in enumerate(window) if den.canvas[p] == den.mask]
            block = [j for j in live if start <= window[j] < end]
            fills = rules.above_threshold(conf_list, block, threshold)
            rest = [j for j in rules.rank(conf_list, block) if j not in fills]
            step = commit_step(den, window, token_list, conf_list, live, fills, backend.forwards - before,
                               branch_scores=[round(s, 6) for s in scores], winner=win, branches=len(candidates))
            if looked_ahead:  # shown as committed in this step too, with the branch's creation confidence
                step.positions = looked_ahead + step.positions
                step.committed = [den.canvas[p] for p in looked_ahead] + step.committed
                step.origin = ["plain"] * len(step.positions)
                step.confidence = [round(candidates[win][1], 6)] * len(looked_ahead) + step.confidence
            anchor = den.canvas[start:end]
            candidates = [(anchor, 1.0)]
            for j in rest[:branches - 1]:
                branch = list(anchor)
                branch[window[j] - start] = token_list[j]
                candidates.append((branch, conf_list[j]))
            yield step
