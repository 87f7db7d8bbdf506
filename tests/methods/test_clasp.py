"""clasp re-chooses the skipped layers after each verification with a DP on the last verified token's states."""
from __future__ import annotations

import pytest
import torch

from lab.speculative.drafters.clasp import select_skipped

from ..conftest import hf_greedy, tiny_lab
from .test_layer_skip import PROMPT, silence


def residual_states(updates: list[torch.Tensor]) -> list[torch.Tensor]:
    """Hidden states h_0 .. h_L of one token whose layer i adds updates[i]."""
    states = [torch.randn(16, generator=torch.Generator().manual_seed(0))]
    for u in updates:
        states.append(states[-1] + u)
    return states


def test_dp_skips_exactly_the_layers_that_do_nothing():
    g = torch.Generator().manual_seed(1)
    updates = [torch.randn(16, generator=g) for _ in range(7)]
    updates[1] = updates[4] = torch.zeros(16)
    assert select_skipped(residual_states(updates), 2) == [1, 4]


@pytest.mark.parametrize("count", [0, 1, 3, 5, 9])
def test_selected_set_has_the_requested_size_and_never_the_last_layer(count):
    g = torch.Generator().manual_seed(count)
    states = [torch.randn(16, generator=g) for _ in range(7)]  # 6 layers
    skipped = select_skipped(states, count)
    assert len(skipped) == min(count, 5) and len(set(skipped)) == len(skipped)
    assert all(0 <= i <= 4 for i in skipped)


def test_skip_set_is_recomputed_from_the_last_verified_token():
    tl = tiny_lab("llama", vocab_size=64, layers=6, seed=2)
    trace = tl.generate("clasp", PROMPT, max_new_tokens=16, skip=0.5, length=3).trace
    assert trace.tokens == hf_greedy(tl.model, PROMPT, 16)
    steps = [s for s in trace.steps if s.proposed]
    assert all(len(s.info["skipped"]) == 3 for s in steps)
    committed = len(trace.steps[0].committed)
    for before, step in zip(steps, steps[1:]):
        committed += len(before.committed)
        verified = PROMPT + trace.tokens[:committed - 1]  # the cache after `before`: its bonus is not in it yet
        with torch.no_grad():
            states = tl.model(torch.tensor([verified]), output_hidden_states=True).hidden_states
        assert step.info["skipped"] == select_skipped([h[0, -1] for h in states], 3)
    assert len({tuple(s.info["skipped"]) for s in steps}) > 1  # the context really moves the choice


def test_draft_runs_only_the_kept_layers_on_the_target_cache():
    """With layers 1 and 2 made identities, the DP skips them and every later draft is the full model's."""
    tl = tiny_lab("llama", vocab_size=64, layers=4, seed=6)
    silence(tl.model, [1, 2])
    trace = tl.generate("clasp", PROMPT, max_new_tokens=17, skip=0.5, length=3).trace
    assert trace.tokens == hf_greedy(tl.model, PROMPT, 17)
    later = [s for s in trace.steps if s.proposed][1:]
    assert later and all(s.info["skipped"] == [1, 2] for s in later)
    assert all(len(s.accepted) == len(s.proposed) for s in later)
