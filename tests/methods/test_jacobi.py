"""Jacobi decoding: the window is refreshed from the target's outputs after the committed prefix, the output is
greedy decoding's, and refreshed guesses are accepted more often than uninformed ones."""
from __future__ import annotations

import torch

from lab.decoding import Decoding, drive
from lab.sampling import Sampling
from lab.speculative.drafters.jacobi import argmax_guess
from lab.speculative.jacobi_window import JacobiWindow
from lab.speculative.loop import speculate
from lab.speculative.verify import Verdict
from lab.trace import Trace

from ..conftest import hf_greedy, tiny_lab

PROMPT = [1, 2, 3, 4] * 3


def run(lab_, drafter, prompt, max_new_tokens) -> Trace:
    """Drive `speculate` with a given drafter at temperature 0 (as lab.generate would)."""
    dec = Decoding(lab_.target, prompt, Sampling(0.0), torch.Generator().manual_seed(0), max_new_tokens,
                   lab_.eos, lab=lab_)
    trace = Trace("jacobi")
    for _ in drive(dec, speculate(dec, drafter), trace, lambda tokens, i: ""):
        pass
    return trace


def test_refresh_takes_the_outputs_after_the_committed_prefix():
    lab_ = tiny_lab("llama", vocab_size=16)
    dec = Decoding(lab_.target, PROMPT, Sampling(0.0), None, 32, set(), lab=lab_)
    window = JacobiWindow(5, argmax_guess)
    tree = window.propose(dec, root=1)
    assert len(tree) == 5 and tree.parents == [-1, 0, 1, 2, 3]
    logits = torch.randn(6, 16, generator=torch.Generator().manual_seed(0))
    for kept in range(6):  # node i's output is row i + 1; the bonus took the place of node `kept`
        window.accepted(dec, tree, Verdict(list(range(kept)), int(logits[kept].argmax())), logits)
        assert window.guesses == logits[kept + 1:].argmax(-1).tolist()
        assert window.q == [None] * (5 - kept)
        topped_up = window.propose(dec, root=2)
        assert topped_up.tokens[: 5 - kept] == logits[kept + 1:].argmax(-1).tolist() and len(topped_up) == 5


def test_window_never_goes_past_the_budget():
    lab_ = tiny_lab("llama", vocab_size=16)
    dec = Decoding(lab_.target, PROMPT, Sampling(0.0), None, 3, set(), lab=lab_)
    assert len(JacobiWindow(8, argmax_guess).propose(dec, root=1)) == 3


def test_jacobi_is_greedy_and_refreshed_guesses_beat_uninformed_ones():
    """On small vocabularies greedy output falls into repeats; the Jacobi iterate then converges onto them."""
    noise = torch.Generator().manual_seed(0)

    def uninformed(dec, logits):  # a window that ignores the target's outputs
        return int(torch.randint(logits.shape[-1], (1,), generator=noise)), None

    jacobi_forwards = uninformed_forwards = 0
    for arch in ("llama", "qwen2", "gpt2"):
        lab_ = tiny_lab(arch, vocab_size=8, seed=2)
        want = hf_greedy(lab_.model, PROMPT, 48)
        trace = run(lab_, JacobiWindow(8, argmax_guess), PROMPT, 48)
        assert trace.tokens == want, arch
        assert max(len(s.accepted) for s in trace.steps) >= 2, arch
        jacobi_forwards += trace.forwards
        baseline = run(lab_, JacobiWindow(8, uninformed), PROMPT, 48)
        assert baseline.tokens == want
        uninformed_forwards += baseline.forwards
    assert 3 * 48 / jacobi_forwards > 1.3
    assert jacobi_forwards < 0.85 * uninformed_forwards

