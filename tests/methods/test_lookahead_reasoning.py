"""Lookahead reasoning: steps split at delimiters, the target's steps for every draft prefix in one batched pass,
the longest run of equivalent draft steps kept, then the target's own step."""
from __future__ import annotations

import copy

import pytest
import torch

from lab.api import Lab
from lab.backends.hf import HFBackend
from lab.errors import LabError
from lab.models import tiny
from lab.speculative.drafters.lookahead_reasoning import equivalent, facts
from lab.speculative.steps import Piece, step_ends, target_steps

from ..conftest import hf_greedy, tiny_lab, use_draft

torch.set_num_threads(1)
PROMPTS = [[3, 5, 7, 9, 11] * 3, [40, 2, 17, 17, 8, 61, 5], [12, 30, 12, 30, 12, 31, 90, 4, 4, 4, 7]]


class DigitsTokenizer:
    """Token i reads as its number; multiples of 5 also end a line, multiples of 7 a sentence."""

    def __len__(self):
        return 96

    def decode(self, ids, **_):
        return "".join(f"{i}" + ("\n" if i % 5 == 0 else ". " if i % 7 == 0 else " ") for i in ids)

    def batch_decode(self, batch, **_):
        return [self.decode(ids) for ids in batch]


class Words(DigitsTokenizer):
    def __init__(self, words):
        self.words = words

    def __len__(self):
        return len(self.words)

    def decode(self, ids, **_):
        return "".join(self.words[i] for i in ids)


def near_copy(model, noise: float, seed: int = 0):
    """The target's weights plus noise: a draft that agrees with the target often, not always."""
    draft = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(torch.randn(p.shape, generator=g) * noise * p.std().clamp_min(1e-3))
    return HFBackend(draft)


def digits_lab(noise: float = 0.6) -> Lab:
    model = tiny("llama", vocab_size=96, seed=1)
    tl = Lab(model_obj=model, tokenizer=DigitsTokenizer())
    use_draft(tl, near_copy(model, noise))
    return tl


def verdicts(trace) -> list[str]:
    return [r["verdict"] for s in trace.steps for r in s.info.get("steps", []) if r["used"]]


def test_steps_end_at_delimiters():
    tokenizer = DigitsTokenizer()
    assert step_ends(tokenizer, "\n").single == {i for i in range(96) if i % 5 == 0}
    assert step_ends(tokenizer, "\n|. ").single == {i for i in range(96) if i % 5 == 0 or i % 7 == 0}
    blank = step_ends(Words(["\n", "a", "b.\n", "\n\n"]), "\n\n")  # the paper's step end: a blank line
    assert blank.single == {3} and blank([1, 3]) and blank([2, 0]) and blank([1, 0, 0])
    assert not blank([1, 0]) and not blank([0]) and not blank([0, 1])
    tl = digits_lab()
    trace = tl.generate("lookahead-reasoning", PROMPTS[0], max_new_tokens=40, judge="likelihood", threshold=0.0,
                        step_tokens=6, delimiters="\n").trace
    ends, seen = step_ends(tokenizer, "\n").single, 0
    for step in trace.spec_steps:
        for record in step.info["steps"]:
            for piece, complete in ((record.get("draft"), record.get("draft_complete")),
                                    (record.get("target"), record.get("target_complete"))):
                if piece:  # a step ends at its first delimiter, else it is full (6) or cut by the budget
                    assert not set(piece[:-1]) & ends
                    assert complete == (piece[-1] in ends)
                    assert complete or len(piece) == 6 or step is trace.steps[-1]
                    seen += 1
    assert seen > 10


@pytest.mark.parametrize("step_tokens", [4, 9])
def test_a_judge_that_accepts_only_identical_steps_gives_greedy(step_tokens):
    """Property: judge=exact is token identity with greedy, on several prompts, with delimited and fixed steps."""
    accepted = rejected = 0
    for tl in (digits_lab(0.05), tiny_lab("llama", vocab_size=96, seed=1)):
        if tl.tokenizer is None:
            use_draft(tl, near_copy(tl.model, 0.05))
        for prompt in PROMPTS:
            trace = tl.generate("lookahead-reasoning", prompt, max_new_tokens=32, judge="exact",
                                step_tokens=step_tokens, delimiters="\n").trace
            assert trace.tokens == hf_greedy(tl.model, prompt, 32), prompt
            accepted += verdicts(trace).count("accepted")
            rejected += verdicts(trace).count("rejected")
    assert accepted >= 3 and rejected >= 3  # both paths of the judge ran


def test_a_permissive_judge_accepts_more_draft_steps():
    tl = digits_lab(noise=1.5)
    strict = tl.generate("lookahead-reasoning", PROMPTS[1], max_new_tokens=40, judge="exact", step_tokens=6,
                         delimiters="\n").trace
    loose = tl.generate("lookahead-reasoning", PROMPTS[1], max_new_tokens=40, judge="likelihood", threshold=0.0,
                        step_tokens=6, delimiters="\n").trace
    kept = lambda t: sum(s.info["accepted_steps"] for s in t.spec_steps)  # noqa: E731
    assert kept(loose) > kept(strict) and loose.forwards < strict.forwards
    assert loose.tokens != strict.tokens  # lossy: steps the target would not have written stand
    assert {"accepted", "rejected"} >= set(verdicts(loose)) - {"target step"}


def test_the_batched_pass_gives_each_prefix_its_own_step():
    """Rows of one backend, one forward per round, versus transformers' greedy after each prefix alone."""
    tl = digits_lab()
    ends = step_ends(tl.tokenizer, "\n")
    target = tl.target.for_rows()
    target.prefill_rows([PROMPTS[0]])
    for prefixes in ([PROMPTS[0], PROMPTS[0] + [13, 14], PROMPTS[0] + [13, 14, 15, 16, 17]],
                     [PROMPTS[1], PROMPTS[1] + [8], PROMPTS[0] + [1]]):  # a second call reuses what rows hold
        draft = [Piece([1, 2, 3]), Piece([9, 9]), Piece([])]
        steps, forwards, _ = target_steps(_greedy_dec(tl), target, prefixes, [8, 8, 8], 8, ends, draft)
        assert forwards < sum(len(s.tokens) for s in steps)  # batched: fewer forwards than tokens
        for prefix, step in zip(prefixes, steps):
            alone = hf_greedy(tl.model, prefix, 8)
            cut = next((i + 1 for i, t in enumerate(alone) if t in ends.single), 8)
            assert step.tokens == alone[:cut] and step.complete == (cut < 8 or alone[7] in ends.single)


def _greedy_dec(tl):
    from lab.decoding import Decoding
    from lab.sampling import Sampling

    return Decoding(tl.target, [1], Sampling(temperature=0.0), None, 100, set(), tl.tokenizer, None)


def test_math_equivalence():
    assert facts("So 19 x 12 = 228.\n\n") == ["19", "x", "12", "=", "228"]
    assert facts("That is 1,250 - 2.50 dollars") == ["1250", "-", "2.5"]
    step = lambda s, complete=True: Piece(list(s.encode()), complete)  # noqa: E731
    text = lambda ids: bytes(ids).decode()  # noqa: E731
    same = equivalent("math", step("Maria pays 19 x 12 = 228 dollars.\n"), step("She pays 19 x 12 = 228.\n"),
                      text, 0.0, 0.5)
    assert same == (True, "same numbers")
    assert equivalent("math", step("19 x 12 = 218.\n"), step("19 x 12 = 228.\n"), text, 1.0, 0.5)[0] is False
    assert equivalent("math", step("So we know.\n"), step("Thus we see.\n"), text, 0.7, 0.5) == \
        (True, "likelihood 0.700")  # no numbers on either side: the target's likelihood decides
    assert equivalent("text", step("So  We know.\n"), step("so we know.\n"), text, 0.0, 0.5) == (True, "same text")
    assert equivalent("math", step("19 x 12 = 228", False), step("19 x 12 = 228.\n"), text, 1.0, 0.5) == \
        (False, "draft step cut")
    assert equivalent("exact", step("a\n"), step("a\n"), text, 0.0, 0.5) == (True, "identical")


@pytest.mark.parametrize("options, words", [({"judge": "semantic"}, "judge must be one of"),
                                            ({"steps": 0}, "steps and step_tokens must be >= 1"),
                                            ({"step_tokens": 0}, "steps and step_tokens must be >= 1"),
                                            ({"threshold": 1.5}, "0 <= threshold <= 1")])
def test_bad_options_are_one_line(options, words):
    tl = tiny_lab("llama", vocab_size=96, seed=1)
    with pytest.raises(LabError) as err:
        tl.generate("lookahead-reasoning", PROMPTS[0], max_new_tokens=4, **options)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_the_math_measurement_knows_the_answers():
    from lab.bench.quality import final_number
    from lab.bench.suite import build_suite

    problems = build_suite(6, ["math"])
    assert [p["answer"] for p in problems] == [22, 2620, 119, 250, 30, 44]  # worked out by hand from the prompts
    assert final_number("19 x 12 = 228, so the change is 1,022.") == 1022 and final_number("none") is None


def test_on_the_default_model_steps_end_at_blank_lines_and_the_exact_judge_is_greedy(default_lab):
    """The real tokenizer writes a blank line as two newline tokens; the trained draft drafts the steps."""
    from lab.bench.suite import build_suite

    problem = build_suite(1, ["math"])[0]
    ids = default_lab.encode(problem["prompt"], True)
    trace = default_lab.generate("lookahead-reasoning", ids, max_new_tokens=32, judge="exact").trace
    assert trace.tokens == hf_greedy(default_lab.model, ids, 32)
    steps = [r[f"{who}_text"] for s in trace.spec_steps for r in s.info["steps"] for who in ("draft", "target")
             if r.get(f"{who}_complete")]
    assert steps and all(text.endswith("\n\n") and "\n\n" not in text[:-2] for text in steps)
