"""The sampling check behind tests/test_distribution.py: does a method sample exactly from the target?

The target is a tiny random model over 8 tokens whose attention is damped, so that its next token depends
mostly on the last one (a nearly Markov chain, still context-dependent enough that a wrong cache or mask would
show). Every position's next-token distribution is enumerated exactly: one teacher-forced forward over a
generated text gives all of them, under the run's own rule (temperature, and top-k / top-p on every other run).
Two exact consequences of losslessness are tested, each by a chi-square:

- `pairs`: the count of every (previous token, token) pair against its expectation, the sum of the exact
  conditionals of the positions with that previous token. Because the target is nearly Markov, a verifier bug
  shifts the same cells at every position that follows the same token, so the shifts add up.
- `u`: a randomised probability integral transform of each token under its exact conditional p, tokens sorted
  by p: u = P(a token more likely than x) + V p(x), V ~ U(0, 1). Given everything before it, u is exactly
  uniform, so all u's are i.i.d. uniform however the drafter's state depends on earlier tokens or runs. Tested
  for all tokens, and apart for the target's own tokens after an accepted leaf (nothing else was tried there,
  so each is a plain draw from p: the bug that draws it from the parent's row hides in these).

The draft of the draft-model methods is the target with its LM head permuted and sharpened: confident and
wrong, so drafts are mostly rejected, sometimes accepted two or three deep, and every residual is far from p.
Runs are long (lookup pools fill, PEARL drafts ahead), and `Report` counts what verification went through.
`MUTANTS` are three verifier bugs an earlier, two-token version of this test let pass.
"""
from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field

import torch
from scipy.stats import chi2, chisquare

from lab.models import tiny
from lab.sampling import Sampling, draw
from lab.speculative.verify import Verdict, greedy_tree
from lab.tree import depths

VOCAB, T = 8, 1.0
PROMPT = [1, 2, 3, 1, 2, 3, 1, 2]  # repeats, so that lookup drafters propose from the first step
PLAIN = Sampling(temperature=T)
TRUNCATED = Sampling(temperature=T, top_k=6, top_p=0.9)
DAMPING = 0.2  # attention output scale of the target
SHIFT, SHARPEN = 1, 2.0  # the draft's head: token x gets the target's logit of x + 1, doubled


def target_and_draft():
    """The nearly Markov target, and a draft that puts most of its mass where the target puts little."""
    target = tiny("llama", vocab_size=VOCAB, layers=2, hidden=32, seed=3, init_std=0.3)
    with torch.no_grad():
        for layer in target.model.layers:
            layer.self_attn.o_proj.weight.mul_(DAMPING)
        draft = copy.deepcopy(target)
        order = (torch.arange(VOCAB) + SHIFT) % VOCAB
        draft.lm_head.weight.copy_(target.lm_head.weight[order] * SHARPEN)
    return target, draft


@dataclass
class Report:
    """What the runs of one method did: its chi-square p-values and what verification went through."""

    u: list[float] = field(default_factory=list)
    fresh: list[int] = field(default_factory=list)  # indices into u of the target's tokens after an accepted leaf
    observed: torch.Tensor = field(default_factory=lambda: torch.zeros(VOCAB, VOCAB, dtype=torch.float64))
    expected: torch.Tensor = field(default_factory=lambda: torch.zeros(VOCAB, VOCAB, dtype=torch.float64))
    impossible: int = 0  # tokens the (truncated) target gives probability 0
    steps: int = 0  # steps that proposed something
    deep: int = 0  # ... whose tree reaches depth 2 or more
    multi: int = 0  # ... that accepted two drafts or more
    bonus: int = 0  # ... whose target token follows an accepted draft
    rejected: int = 0  # ... where every child of the last accepted node was rejected (a residual draw)
    modes: Counter = field(default_factory=Counter)  # Step.info["mode"] (PEARL, DuoDecoding)
    kinds: Counter = field(default_factory=Counter)  # Step.info["kind"]: which prepared work was used (SpecBranch)

    def count(self, step, offset: int) -> None:
        """Count a step; `offset` is where its run starts in `u` (its positions index from there)."""
        if not step.proposed:
            return
        self.steps += 1
        self.deep += max(depths(step.parents)) >= 2
        self.multi += len(step.accepted) >= 2
        self.bonus += bool(step.accepted) and step.bonus is not None
        self.rejected += bool(step.info.get("recovered"))
        if "mode" in step.info:
            self.modes[step.info["mode"]] += 1
        if step.info.get("kind"):
            self.kinds[step.info["kind"]] += 1
        if step.accepted and not step.info.get("recovered") and step.origin and step.origin[-1] == "bonus":
            self.fresh.append(offset + step.positions[-1])

    @property
    def p(self) -> dict[str, float]:
        """The three chi-square p-values (the target's tokens after a leaf only once there are enough)."""
        out = {"u": uniform_p(self.u, 10), "pairs": pairs_p(self.observed, self.expected)}
        if len(self.fresh) >= 25:
            out["u after a leaf"] = uniform_p([self.u[i] for i in self.fresh], 5)
        return out


def conditionals(model, prompt: list[int], tokens: list[int], sampling: Sampling) -> torch.Tensor:
    """The target's exact distribution [len(tokens), V] of each generated token given everything before it."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + tokens[:-1]])).logits[0, len(prompt) - 1:]
    return sampling.probs(logits).double()


def transform(probs: torch.Tensor, tokens: list[int], rng: torch.Generator) -> tuple[torch.Tensor, int]:
    """The randomised PIT of each token under its row of `probs`, tokens sorted by probability (ties by id);
    also how many tokens had probability 0."""
    x = torch.tensor(tokens)
    p_x = probs.gather(1, x[:, None]).squeeze(1)
    ids = torch.arange(probs.shape[1])
    above = (probs > p_x[:, None]) | ((probs == p_x[:, None]) & (ids[None, :] < x[:, None]))
    u = (probs * above).sum(1) + torch.rand(len(tokens), generator=rng, dtype=torch.float64) * p_x
    return u, int((p_x <= 0).sum())


def uniform_p(u: list[float], bins: int) -> float:
    counts = torch.histc(torch.tensor(u, dtype=torch.float64).clamp(0, 1 - 1e-12), bins=bins, min=0, max=1)
    return float(chisquare(counts.numpy()).pvalue)


def pairs_p(observed: torch.Tensor, expected: torch.Tensor, least: float = 5.0) -> float:
    """Pearson's chi-square of the (previous token, token) counts against their exact expectations, each row's
    cells expecting fewer than `least` pooled. Exact in its mean; a row mixes slightly different contexts, which
    only narrows the statistic's spread, so the p-value errs on the safe side."""
    stat, df = 0.0, 0
    for o_row, e_row in zip(observed, expected):
        small = e_row < least
        o = torch.cat([o_row[~small], o_row[small].sum()[None]])
        e = torch.cat([e_row[~small], e_row[small].sum()[None]])
        keep = e > 0
        if keep.sum() >= 2:
            stat += float(((o[keep] - e[keep]) ** 2 / e[keep]).sum())
            df += int(keep.sum()) - 1
    return float(chi2.sf(stat, df)) if df else 1.0


def check(lab_, name: str, runs: int, tokens: int, options: dict | None = None, seed: int = 1234,
          reference: float = T) -> Report:
    """`runs` generations of `tokens` tokens (every other one truncated by top-k and top-p): their statistics.
    `reference` computes the exact conditionals at another temperature (a deliberately wrong target)."""
    report = Report()
    rng = torch.Generator().manual_seed(seed)
    auxiliary = torch.Generator().manual_seed(seed + 1)
    for r in range(runs):
        sampling = TRUNCATED if r % 2 else PLAIN
        opts = dict(options or {})
        if name == "sample":  # it sets the truncation rules itself, from its options
            opts.update(top_k=sampling.top_k, top_p=sampling.top_p)
        trace = lab_.generate(name, PROMPT, max_new_tokens=tokens, sampling=sampling, rng=rng, **opts).trace
        assert len(trace.tokens) == tokens
        for step in trace.steps:
            report.count(step, len(report.u))
        seen = Sampling(temperature=reference, top_k=sampling.top_k, top_p=sampling.top_p)
        probs = conditionals(lab_.model, PROMPT, trace.tokens, seen)
        u, impossible = transform(probs, trace.tokens, auxiliary)
        report.u += u.tolist()
        report.impossible += impossible
        before = torch.tensor(PROMPT[-1:] + trace.tokens[:-1])
        report.expected.index_add_(0, before, probs)
        report.observed.index_put_((before, torch.tensor(trace.tokens)), torch.ones(tokens, dtype=torch.float64),
                                   accumulate=True)
    return report


# -- three bugs the check must catch -------------------------------------------------------------------
def mutant(bug: str):
    """An `Exact.verify` with one bug, on the multi-round rejection walk (lab.speculative.verify's reference):
    'unchecked': every draft below depth 1 is accepted without a test;
    'parent-row': the target's token after an accepted leaf is drawn from the leaf parent's row, not the leaf's;
    'siblings': a sibling drawn without replacement is tested against the unconditioned q (its first
    sibling's) instead of the q it was drawn from."""

    def verify(self, dec, tree, logits):
        if dec.greedy:
            return greedy_tree(tree, logits)
        probs = dec.probs(logits).float()
        children: dict[int, list[int]] = {}
        for i, parent in enumerate(tree.parents):
            children.setdefault(parent, []).append(i)
        node, path = -1, []
        while True:
            if node + 1 >= probs.shape[0]:  # a node without a row: nothing after it
                return Verdict(path, None)
            p, kids, accepted = probs[node + 1], children.get(node, []), None
            for c in kids:
                if bug == "unchecked" and path:
                    accepted = c
                    break
                q, token = tree.q[c], tree.tokens[c]
                if bug == "siblings" and q is not None and tree.q[kids[0]] is not None:
                    q = tree.q[kids[0]]
                q_token = float(q[token]) if q is not None else 1.0
                if q_token > 0 and dec.uniform() * q_token < float(p[token]):
                    accepted = c
                    break
                residual = p.clone() if q is None else (p - q.to(p.device).float()).clamp_min(0.0)
                if q is None:
                    residual[token] = 0.0
                if float(residual.sum()) > 0:
                    p = residual / residual.sum()
            if accepted is None:
                if bug == "parent-row" and path and not kids:
                    p = probs[tree.parents[node] + 1]
                return Verdict(path, int(draw(p, dec.rng)), recovered=bool(kids))
            path.append(accepted)
            node = accepted

    return verify


MUTANTS = ("unchecked", "parent-row", "siblings")
