"""del picks the exit layer and draft length that maximise tokens per layer, from measured agreement."""
from __future__ import annotations

from lab.speculative.drafters.del_exit import ExitTracker, tokens_per_layer

from ..conftest import hf_greedy, tiny_lab
from .test_layer_skip import PROMPT, silence


def test_chosen_exit_follows_measured_agreement():
    tracker = ExitTracker(num_layers=8, exits=[2, 4, 6], decay=0.5, max_length=6)
    tracker.observe({2: 0.0, 4: 0.1, 6: 1.0})
    assert tracker.choose() == (6, 6)  # only the deep exit agrees: use it, and draft long
    for _ in range(6):
        tracker.observe({2: 1.0, 4: 1.0, 6: 1.0})
    assert tracker.choose()[0] == 2  # every exit agrees now: the cheapest one wins
    for _ in range(6):
        tracker.observe({2: 0.05, 4: 0.95, 6: 0.95})
    assert tracker.choose()[0] == 4


def test_length_grows_with_agreement():
    lengths = []
    for alpha in (0.2, 0.6, 0.9, 1.0):
        tracker = ExitTracker(num_layers=8, exits=[4], decay=0.5, max_length=8)
        tracker.observe({4: alpha})
        lengths.append(tracker.choose()[1])
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1] == 8
    assert tokens_per_layer(1.0, 4, 3, 8) == 4 / 20


def test_agreement_is_measured_on_the_verification_hidden_states():
    """Layers 2 and 3 are identities: exits 2 and 3 agree with the target always, exit 1 does not."""
    tl = tiny_lab("llama", vocab_size=64, layers=4, seed=4)
    silence(tl.model, [2, 3])
    trace = tl.generate("del", PROMPT, max_new_tokens=24, candidates=3, max_length=5).trace
    assert trace.tokens == hf_greedy(tl.model, PROMPT, 24)
    steps = [s for s in trace.steps if s.proposed]
    assert steps[0].info["alpha"] == {}  # nothing measured before the first verification
    alpha = steps[-1].info["alpha"]
    assert alpha["2"] == alpha["3"] == 1.0 and alpha["1"] < 1.0
    assert all(s.info["exit_layer"] == 2 and s.info["length"] == 5 for s in steps[1:])
    assert all(len(s.accepted) == len(s.proposed) for s in steps[1:])


def test_agreement_at_temperature_is_the_acceptance_probability():
    """At T > 0 an exact exit's agreement is sum(min(p, q)) = 1, not a noisy token match."""
    tl = tiny_lab("llama", vocab_size=64, layers=4, seed=4)
    silence(tl.model, [2, 3])
    trace = tl.generate("del", PROMPT, max_new_tokens=12, candidates=3, temperature=1.0, seed=3).trace
    alpha = [s for s in trace.steps if s.proposed][-1].info["alpha"]
    assert abs(alpha["2"] - 1.0) < 1e-5 and alpha["1"] < 0.99
