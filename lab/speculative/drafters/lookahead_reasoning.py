"""Lookahead reasoning: speculate whole steps, and keep a draft step the target finds as good as its own.

Paper: "Scaling Speculative Decoding with Lookahead Reasoning" (Fu et al., 2025).
The one idea: step-level speculation on top of token-level speculation. Token-level drafts must match the
target token for token, so long drafts rarely survive; but a reasoning step only has to be right, not
identical. The draft proposes several future steps (each ending at a delimiter such as a newline or a full
stop; fixed-length steps without a tokenizer). One target forward over all of them gives, for every step, the
target's view from the prefix that ends with the draft's earlier steps (the paper's batched expansion of
each proposal). Per step, in order:
- token-level speculative decoding with the draft step as the draft (exact): if the whole step is accepted
  the step is the target's own;
- otherwise a judge decides whether the draft step is equivalent enough; if so it is kept whole (lossy) and
  the next step's verdict, already computed from this prefix, is used as is;
- if not, the exact part stands: the accepted tokens plus the target's correction, and the round ends.

Judge (a departure: the paper asks a judge model whether two steps mean the same): the target's likelihood
of the draft step, relative to its own choices: the geometric mean over the step's tokens of
p_target(token) / max p_target, on the target's plain softmax. The step is kept when this is >= `judge`.
With judge = 1 only the target's own argmax tokens pass, so at temperature 0 the output is greedy's.
The target's own step is thus compared through its likelihoods of the draft step under the same prefix,
not by generating it in full (that would cost one target forward per token).
"""
from __future__ import annotations

import weakref

import torch

from ...decoding import Decoding
from ...errors import LabError
from ...registry import method
from ...tree import Tree
from ..drafter import Drafter
from ..expand import Draft, draft_token
from ..loop import EXACT, Verifier, speculate
from ..verify import Verdict

_ENDS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def step_ends(tokenizer, delimiters: str) -> set[int]:
    """Token ids that end a step: any token with a newline (if '\\n' is a delimiter), or whose text ends with
    one of the other delimiter characters (trailing spaces ignored). Cached per tokenizer."""
    cache = _ENDS.setdefault(tokenizer, {})
    if delimiters not in cache:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        marks = tuple(c for c in delimiters if c != "\n")
        cache[delimiters] = {i for i, text in enumerate(texts)
                             if ("\n" in delimiters and "\n" in text) or (marks and text.rstrip(" ").endswith(marks))}
    return cache[delimiters]


def judge_score(target_logits: torch.Tensor, tokens: list[int]) -> float:
    """Geometric mean over the step of p_target(token) / max p_target (1.0: every token is the target's choice)."""
    logp = target_logits.float().log_softmax(-1)
    picked = logp[torch.arange(len(tokens), device=logp.device), torch.tensor(tokens, device=logp.device)]
    return float((picked - logp.max(-1).values).mean().exp())


class StepDrafter(Drafter):
    """Drafts up to `steps` steps of at most `step_tokens` tokens each after the context, as one chain."""

    def __init__(self, runner, steps: int, step_tokens: int, ends: set[int] | None):
        self.runner = runner
        self.steps, self.step_tokens, self.ends = steps, step_tokens, ends
        self.drafted: list[list[Draft]] = []  # the last proposal, step by step

    @property
    def forwards(self) -> int:
        return self.runner.forwards

    def propose(self, dec: Decoding, root: int) -> Tree:
        room, self.drafted = dec.remaining - 1, []
        if room <= 0:
            return Tree()
        logits, last = self.runner.sync(dec.context), None
        for _ in range(self.steps):
            step: list[Draft] = []
            while room > 0 and len(step) < self.step_tokens:
                if last is not None:
                    logits = self.runner.decode(last)
                step.append(draft_token(dec, logits))
                last, room = step[-1][0], room - 1
                if self.ends is not None and last in self.ends:
                    break
            if step:
                self.drafted.append(step)
            if room <= 0:
                break
        flat = [d for step in self.drafted for d in step]
        return Tree.from_chain([t for t, _, _ in flat], [p for _, p, _ in flat], [q for _, _, q in flat])


class StepJudge(Verifier):
    """Walk the drafted steps in order: exact, else judged equivalent and kept whole (lossy), else cut."""

    def __init__(self, drafter: StepDrafter, judge: float):
        self.drafter, self.judge = drafter, judge

    def verify(self, dec: Decoding, tree: Tree, logits: torch.Tensor) -> Verdict:
        count, offset, bonus, records = 0, 0, None, []
        for step in self.drafter.drafted:
            n = len(step)
            chain = Tree.from_chain([t for t, _, _ in step], [p for _, p, _ in step], [q for _, _, q in step])
            rows = logits[offset: offset + n + 1]
            verdict = EXACT.verify(dec, chain, rows)
            if len(verdict.accepted) == n:
                records.append({"tokens": n, "verdict": "exact", "score": 1.0})
                bonus = verdict.bonus
            else:
                score = judge_score(rows[:n], chain.tokens)
                record = {"tokens": n, "score": round(score, 4)}
                if score < self.judge:
                    records.append({**record, "verdict": "rejected"})
                    count += len(verdict.accepted)
                    return Verdict(list(range(count)), verdict.bonus, info={"steps": records})
                records.append({**record, "verdict": "judged"})
                bonus = None
            count += n
            offset += n
        if bonus is None:  # the last step was judged (or nothing was drafted): the target's next token after it
            bonus = dec.choose(logits[offset])
        return Verdict(list(range(count)), bonus, info={"steps": records})


@method("lookahead-reasoning", family="speculative", lossless=False, training_free=True,
        paper="Scaling Speculative Decoding with Lookahead Reasoning",
        departures="token chains of whole steps judged by the target's likelihood of the draft step (the paper: "
                   "the target generates its own version of every step in one batched pass and a judge model "
                   "decides semantic equivalence); the default draft is the lab's trained FastDraft on the default model (four layers of its shape, not a separate small model) and the target's first half of layers, untrained, on other models")
def lookahead_reasoning(dec, *, judge: float = 0.5, steps: int = 2, step_tokens: int = 8,
                        delimiters: str = "\n.!?", draft: str = "default"):
    """Lookahead reasoning: draft whole steps; keep a step the target's likelihood judges good enough."""
    if steps < 1 or step_tokens < 1 or not 0.0 <= judge:
        raise LabError(f"lookahead-reasoning: steps and step_tokens must be >= 1 and judge >= 0 "
                       f"(1 keeps only the target's own tokens), got {steps}, {step_tokens}, {judge}")
    ends = step_ends(dec.tokenizer, delimiters) if dec.tokenizer is not None and delimiters else None
    drafter = StepDrafter(dec.lab.draft(draft), steps, step_tokens, ends)
    yield from speculate(dec, drafter, StepJudge(drafter, judge))
