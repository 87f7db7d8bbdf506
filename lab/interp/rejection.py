"""Why a draft was rejected: the route behind the target's token, read against the rejected draft token.

A speculative step (a Trace Step with `proposed`, `accepted` and `bonus`) is rejected at the first drafted
position the target disagrees with: there the target chose `bonus` and the draft had proposed another token.
`rejection` rebuilds that context (the prompt, the tokens committed before the step, the accepted drafts), takes
the route to the target's prediction there ("Information Flow Routes", Ferrando & Voita, 2024) and scores every
part that writes into the predicting position by its direct effect on logit(target) - logit(draft) (the final
norm frozen, lab/backends/readout.py): positive parts argued for the target's token, negative ones for the
draft's. For self-speculation with an early exit (layer-skip, del: `exit_layer` in the Step's info) the draft's
own route is the route from the stream after that layer, which is exactly what the draft computed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..backends.readout import direct_logits
from ..errors import LabError
from ..trace import Trace
from .flow import Flow, flow
from .lens import head_output, stream, token_rank
from .routes import TAU, Route


@dataclass
class Rejection:
    """The first rejected position of one speculative step, and what the target's route says about it."""

    step: int
    method: str
    context: list[int]  # token ids up to the predicting position
    accepted: int  # draft tokens accepted before it
    target: int  # the target's token there (the step's bonus)
    draft: int  # the first rejected draft token there
    target_piece: str
    draft_piece: str
    route: Route
    contrast: dict[str, float]  # route edge "src>dst:kind" into the predicting position -> logit difference
    heads: torch.Tensor  # [L, H]: each head's direct effect on logit(target) - logit(draft)
    ffn: torch.Tensor  # [L]: each FFN block's
    ranks: dict[str, list[int]]  # "target" / "draft" -> rank at every stage 0 .. L
    exit_layer: int | None = None
    draft_route: Route | None = None
    exit_token: int | None = None  # what the early exit predicts there (the draft token, for layer-skip)
    flow: Flow | None = field(default=None, repr=False)

    @property
    def position(self) -> int:
        return len(self.context) - 1

    def summary(self) -> str:
        top = sorted(((float(v), f"L{i // self.heads.shape[1]}H{i % self.heads.shape[1]}")
                      for i, v in enumerate(self.heads.flatten())), reverse=True)
        return (f"{self.method} step {self.step}: after {self.accepted} accepted, the target chose "
                f"{self.target_piece!r} over the draft's {self.draft_piece!r}; route of {self.route.size} edges; "
                f"heads for the target: {', '.join(n for _, n in top[:3])}; for the draft: "
                f"{', '.join(n for _, n in top[::-1][:3])}")


def first_rejection(trace: Trace, step: int | None = None):
    """(step index, context, accepted count, target token, draft token) of the first rejection in `step` (or in the
    first step that has one), or None."""
    steps = range(len(trace.steps)) if step is None else [step]
    for n in steps:
        s = trace.steps[n]
        if not s.proposed or s.bonus is None or not s.positions:
            continue
        last = s.accepted[-1] if s.accepted else -1
        rejected = [i for i, p in enumerate(s.parents) if p == last]
        if not rejected:
            continue  # every drafted token on the path was accepted
        accepted = [s.proposed[i] for i in s.accepted]
        start = s.positions[0]
        context = list(trace.prompt) + list(trace.tokens[:start]) + accepted
        return n, context, len(accepted), int(s.bonus), int(s.proposed[rejected[0]])
    return None


@torch.no_grad()
def rejection(lab, trace: Trace, step: int | None = None, *, tau: float = TAU) -> Rejection | None:
    """The first rejection of `trace` (or of step `step`), explained by the target's route; None if none."""
    if step is not None and not 0 <= step < len(trace.steps):
        raise LabError(f"step {step} is outside the trace's {len(trace.steps)} steps")
    found = first_rejection(trace, step)
    if found is None:
        return None
    n, context, accepted, target, draft = found
    f = flow(lab, context)
    p = len(context) - 1
    route = f.route(p, tau)
    final = stream(f, f.layers)[p]
    vocab = torch.tensor([target, draft])

    def contrast(vectors: torch.Tensor) -> torch.Tensor:
        pair = direct_logits(lab.target, vectors, final, vocab).float().cpu()
        return pair[..., 0] - pair[..., 1]

    heads = contrast(torch.stack([torch.stack([head_output(f, layer, h, p) for h in range(f.heads)])
                                  for layer in range(f.layers)]))
    ffn = contrast(torch.stack([part.mlp[p] for part in f.parts.layers]))
    edges = {}
    for e in route.edges:
        if e.dst_token != p or e.kind == "residual":
            continue
        parts = f.parts.layers[e.layer]
        j = e.src_token
        vector = parts.mlp[p] if e.kind == "ffn" else parts.attention[:, p, j] @ parts.head_values[j]
        edges[f"{e.src}>{e.dst}:{e.kind}"] = round(float(contrast(vector)), 4)
    ranks = {"target": token_rank(lab, f, target, p), "draft": token_rank(lab, f, draft, p)}
    out = Rejection(n, trace.method, context, accepted, target, draft, lab.token_text(target), lab.token_text(draft),
                    route, edges, heads, ffn, ranks, flow=f)
    exit_at = trace.steps[n].info.get("exit_layer")
    if isinstance(exit_at, int) and 0 < exit_at < f.layers:
        out.exit_layer, out.draft_route = exit_at, f.route(p, tau, layer=exit_at)
        out.exit_token = int(lab.target.exit_logits(stream(f, exit_at)[p:p + 1]).argmax(-1))
    return out
