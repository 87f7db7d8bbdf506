"""Lookahead reasoning: speculate whole steps, and keep a draft step that says what the target's own step says.

Paper: "Scaling Speculative Decoding with Lookahead Reasoning" (Fu et al., 2025); official code
hao-ai-lab/LookaheadReasoning. The one idea: step-level speculation on top of token-level speculation. A draft must
match the target token for token, so long drafts rarely survive; a reasoning step only has to be right. Per round:

1. the draft model proposes `steps` future steps one after another (a step ends where its text first holds a
   delimiter, by default the paper's blank line '\\n\\n', or after `step_tokens` tokens; as in the paper, 4 steps of
   at most 100 tokens by default);
2. the target generates its own version of the next step after every draft prefix: context, context + step 1, ...,
   context + steps 1..k (k + 1 prefixes: the last gives the step after an all-accepted round), all prefixes as rows of
   a fork of the target, one batched forward per token (lab/speculative/steps.py). Token-level speculation runs
   inside each step: the draft's own step is its first token-level draft, prompt lookup drafts the rest, and both are
   verified exactly, so each target step is the target's own;
3. a judge compares, in order, each draft step with the target's step for the same prefix; the longest run of
   equivalent draft steps is accepted, then the target's own step after it. Rows after the first rejected step stop.

Judges (`judge`); every one first accepts a step identical to the target's, token for token:
- exact: nothing else (at T = 0 the output is greedy's, at T > 0 the target's distribution);
- text: the paper's cheap first check: the same text once spaces and newlines are removed and case is folded;
- math (default): text, or both steps state the same numbers and arithmetic operators in the same order; steps without
  any number on either side fall back to the likelihood check;
- likelihood: the target's likelihood of the draft step (the geometric mean of p(token) / max p over its tokens,
  from the batched forward) is at least `threshold`.
As in the paper's code, a draft step cut at `step_tokens` (no delimiter) is accepted only when identical.
The paper's judge is a model (Qwen2.5-7B-Instruct asked whether the two steps are [aligned]); the lab has none.
"""
from __future__ import annotations

import re
import time

from ...errors import LabError
from ...registry import method
from ...trace import Step
from ..steps import Piece, draft_steps, step_ends, target_steps

JUDGES = ("exact", "text", "math", "likelihood")
_FACTS = re.compile(r"\d+(?:\.\d+)?|(?<=[\d\s])[-+*/=×÷x^](?=[\s\d])")


def normalized(text: str) -> str:
    """The paper's cheap equality: no spaces, no newlines, lower case."""
    return text.replace(" ", "").replace("\n", "").lower()


def facts(text: str) -> list[str]:
    """The numbers (commas between digits dropped, trailing zeros of decimals too) and arithmetic operators of a step,
    in order: '19 x 12 = 228.' -> ['19', 'x', '12', '=', '228']."""
    found = _FACTS.findall(re.sub(r"(?<=\d),(?=\d{3})", "", text))
    return [f.rstrip("0").rstrip(".") if "." in f else f for f in found]


def equivalent(judge: str, draft: Piece, target: Piece, text, score: float, threshold: float) -> tuple[bool, str]:
    """Whether the draft step may stand for the target's step, and why (shown in the trace)."""
    if draft.tokens == target.tokens:
        return True, "identical"
    if judge == "exact":
        return False, "not identical"
    if not draft.complete:
        return False, "draft step cut"
    a, b = text(draft.tokens), text(target.tokens)
    if normalized(a) == normalized(b):
        return True, "same text"
    if judge == "text":
        return False, "different text"
    if judge == "math":
        fa, fb = facts(a), facts(b)
        if fa or fb:
            return fa == fb, "same numbers" if fa == fb else "different numbers"
    return score >= threshold, f"likelihood {score:.3f}"


@method("lookahead-reasoning", family="speculative", lossless=False, training_free=True,
        paper="Scaling Speculative Decoding with Lookahead Reasoning",
        departures="the judge is not a model (the paper asks Qwen2.5-7B-Instruct whether the two steps are "
                   "aligned): a draft step is equivalent to the target's when identical, equal as text without spaces, "
                   "newlines and case (the paper's first check), or, with judge=math (the default), when both state "
                   "the same numbers and operators in order, or, when neither states a number, when the target's "
                   "likelihood of it (geometric mean of p / max p) is >= threshold; a draft step cut at step_tokens "
                   "passes only when identical; synchronous rounds only (the paper also runs an asynchronous tree); "
                   "token-level speculation inside a step is the draft's own step, then prompt lookup (the paper: "
                   "n-gram SD in vLLM); the default draft is the lab's trained FastDraft on the default model (four "
                   "layers of its shape) and the target's first half of layers, untrained, on other models")
def lookahead_reasoning(dec, *, judge: str = "math", threshold: float = 0.5, steps: int = 4, step_tokens: int = 100,
                        delimiters: str = "\n\n", draft: str = "default"):
    """Lookahead reasoning: draft whole steps, let the target write each step too, keep the draft's while they agree."""
    if judge not in JUDGES:
        raise LabError(f"lookahead-reasoning: judge must be one of {', '.join(JUDGES)}, got {judge!r}")
    if steps < 1 or step_tokens < 1 or not 0.0 <= threshold <= 1.0:
        raise LabError(f"lookahead-reasoning: steps and step_tokens must be >= 1 and 0 <= threshold <= 1, "
                       f"got steps={steps}, step_tokens={step_tokens}, threshold={threshold}")
    tokenizer = dec.tokenizer
    ends = step_ends(tokenizer, delimiters) if tokenizer is not None and delimiters else None
    text = tokenizer.decode if tokenizer is not None else (lambda ids: " ".join(map(str, ids)))
    runner, target = dec.lab.draft(draft), dec.target.for_rows()
    start = time.perf_counter()
    first = target.prefill_rows([dec.prompt])[0]
    dec.prefill_s = time.perf_counter() - start
    yield Step(committed=[dec.choose(first)], origin=["plain"], forwards=0, prefill=True)
    while True:
        context, room, before = dec.context, dec.remaining, runner.forwards
        drafted = draft_steps(dec, runner, steps, step_tokens, ends, room)
        prefixes, rooms, used = [], [], []
        for piece in [None, *drafted]:
            used = used + (piece.tokens if piece else [])
            if room - len(used) > 0:
                prefixes.append(context + used), rooms.append(room - len(used))
        verdicts: dict[int, tuple[bool, str]] = {}

        def judged(b: int, step: Piece, score: float) -> bool:  # row b's target step is done: does it end the round?
            if b < len(drafted):
                verdicts[b] = equivalent(judge, drafted[b], step, text, score, threshold)
                verdicts[b] = (*verdicts[b], round(score, 4))
                return not verdicts[b][0]
            return False

        mine, forwards, _ = target_steps(dec, target, prefixes, rooms, step_tokens, ends, drafted, done=judged)
        kept = next((i for i in range(len(drafted)) if not verdicts[i][0]), len(drafted))
        accepted = [t for piece in drafted[:kept] for t in piece.tokens]
        tail = mine[kept].tokens if kept < len(mine) else []
        records = []  # per prefix: the draft's step, the target's step (when it finished) and the verdict
        for i, row in enumerate(mine):
            record = {"tokens": len(drafted[i].tokens) if i < len(drafted) else 0, "used": i <= kept}
            if i < len(drafted):
                record.update(draft=drafted[i].tokens, draft_text=text(drafted[i].tokens),
                              draft_complete=drafted[i].complete)
            if i in verdicts or (i == kept and i == len(drafted)):
                record.update(target=row.tokens, target_text=text(row.tokens), target_complete=row.complete)
            if i in verdicts:
                ok, why, score = verdicts[i]
                record.update(verdict="accepted" if ok else "rejected", reason=why, likelihood=score)
            else:
                record["verdict"] = "target step" if i == kept else "not needed"
            records.append(record)
        flat = [t for piece in drafted for t in piece.tokens]
        yield Step(committed=accepted + tail, origin=["draft"] * len(accepted) + ["bonus"] + ["plain"] * (len(tail) - 1)
                   if tail else ["draft"] * len(accepted), proposed=flat, parents=list(range(-1, len(flat) - 1)),
                   draft_probs=[round(p, 4) for piece in drafted for p in piece.probs],
                   accepted=list(range(len(accepted))), bonus=tail[0] if tail else None, forwards=forwards,
                   draft_forwards=runner.forwards - before,
                   info={"steps": records, "accepted_steps": kept, "rows": len(prefixes), "judge": judge})
