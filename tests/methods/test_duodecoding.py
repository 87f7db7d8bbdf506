"""DuoDecoding: greedy's tokens, a CPU draft in a thread beside the target, sequences that follow confidence."""
from __future__ import annotations

import pytest
import torch

from lab.backends.hf import HFBackend
from lab.speculative.drafters.duodecoding import cpu_draft, extra_starts

from ..conftest import hf_greedy, tiny_lab, use_draft
from .test_pearl import PROMPTS, assert_overlapped, drafts, slow_target


class WrongFirstGuess(HFBackend):
    """The target's own model, except that right after a context its two best logits are swapped: every
    proposal's first guess is wrong and its runner-up right, and the draft is right after that. A second
    sequence pays off with such a draft; a single chain never does."""

    def sync(self, context):
        logits = super().sync(context)
        first, second = logits.topk(2).indices.tolist()
        out = logits.clone()
        out[first], out[second] = logits[second], logits[first]
        return out


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_identity_with_greedy_for_good_and_poor_drafts(arch):
    tl = tiny_lab(arch, vocab_size=96, seed=1)
    for draft in [*drafts(tl, arch), WrongFirstGuess(tl.model)]:
        use_draft(tl, draft)
        for prompt in PROMPTS:
            assert tl.generate("duodecoding", prompt, max_new_tokens=20).tokens == hf_greedy(tl.model, prompt, 20)


def test_the_cpu_draft_runs_while_the_target_forwards():
    tl, log = slow_target()
    trace = tl.generate("duodecoding", PROMPTS[0], max_new_tokens=10, budget=4).trace
    assert trace.tokens == hf_greedy(tl.model, PROMPTS[0], 10)
    assert_overlapped(trace, log)


def test_the_number_of_sequences_follows_the_drafts_confidence():
    sure = torch.tensor([0.90, 0.05, 0.03, 0.02])
    unsure = torch.tensor([0.40, 0.30, 0.20, 0.10])
    assert extra_starts(sure, 0, 0.95, 3) == []  # 0.05 < 0.9 * 0.95: one sequence
    assert extra_starts(unsure, 0, 0.4, 3) == [1, 2]  # 0.3 and 0.2 beat 0.4 * 0.4 = 0.16; 0.1 does not
    assert extra_starts(unsure, 0, 0.7, 3) == [1]  # a surer second token: fewer sequences
    assert extra_starts(unsure, 0, 0.4, 1) == [1]  # at most max_sequences - 1 extra
    assert extra_starts(unsure, 1, 0.4, 3) == [0, 2]  # the drawn first token (T > 0) need not be the top one


def test_a_second_sequence_is_picked_when_the_first_guess_is_wrong():
    """The draft's first guess is always wrong but the target's token is its runner-up: DuoDecoding drafts it as
    a second sequence when the draft is unsure and goes on with it; PEARL's single chain cannot."""
    tl = tiny_lab("llama", vocab_size=96, seed=1)
    use_draft(tl, WrongFirstGuess(tl.model))
    duo = tl.generate("duodecoding", PROMPTS[0], max_new_tokens=20).trace
    pearl = tl.generate("pearl", PROMPTS[0], max_new_tokens=20).trace
    assert duo.tokens == pearl.tokens == hf_greedy(tl.model, PROMPTS[0], 20)
    chosen = [s.info["chosen"] for s in duo.steps if not s.prefill]
    assert any(c is not None and c > 0 for c in chosen)
    assert all(s.info["sequences"] >= 1 for s in duo.steps if not s.prefill)
    assert duo.tokens_per_forward > pearl.tokens_per_forward


def test_the_draft_is_on_the_cpu_and_a_copy_is_independent():
    tl = tiny_lab("llama", vocab_size=96, seed=1)
    view = tl.target.view([0])
    assert cpu_draft(view) is view  # already on the CPU: no copy
    copy = view.on("cpu", torch.float32)
    assert copy.device.type == "cpu" and copy.dtype == torch.float32
    mine = {p.data_ptr() for p in copy.model.parameters()}
    assert not mine & {p.data_ptr() for p in tl.model.parameters()}  # its own weights
    assert copy.num_layers == view.num_layers and len(list(copy.model.parameters())) == len(list(view.model.parameters()))
    ids = PROMPTS[0][:10]
    assert torch.allclose(copy.prefill(ids), view.prefill(ids), atol=1e-5)
