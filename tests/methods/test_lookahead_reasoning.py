"""Lookahead reasoning: a draft step equal to the target's is kept, a different one is judged and cut."""
from __future__ import annotations

import torch

from lab.api import Lab
from lab.backends.hf import HFBackend
from lab.models import tiny
from lab.speculative.drafters.lookahead_reasoning import (
    StepJudge,
    judge_score,
    step_ends,
)
from lab.tree import Tree

from ..conftest import hf_greedy, tiny_lab, use_draft

PROMPT = [3, 5, 7, 9, 11] * 3


class Greedy:
    greedy = True


def steps_of(tokens_per_step):
    return [[(t, 1.0, None) for t in step] for step in tokens_per_step]


def verify_steps(dec, steps, logits, judge):
    """The step judge on drafted steps: committed draft tokens, their count, the bonus, the per-step records."""
    class Drafted:
        drafted = steps

    flat = [t for step in steps for t, _, _ in step]
    verdict = StepJudge(Drafted(), judge).verify(dec, Tree.from_chain(flat), logits)
    return [flat[i] for i in verdict.accepted], len(verdict.accepted), verdict.bonus, verdict.info["steps"]


def test_a_step_equal_to_the_targets_is_kept_and_a_different_one_is_not():
    """Three 2-token steps against fixed target rows (argmax 0, 1, 2, 3, 0, 1, then 2 after them)."""
    logits = torch.full((7, 4), -4.0)
    for row, best in enumerate([0, 1, 2, 3, 0, 1, 2]):
        logits[row, best] = 4.0
    logits[2, 3] = 3.9  # at row 2 the target finds 3 almost as likely as its own 2
    same = [0, 1]
    near = [3, 3]  # differs from the target's [2, 3] only by a near-tie
    far = [1, 2]  # the target gives these tokens almost no probability
    committed, count, bonus, records = verify_steps(Greedy(), steps_of([same, near, [0, 1]]), logits, judge=0.5)
    assert [r["verdict"] for r in records] == ["exact", "judged", "exact"]
    assert committed == [0, 1, 3, 3, 0, 1] and count == 6 and bonus == 2
    committed, count, bonus, records = verify_steps(Greedy(), steps_of([same, far, [0, 1]]), logits, judge=0.5)
    assert [r["verdict"] for r in records] == ["exact", "rejected"]
    assert committed == [0, 1] and bonus == 2  # the target's own token where the far step went astray
    _, _, _, records = verify_steps(Greedy(), steps_of([same, near]), logits, judge=1.0)
    assert [r["verdict"] for r in records] == ["exact", "rejected"]  # judge 1: only the target's own tokens


def test_judge_score():
    logits = torch.tensor([[5.0, 0.0, 5.0], [0.0, 9.0, 0.0]])
    assert judge_score(logits, [0, 1]) == 1.0  # the target's own choices (a tie counts as its choice)
    assert judge_score(logits, [1, 1]) < 0.1


def test_a_draft_that_is_the_target_has_every_step_kept_exactly():
    tl = tiny_lab("llama", vocab_size=96, seed=1)
    use_draft(tl, tl.target.view([0, 1]))
    trace = tl.generate("lookahead-reasoning", PROMPT, max_new_tokens=30).trace
    assert trace.tokens == hf_greedy(tl.model, PROMPT, 30)
    assert all(r["verdict"] == "exact" for s in trace.steps for r in s.info.get("steps", []))
    assert trace.forwards <= 3  # 2 steps of 8 tokens and a bonus per forward


def test_judge_one_is_greedy_and_judge_zero_keeps_the_drafts_steps():
    tl = tiny_lab("llama", vocab_size=96, seed=1)
    use_draft(tl, HFBackend(tiny("llama", vocab_size=96, layers=1, seed=7)))
    want = hf_greedy(tl.model, PROMPT, 24)
    strict = tl.generate("lookahead-reasoning", PROMPT, max_new_tokens=24, judge=1.0).trace
    assert strict.tokens == want
    assert any(r["verdict"] == "rejected" for s in strict.steps for r in s.info.get("steps", []))
    loose = tl.generate("lookahead-reasoning", PROMPT, max_new_tokens=24, judge=0.0).trace
    assert loose.tokens != want and loose.forwards < strict.forwards
    assert all(r["verdict"] in ("exact", "judged") for s in loose.steps for r in s.info.get("steps", []))


class DigitsTokenizer:
    """Token i reads as its number; multiples of 5 also end a line, multiples of 7 a sentence."""

    def __len__(self):
        return 96

    def decode(self, ids, **_):
        return "".join(f"{i}" + ("\n" if i % 5 == 0 else ". " if i % 7 == 0 else " ") for i in ids)

    def batch_decode(self, batch, **_):
        return [self.decode(ids) for ids in batch]


def test_steps_end_at_delimiters():
    tokenizer = DigitsTokenizer()
    assert step_ends(tokenizer, "\n") == {i for i in range(96) if i % 5 == 0}
    assert step_ends(tokenizer, "\n.") == {i for i in range(96) if i % 5 == 0 or i % 7 == 0}
    model = tiny("llama", vocab_size=96, seed=1)
    tl = Lab(model_obj=model, tokenizer=tokenizer)
    use_draft(tl, HFBackend(tiny("llama", vocab_size=96, layers=1, seed=7)))
    ends = step_ends(tokenizer, "\n.!?")
    trace = tl.generate("lookahead-reasoning", PROMPT, max_new_tokens=40, judge=0.0, step_tokens=6).trace
    for step in trace.spec_steps:
        start = 0
        for record in step.info["steps"][:-1]:  # every step but a round's last ends at a delimiter or is full
            piece = step.proposed[start:start + record["tokens"]]
            assert piece[-1] in ends or len(piece) == 6
            assert not set(piece[:-1]) & ends
            start += record["tokens"]
