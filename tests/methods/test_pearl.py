"""PEARL: greedy's tokens, a draft thread that really runs during the target forward, self-extending drafts."""
from __future__ import annotations

import time

import pytest

from lab.backends.hf import HFBackend
from lab.models import tiny

from ..conftest import hf_greedy, tiny_lab, use_draft

PROMPTS = [[(seed * 7 + i * 3) % 50 + 1 for i in range(12)] * 2 for seed in range(2)]


def drafts(tl, arch):
    """A perfect draft (the target's own layers) and a poor one (another random model)."""
    return [tl.target.view(list(range(tl.target.num_layers))), HFBackend(tiny(arch, vocab_size=96, layers=1, seed=7))]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("length", [1, 4])
def test_identity_with_greedy_for_good_and_poor_drafts(arch, length):
    tl = tiny_lab(arch, vocab_size=96, seed=1)
    for draft in drafts(tl, arch):
        use_draft(tl, draft)
        for prompt in PROMPTS:
            assert tl.generate("pearl", prompt, max_new_tokens=20, length=length).tokens == hf_greedy(tl.model, prompt, 20)


def slow_target(method_draft=None, pause=0.05, draft_pause=0.008):
    """A tiny target whose forwards take `pause` seconds and a draft with its own weights whose forwards take
    `draft_pause` (sleeping releases the GIL, as torch ops do), and a log of when each forward ran. The draft's
    pause keeps a round's drafting longer than the main thread's lag in starting the target's clock, which on a
    loaded machine reached 3 ms (a bare tiny draft finished before it)."""
    tl = tiny_lab("llama", vocab_size=96, seed=1)
    draft = method_draft or HFBackend(tiny("llama", vocab_size=96, layers=1, seed=7))
    log = {"target": [], "draft": []}

    def target_starts(*_):
        log["target"].append([time.perf_counter()])
        time.sleep(pause)

    tl.model.register_forward_pre_hook(target_starts)
    tl.model.register_forward_hook(lambda *_: log["target"][-1].append(time.perf_counter()) and None)
    draft.model.register_forward_pre_hook(lambda *_: time.sleep(draft_pause))
    draft.model.register_forward_hook(lambda *_: log["draft"].append(time.perf_counter()) and None)
    use_draft(tl, draft)
    return tl, log


def assert_overlapped(trace, log):
    """Draft forwards happened inside target forwards, and the Step info says so too."""
    inside = [t for t in log["draft"] if any(a < t < b for a, b in log["target"][1:])]  # [0] is the prefill
    assert len(inside) >= len(log["draft"]) // 2, (len(inside), len(log["draft"]))
    rounds = [s for s in trace.steps if not s.prefill and s.info["drafted_ahead"]]
    assert rounds
    overlapped = 0
    for step in rounds:
        o = step.info["overlap"]
        draft_s, target_s = o["draft_s"][1] - o["draft_s"][0], o["target_s"][1] - o["target_s"][0]
        overlapped += o["overlap_s"] > 0.5 * min(draft_s, target_s)
    assert overlapped >= 0.75 * len(rounds), [s.info["overlap"] for s in rounds]


def test_the_draft_thread_runs_while_the_target_forwards():
    tl, log = slow_target()
    trace = tl.generate("pearl", PROMPTS[0], max_new_tokens=10, length=3).trace
    assert trace.tokens == hf_greedy(tl.model, PROMPTS[0], 10)
    assert_overlapped(trace, log)


def test_post_verify_lets_a_right_draft_run_on_across_rounds():
    """With a perfect draft, every round after the first is post-verify and commits gamma drafts without a
    target token in between: the accepted run grows past gamma by itself (the adaptive draft length)."""
    tl = tiny_lab("llama", vocab_size=96, seed=1)
    use_draft(tl, tl.target.view([0, 1]))
    trace = tl.generate("pearl", PROMPTS[0], max_new_tokens=25, length=3).trace
    rounds = [s for s in trace.steps if not s.prefill]
    assert rounds[0].info["mode"] == "pre-verify"
    assert all(s.info["mode"] == "post-verify" for s in rounds[1:])
    assert all(len(s.committed) == 3 and s.bonus is None for s in rounds[1:-1])
    assert trace.origins()[1:] == ["draft"] * 24  # one run of 24 accepted drafts, far longer than gamma = 3
    assert trace.tokens_per_forward > 2.5


def test_a_rejected_first_token_goes_back_to_pre_verify():
    tl = tiny_lab("llama", vocab_size=96, seed=1)
    use_draft(tl, tl.target.view([0]))  # right now and then
    trace = tl.generate("pearl", PROMPTS[1], max_new_tokens=24, length=3).trace
    rounds = [s for s in trace.steps if not s.prefill]
    assert any(s.bonus is not None for s in rounds) and any(s.bonus is None for s in rounds)
    for before, after in zip(rounds, rounds[1:]):
        if before.bonus is not None:  # the target's own token was committed: nothing is pending
            assert before.info["carried"] == 0
        assert after.info["mode"] == ("post-verify" if before.info["carried"] else "pre-verify")
