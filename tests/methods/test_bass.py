"""BASS: a batch drafts and verifies together while every row accepts, and adapts its draft length, on its own."""
from __future__ import annotations

import pytest

from lab.api import Lab
from lab.models import tiny
from lab.speculative.drafters.bass import DraftLength

from ..conftest import hf_greedy, use_draft


def test_the_draft_length_heuristic():
    """Grow by 2 up to the limit on full acceptance; shrink by ceil(l/10), one more after consecutive misses,
    never below the accepted count or 1."""
    schedule = DraftLength(length=4, limit=10)
    seen = []
    for drafted, accepted in [(4, 4), (6, 6), (8, 8), (10, 10), (10, 3), (9, 0), (7, 7), (9, 0), (8, 0), (6, 0)]:
        schedule.update(drafted, accepted)
        seen.append(schedule.length)
    assert seen == [6, 8, 10, 10, 9, 7, 9, 8, 6, 4]
    floor = DraftLength(length=10, limit=10)
    floor.update(10, 9)
    assert floor.length == 9  # 10 - 1 = 9 and 9 were accepted
    for _ in range(20):
        floor.update(floor.length, 0)
    assert floor.length == 1


@pytest.fixture(scope="module")
def batch_lab():
    model = tiny("llama", vocab_size=64, seed=11)
    lab_ = Lab(model_obj=model)
    use_draft(lab_, lab_.target.view([0]))  # a draft that agrees with the target only some of the time
    return lab_


PROMPTS = [[(5 * r + 3 * i) % 60 + 1 for i in range(4 + 5 * r)] for r in range(4)]


def rounds(results):
    """Per round, {row: step} for the rows that were still decoding (step 0 is the prefill)."""
    n = max(len(r.trace.steps) for r in results)
    return [{i: r.trace.steps[k] for i, r in enumerate(results) if len(r.trace.steps) > k} for k in range(1, n)]


def test_each_row_adapts_its_own_draft_length(batch_lab):
    results = batch_lab.generate_batch("bass", PROMPTS, max_new_tokens=40, length=3, max_length=8)
    assert [r.tokens for r in results] == [hf_greedy(batch_lab.model, p, 40) for p in PROMPTS]
    schedules = [DraftLength(3, 8) for _ in PROMPTS]
    made = [1] * len(PROMPTS)  # tokens committed so far per row (the prefill's)
    ragged = False
    for steps in rounds(results):
        for i, step in steps.items():
            assert len(step.proposed) == min(schedules[i].length, 40 - made[i])  # the row's own schedule
            schedules[i].update(len(step.proposed), len(step.accepted))
            made[i] += len(step.committed)
        ragged |= len({len(s.proposed) for s in steps.values()}) > 1
        ragged |= len({len(s.accepted) for s in steps.values()}) > 1
    assert ragged  # rows really accepted, and drafted, different lengths in the same round


def test_the_papers_shared_length_follows_the_best_row(batch_lab):
    results = batch_lab.generate_batch("bass", PROMPTS, max_new_tokens=30, length=3, max_length=8,
                                       shared_length=True)
    assert [r.tokens for r in results] == [hf_greedy(batch_lab.model, p, 30) for p in PROMPTS]
    schedule, made = DraftLength(3, 8), [1] * len(PROMPTS)
    for steps in rounds(results):
        for i, step in steps.items():
            assert len(step.proposed) == min(schedule.length, 30 - made[i])
            made[i] += len(step.committed)
        schedule.update(max(len(s.proposed) for s in steps.values()), max(len(s.accepted) for s in steps.values()))


def test_one_prompt_runs_as_a_batch_of_one(batch_lab):
    single = batch_lab.generate("bass", PROMPTS[2], max_new_tokens=20).trace
    batch = batch_lab.generate_batch("bass", [PROMPTS[2]], max_new_tokens=20)[0].trace
    assert single.tokens == batch.tokens
    assert [s.proposed for s in single.steps] == [s.proposed for s in batch.steps]
    assert all(s.info.get("batch") == 1 for s in single.steps[1:])
    schedule, made = DraftLength(4, 10), 1  # a batch of one adapts its draft length too
    for step in single.steps[1:]:
        assert len(step.proposed) == min(schedule.length, 20 - made)
        schedule.update(len(step.proposed), len(step.accepted))
        made += len(step.committed)
    assert len({len(s.proposed) for s in single.steps[1:]}) > 1
