"""Fuzzy speculative decoding: where draft and target nearly agree, accept the draft token outright.

Paper: "Fuzzy Speculative Decoding for a Tunable Accuracy-Runtime Tradeoff" (Holsman, Huang, Dhingra, 2025).
The one idea: exact speculative decoding insists on the target's distribution token by token. FSD measures,
at each draft position, the divergence between the target's and the draft's next-token distributions (the
plain softmax of both models' logits, as in the paper; JS by default) and accepts the draft token whenever it
is below a threshold T: close distributions mean the swap costs little quality. Larger T accepts more and
runs faster, but the output is no longer the target's (lossy). Drafting is `sps`'s (chains from a draft model
with adaptive length).

Departure (asked by the lab): where the divergence is >= T the paper rejects and samples from the target;
here the token gets exact speculative sampling instead (it may still be accepted). So T = 0 is exactly `sps`,
token for token and draw for draw. The fuzzy verifier plugs into the one loop: it hands the exact verifier, at
the fuzzy positions, the draft's own distribution as the target row (acceptance is then certain).
"""
from __future__ import annotations

import torch

from ...decoding import Decoding
from ...errors import LabError
from ...registry import method
from ...tree import Tree
from ..loop import Verifier, speculate
from ..verify import Verdict, greedy_tree, rejection_tree
from .sps import DraftModel


def divergence_of(kind: str, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Row-wise divergence between target p and draft q [k, V]: 'js' (nats, <= ln 2), 'kl' (q || p), 'tv'."""
    p, q = p.float(), q.float()
    if kind == "tv":
        return 0.5 * (p - q).abs().sum(-1)
    if kind == "kl":
        return (torch.xlogy(q, q) - torch.xlogy(q, p.clamp_min(1e-30))).sum(-1)
    if kind == "js":
        m = 0.5 * (p + q)
        kl = lambda a: (torch.xlogy(a, a) - torch.xlogy(a, m.clamp_min(1e-30))).sum(-1)  # noqa: E731
        return 0.5 * kl(p) + 0.5 * kl(q)
    raise LabError(f"fuzzy-sd: unknown divergence {kind!r}; use js, kl or tv")


class Remembering:
    """A draft backend that keeps the logits it returned during one proposal: row i is what node i was drawn from."""

    def __init__(self, runner):
        self.runner = runner
        self.rows: list[torch.Tensor] = []

    @property
    def forwards(self) -> int:
        return self.runner.forwards

    def sync(self, context: list[int]) -> torch.Tensor:
        logits = self.runner.sync(context)
        self.rows = [logits]
        return logits

    def decode(self, token: int) -> torch.Tensor:
        logits = self.runner.decode(token)
        self.rows.append(logits)
        return logits


class FuzzyVerifier(Verifier):
    """Accept node i for sure where divergence(target row i, draft row i) < threshold; exact elsewhere."""

    def __init__(self, remembering: Remembering, threshold: float, kind: str):
        self.remembering, self.threshold, self.kind = remembering, threshold, kind

    def verify(self, dec: Decoding, tree: Tree, logits: torch.Tensor) -> Verdict:
        n = len(tree)
        if not n:
            return greedy_tree(tree, logits) if dec.greedy else rejection_tree(tree, dec.probs(logits), dec.rng)[0]
        draft = torch.stack(self.remembering.rows[:n]).to(logits.device).float()
        divs = divergence_of(self.kind, logits[:n].float().softmax(-1), draft.softmax(-1))
        fuzzy = divs < self.threshold
        tokens = torch.tensor(tree.tokens, device=logits.device)
        sure = torch.nn.functional.one_hot(tokens, logits.shape[1]).to(logits.dtype)  # the draft token for sure
        if dec.greedy:
            rows = logits.clone()
            rows[:n] = torch.where(fuzzy[:, None], sure, rows[:n])
            verdict = greedy_tree(tree, rows)
        else:
            rows = dec.probs(logits)
            q = torch.stack([tree.q[i].to(rows) if tree.q[i] is not None else sure[i] for i in range(n)])
            rows[:n] = torch.where(fuzzy[:, None], q, rows[:n])
            verdict = rejection_tree(tree, rows, dec.rng)[0]
        divs, fuzzy = [round(d, 4) for d in divs.tolist()], fuzzy.tolist()
        verdict.info.update(divergence=divs, fuzzy_accepted=[i for i in verdict.accepted if fuzzy[i]])
        return verdict


@method("fuzzy-sd", family="speculative", lossless=False, training_free=True,
        paper="Fuzzy Speculative Decoding for a Tunable Accuracy-Runtime Tradeoff",
        departures="where the divergence is at or above the threshold the token gets exact speculative sampling "
                   "(it may still be accepted) instead of the paper's rejection, so threshold 0 is exactly sps; "
                   "the default draft is the lab's trained FastDraft on the default model (four layers of its shape, not a separate small model) and the target's first half of layers, untrained, on other models")
def fuzzy_sd(dec, *, threshold: float = 0.4, divergence: str = "js", draft: str = "default",
             length: int = 4, adaptive: bool = True):
    """Fuzzy SD: accept a draft token when draft and target distributions diverge by less than `threshold`."""
    if threshold < 0:
        raise LabError(f"fuzzy-sd: threshold must be >= 0 (0 is exact speculative decoding), got {threshold}")
    divergence_of(divergence, torch.ones(1, 2) / 2, torch.ones(1, 2) / 2)  # a clear error for an unknown kind
    remembering = Remembering(dec.lab.draft(draft))
    drafter = DraftModel(remembering, length, adaptive, bursts=False)  # the verifier reads each node's draft logits
    yield from speculate(dec, drafter, FuzzyVerifier(remembering, threshold, divergence))
