"""Greedy speculative rounds on the device (lab/backends/fast/rounds.py): sps and fastdraft at temperature 0 on the
fast backend run 4 draft -> verify -> accept rounds per backend call with no host between them (one graph on a
GPU, the same tensor code eagerly here). They must give greedy's tokens and the very drafts and verdicts of the
host loop (the HF backend, which has no device path) round for round."""
from __future__ import annotations

import pytest

import lab
from lab.backends.fast import FastBackend
from lab.models import tiny

from .conftest import hf_greedy


def rounds_of(trace):
    return [(s.proposed, s.accepted, s.bonus, s.committed) for s in trace.steps if s.proposed]


def test_device_rounds_are_the_host_loops_rounds():
    model = tiny("llama", vocab_size=96, layers=4, seed=5)  # its first 3 layers accept 0 to 3 drafts of 3
    fast, host = lab.Lab(model_obj=model, backend="fast"), lab.Lab(model_obj=model, backend="hf")
    assert isinstance(fast.target, FastBackend) and fast.target.rounds_with(fast.target.view([0]))
    assert not host.target.rounds_with(host.target.view([0]))
    prompt = [(i * 7) % 60 + 1 for i in range(14)] + [3, 4, 5, 3, 4, 5]
    want = hf_greedy(model, prompt, 40)
    for length, adaptive in ((3, False), (4, True)):
        options = dict(draft="layers:3", length=length, adaptive=adaptive)
        got = fast.generate("sps", prompt, max_new_tokens=40, **options).trace
        ref = host.generate("sps", prompt, max_new_tokens=40, **options).trace
        assert got.tokens == want == ref.tokens
        if not adaptive:  # adaptive, the device path keeps one chain length for each call's 4 rounds
            assert rounds_of(got) == rounds_of(ref)
        steps = [s for s in got.steps if s.proposed]
        assert any(s.info.get("device_rounds") == 4 for s in steps)  # several rounds per call happened
        if adaptive:
            continue
        accepted = [len(s.accepted) for s in steps]
        assert 0 in accepted and any(a == len(s.proposed) for a, s in zip(accepted, steps))  # rejections, full chains
        assert any(0 < a < len(s.proposed) for a, s in zip(accepted, steps))  # and partial ones
        assert got.steps[-1].committed and sum(len(s.committed) for s in got.steps) == len(got.tokens)
        assert all(s.draft_forwards == len(s.proposed) for s in steps)  # k draft forwards for k drafts


@pytest.mark.parametrize("siblings", [False, True])
def test_device_rounds_keep_both_caches_in_step(siblings):
    """After the rounds both backends hold the context but its last token, and a plain decode continues greedily
    (with siblings: after the accepted siblings' keys and values moved to their columns)."""
    model = tiny("qwen2", vocab_size=96, layers=2, seed=5)
    target = FastBackend(model)
    draft = target.view([0])
    prompt = [5, 9, 13, 17, 21, 25, 5, 9, 13]
    want = hf_greedy(model, prompt, 30)
    root = int(target.prefill(prompt).argmax())
    draft.hold(prompt)
    out = [root]
    got = target.greedy_rounds(draft, root, 3, 4, siblings)
    for r in got:
        out += r.committed
    assert len(got) == 4 and out == want[:len(out)]
    assert target.tokens() == draft.tokens() == prompt + out[:-1]
    for _ in range(3):
        out.append(int(target.decode(out[-1]).argmax()))
    assert out == want[:len(out)]


def test_device_rounds_with_siblings_are_the_host_loops_tree_rounds():
    """With siblings (the draft's second choice at each depth, verified in the same forward) the device rounds give
    greedy's tokens and the host loop's trees and verdicts; the run sees accepted siblings (whose keys and values
    the device moves to the accepted column: a wrong move would change the tokens after them), chain rejections
    with no sibling accepted, and full chains."""
    model = tiny("llama", vocab_size=96, layers=4, seed=5)
    fast, host = lab.Lab(model_obj=model, backend="fast"), lab.Lab(model_obj=model, backend="hf")
    prompt = [(i * 7) % 60 + 1 for i in range(14)] + [3, 4, 5, 3, 4, 5]
    want = hf_greedy(model, prompt, 60)
    options = dict(draft="layers:3", length=3, adaptive=False, siblings=True)
    got = fast.generate("fastdraft", prompt, max_new_tokens=60, **options).trace
    ref = host.generate("fastdraft", prompt, max_new_tokens=60, **options).trace
    assert got.tokens == want == ref.tokens
    assert rounds_of(got) == rounds_of(ref)
    steps = [s for s in got.steps if s.proposed]
    assert any(s.info.get("device_rounds") == 4 for s in steps)
    hits = {s.accepted[-1] for s in steps if s.accepted and s.accepted[-1] % 2 == 1}  # last accepted: a sibling
    assert hits == {1, 3, 5}  # at every depth
    assert any(not s.accepted for s in steps) and any(s.accepted == [0, 2, 4] for s in steps)
    assert all(s.parents == [-1, -1, 0, 0, 2, 2][:len(s.proposed)] for s in steps)  # shorter near the end
    assert sum(len(s.proposed) == 6 for s in steps) >= len(steps) - 2
