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
token for token and draw for draw. It is implemented by handing the verifier, at the fuzzy positions, the
draft's own distribution as the target row (acceptance is then certain); the rest is the shared verifier.
"""
from __future__ import annotations

import torch

from ...decoding import Decoding
from ...errors import LabError
from ...registry import method
from ...trace import Step
from ..tree import Tree
from ..verify import Verdict, verify_greedy, verify_stochastic
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
    """A draft runner that keeps the logits it returned during one proposal: row i is what node i was drawn from."""

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


def fuzzy_verify(dec: Decoding, tree: Tree, logits: torch.Tensor, draft_logits: torch.Tensor, threshold: float,
                 kind: str) -> tuple[Verdict, list[float], list[int]]:
    """Verify a chain, accepting node i for sure where divergence(target row i, draft row i) < threshold."""
    n = len(tree)
    divs = divergence_of(kind, logits[:n].float().softmax(-1), draft_logits.to(logits.device).float().softmax(-1))
    fuzzy = [i for i in range(n) if float(divs[i]) < threshold]
    if dec.greedy:
        rows = logits.clone()
        for i in fuzzy:
            rows[i] = 0.0
            rows[i, tree.tokens[i]] = 1.0
        verdict = verify_greedy(tree, rows)
    else:
        rows = dec.probs(logits)
        for i in fuzzy:
            q = tree.q[i]
            rows[i] = q.to(rows.device) if q is not None else torch.nn.functional.one_hot(
                torch.tensor(tree.tokens[i]), rows.shape[1]).to(rows)
        verdict = verify_stochastic(tree, rows, dec.rng)
    return verdict, [round(float(d), 4) for d in divs], fuzzy


def fuzzy_speculate(dec: Decoding, drafter: DraftModel, remembering: Remembering, threshold: float, kind: str):
    """`speculate`'s loop with the fuzzy verifier (the shared loop has no hook for a verifier)."""
    root = dec.choose(dec.prefill())
    yield Step(committed=[root], origin=["plain"], forwards=0, prefill=True)
    while not dec.done:
        before = drafter.forwards
        tree = drafter.propose(dec, root)
        if len(tree) == 0:
            root = dec.choose(dec.target.decode(root))
            yield Step(committed=[root], origin=["plain"], draft_forwards=drafter.forwards - before)
            continue
        tokens, parents = tree.with_root(root)
        logits = dec.target.forward(tokens, parents).logits
        verdict, divs, fuzzy = fuzzy_verify(dec, tree, logits, torch.stack(remembering.rows[:len(tree)]),
                                            threshold, kind)
        dec.target.keep([0] + [i + 1 for i in verdict.accepted])
        drafter.accepted(dec, tree, verdict, logits)
        committed, origin = verdict.committed(tree)
        root = verdict.bonus
        yield Step(committed=committed, origin=origin, proposed=list(tree.tokens), parents=list(tree.parents),
                   draft_probs=[round(p, 4) for p in tree.draft_probs], accepted=list(verdict.accepted),
                   bonus=verdict.bonus, draft_forwards=drafter.forwards - before,
                   info={"recovered": verdict.recovered, "divergence": divs,
                         "fuzzy_accepted": [i for i in verdict.accepted if i in fuzzy]})


@method("fuzzy-sd", family="speculative", lossless=False, training_free=True,
        paper="Fuzzy Speculative Decoding for a Tunable Accuracy-Runtime Tradeoff")
def fuzzy_sd(dec, *, threshold: float = 0.4, divergence: str = "js", draft: str = "layers:16",
             length: int = 4, adaptive: bool = True):
    """Fuzzy SD: accept a draft token when draft and target distributions diverge by less than `threshold`."""
    if threshold < 0:
        raise LabError(f"fuzzy-sd: threshold must be >= 0 (0 is exact speculative decoding), got {threshold}")
    divergence_of(divergence, torch.ones(1, 2) / 2, torch.ones(1, 2) / 2)  # a clear error for an unknown kind
    remembering = Remembering(dec.model.draft(draft))
    drafter = DraftModel(remembering, length, adaptive)
    yield from fuzzy_speculate(dec, drafter, remembering, threshold, divergence)
