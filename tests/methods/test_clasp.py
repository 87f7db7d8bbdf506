"""clasp: a DP over the last verified token's states, running each layer on the candidate draft states, re-run
every `every` verifications."""
from __future__ import annotations

import inspect

import torch

from lab.speculative.drafters.clasp import optimise

from ..conftest import hf_greedy, tiny_lab
from .test_layer_skip import PROMPT, silence


def partial_forward(model, ids: list[int], kept: list[int]) -> torch.Tensor:
    """The last token's residual stream after the last of the decoder layers `kept`, running only those, every
    layer attending to the full model's keys and values of the context (a real draft forward on the cache)."""
    layers = model.model.layers
    arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    with torch.no_grad():
        out = model(torch.tensor([ids[:-1]]), use_cache=True)
        cache, found = out.past_key_values, []
        keep = lambda module, args, out: found.append(out[0] if isinstance(out, tuple) else out)  # noqa: E731
        handle = layers[kept[-1]].register_forward_hook(keep)
        original = model.model.layers
        try:
            model.model.layers = torch.nn.ModuleList([layers[i] for i in kept])
            model(torch.tensor([ids[-1:]]), use_cache=True, position_ids=torch.tensor([[len(ids) - 1]]),
                  **{arg: cache})
        finally:
            model.model.layers = original
            handle.remove()
    return found[0][0, -1]


def test_the_dp_runs_each_layer_like_a_real_partial_forward():
    """Every cell g(i, j) of the table is the state a draft skipping exactly its layers reaches after layer i."""
    tl = tiny_lab("llama", vocab_size=64, layers=6, seed=2)
    ids = PROMPT + [17, 4, 9]
    target = tl.target.fork()
    target.prefill(ids)
    with torch.no_grad():
        states = [h[0, -1] for h in tl.model(torch.tensor([ids]), output_hidden_states=True).hidden_states]
    skipped, table = optimise(target, states, 3, len(ids) - 1)
    assert len(table) == 5 and len(skipped) == 3 and max(skipped) <= 4
    checked = 0
    for i, row in enumerate(table):
        for j, (state, skips) in row.items():
            kept = [layer for layer in range(i + 1) if layer not in skips]
            assert len(skips) == j and all(s <= i for s in skips)
            if kept:
                real = partial_forward(tl.model, ids, kept)
                assert torch.allclose(state, real, rtol=1e-4, atol=1e-3), (i, j, skips)
                checked += 1
    assert checked >= 12
    assert table[-1][0][0].allclose(states[5], rtol=1e-4, atol=1e-3)  # nothing skipped: the full model's own state
    assert target.length == len(ids)  # the cache is as it was


def test_the_dp_skips_exactly_the_layers_that_do_nothing():
    tl = tiny_lab("llama", vocab_size=64, layers=6, seed=3)
    silence(tl.model, [1, 3])
    ids = PROMPT
    target = tl.target.fork()
    target.prefill(ids)
    with torch.no_grad():
        states = [h[0, -1] for h in tl.model(torch.tensor([ids]), output_hidden_states=True).hidden_states]
    assert optimise(target, states, 2, len(ids) - 1)[0] == [1, 3]


def test_the_skip_set_is_kept_between_optimisations_and_comes_from_the_last_verified_token():
    tl = tiny_lab("llama", vocab_size=64, layers=6, seed=2)
    trace = tl.generate("clasp", PROMPT, max_new_tokens=24, skip=0.5, length=3, every=3).trace
    assert trace.tokens == hf_greedy(tl.model, PROMPT, 24)
    steps = [s for s in trace.steps if s.proposed]
    assert all(len(s.info["skipped"]) == 3 for s in steps)
    optimised = [i for i, s in enumerate(steps) if s.info.get("optimised")]
    assert optimised == list(range(0, len(steps), 3))  # sparse persistence: every third verification
    committed = len(trace.steps[0].committed)
    for i, (before, step) in enumerate(zip(steps, steps[1:])):
        committed += len(before.committed)
        if i not in optimised:
            assert step.info["skipped"] == before.info["skipped"]
            continue
        verified = PROMPT + trace.tokens[:committed - 1]  # the cache after `before`: its bonus is not in it yet
        target = tl.target.fork()
        target.prefill(verified)
        with torch.no_grad():
            states = [h[0, -1] for h in tl.model(torch.tensor([verified]), output_hidden_states=True).hidden_states]
        assert step.info["skipped"] == optimise(target, states, 3, len(verified) - 1)[0]
    assert len({tuple(s.info["skipped"]) for s in steps}) > 1  # the context really moves the choice


def test_the_draft_runs_only_the_kept_layers_on_the_target_cache():
    """With layers 1 and 2 made identities, the DP skips them and every later draft is the full model's."""
    tl = tiny_lab("llama", vocab_size=64, layers=4, seed=6)
    silence(tl.model, [1, 2])
    trace = tl.generate("clasp", PROMPT, max_new_tokens=17, skip=0.5, length=3, every=1).trace
    assert trace.tokens == hf_greedy(tl.model, PROMPT, 17)
    later = [s for s in trace.steps if s.proposed][1:]
    assert later and all(s.info["skipped"] == [1, 2] for s in later)
    assert all(len(s.accepted) == len(s.proposed) for s in later)
