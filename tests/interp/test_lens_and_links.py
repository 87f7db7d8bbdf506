"""Lenses end at the model's own prediction; the batch API counts routes; a speculative step's rejection is
rebuilt and explained; the skip oracle agrees with hooks that skip a layer for one token, and with what the
layer-skip and clasp drafts actually had accepted."""
from __future__ import annotations

import pytest
import torch

from lab import interp
from lab.backends.readout import direct_logits
from lab.errors import LabError
from lab.trace import Step, Trace

from .helpers import tiny_lab_of, tiny_with_biases

IDS = [5, 9, 2, 31, 7, 7, 40, 3, 11, 12]


@pytest.fixture(scope="module")
def tiny():
    return tiny_lab_of(tiny_with_biases("llama", layers=4))


@pytest.fixture(scope="module")
def tiny_flow(tiny):
    return interp.flow(tiny, IDS, neurons=True)


def test_the_logit_lens_ends_at_the_models_prediction(tiny, tiny_flow):
    predicted = tiny_flow.predicted[-1]
    lens = interp.logit_lens(tiny, tiny_flow, track=(predicted,))
    assert lens.stages == 5 and lens.positions == list(range(len(IDS) - 12 if len(IDS) > 12 else 0, len(IDS)))
    assert lens.top[-1] == tiny_flow.predicted[-len(lens.positions):]
    assert lens.ranks[predicted][-1][-1] == 0
    assert interp.token_rank(tiny, tiny_flow, predicted) == [row[-1] for row in lens.ranks[predicted]]
    raw = interp.logit_lens(tiny, tiny_flow, [3], final_norm=False)
    x = tiny_flow.parts.layers[2].residual[3]
    assert raw.top[2] == [int((tiny.model.lm_head.weight @ x).argmax())]  # without the norm: the head alone


def test_effects_of_heads_blocks_and_neurons(tiny, tiny_flow):
    for e in (interp.head_effect(tiny, tiny_flow, 1, 2, k=5), interp.block_effect(tiny, tiny_flow, 3, "ffn", k=5),
              interp.block_effect(tiny, tiny_flow, 0, "attention", k=5),
              interp.neuron_effect(tiny, tiny_flow, 2, 7, k=5)):
        ups, downs = [v for _, v in e.promoted], [v for _, v in e.suppressed]
        assert len(ups) == len(downs) == 5 and ups == sorted(ups, reverse=True) and downs == sorted(downs)
        assert ups[0] > 0 > downs[0]  # centred over the vocabulary
    with pytest.raises(LabError, match="block"):
        interp.block_effect(tiny, tiny_flow, 0, "mlp")
    with pytest.raises(LabError, match="neurons=True"):
        interp.neuron_effect(tiny, interp.flow(tiny, IDS), 0, 1)
    with pytest.raises(LabError, match="head"):
        interp.head_effect(tiny, tiny_flow, 0, 4)


def test_head_frequency_counts_routes(tiny):
    prompts = [IDS, IDS[:6], {"prompt": IDS[3:], "chat": False}]
    stats = interp.head_frequency(tiny, prompts, tau=0.04)
    assert stats.prompts == 3 and stats.heads.shape == (4, 4) and len(stats.sizes) == 3
    manual = torch.zeros(4, 4)
    for p in (IDS, IDS[:6], IDS[3:]):
        for layer, head in interp.flow(tiny, p).route(tau=0.04).important_heads():
            manual[layer, head] += 1
    torch.testing.assert_close(stats.heads, manual / 3)
    assert stats.top(1)[0][1] == float(stats.heads.max())
    wide = interp.head_frequency(tiny, prompts, tau=0.02)
    assert torch.all(wide.heads_at_prediction <= wide.heads) and torch.all(wide.ffn_at_prediction <= wide.ffn)
    assert 0 < wide.heads_at_prediction.sum() < wide.heads.sum()  # fewer heads write into the predicting stream


def test_first_rejection_rebuilds_the_context():
    t = Trace("demo", prompt=[5, 6], tokens=[1, 2, 3, 4, 5])
    t.steps = [Step(committed=[1], origin=["plain"], positions=[0], prefill=True),
               Step(committed=[2, 3, 4], origin=["draft", "draft", "bonus"], proposed=[2, 3, 9, 8, 10],
                    parents=[-1, 0, 1, 1, -1], accepted=[0, 1], bonus=4, positions=[1, 2, 3]),
               Step(committed=[5], origin=["bonus"], proposed=[11], parents=[-1], bonus=5, positions=[4])]
    assert interp.first_rejection(t) == (1, [5, 6, 1, 2, 3], 2, 4, 9)  # the first of the rejected siblings
    assert interp.first_rejection(t, 2) == (2, [5, 6, 1, 2, 3, 4], 0, 5, 11)
    t.steps[1].parents = [-1, 0, -1, 2, 2]  # the accepted path's last node has no drafted child: nothing rejected
    assert interp.first_rejection(t, 1) is None


@pytest.fixture(scope="module")
def layer_skip(tiny):
    return tiny.generate("layer-skip", IDS, max_new_tokens=16).trace


def test_a_rejected_layer_skip_draft_is_explained(tiny, layer_skip):
    rej = interp.rejection(tiny, layer_skip)
    assert rej is not None, "the tiny model should reject some early-exit draft"
    step = layer_skip.steps[rej.step]
    assert rej.target == step.bonus and rej.draft != rej.target and rej.accepted == len(step.accepted)
    assert rej.context[:len(IDS)] == IDS
    assert rej.ranks["target"][-1] == 0  # the target's greedy token is its argmax
    assert rej.exit_layer == 2 and rej.exit_token == rej.draft  # the exit route is what the draft computed
    assert rej.draft_route is not None and rej.draft_route.top == 2 and rej.draft_route.predicted is None
    f, p = rej.flow, rej.position
    assert all(key.split(">")[1].split(":")[0].endswith(f"_{p}") for key in rej.contrast)
    final = f.parts.layers[-1].output[p]
    rest = [f.parts.layers[0].residual[p]] + [part.attention_bias for part in f.parts.layers
                                              if part.attention_bias is not None]
    pair = direct_logits(tiny.target, torch.stack(rest), final, torch.tensor([rej.target, rej.draft])).sum(0)
    logits = tiny.target.head(f.parts.normed[p:p + 1])[0]
    total = rej.heads.sum() + rej.ffn.sum() + pair[0] - pair[1]  # every part's share of the logit difference
    assert float(total) == pytest.approx(float(logits[rej.target] - logits[rej.draft]), abs=1e-3)
    assert "chose" in rej.summary()


def skip_for_last_token(model, ids, layers) -> int:
    """The argmax after `ids` when `layers` are skipped for the last token only (hooks on the model itself)."""
    blocks = model.model.layers
    handles = [blocks[i].register_forward_hook(
        lambda m, args, out: torch.cat([out[:, :-1], args[0][:, -1:]], 1) if not isinstance(out, tuple) else
        (torch.cat([out[0][:, :-1], args[0][:, -1:]], 1), *out[1:])) for i in layers]
    try:
        with torch.no_grad():
            return int(model(torch.tensor([ids])).logits[0, -1].argmax())
    finally:
        for h in handles:
            h.remove()


def test_the_skip_oracle_agrees_with_hooks(tiny, layer_skip):
    oracle = interp.skip_oracle(tiny, layer_skip, max_tokens=4, greedy=True)
    assert oracle.tokens == layer_skip.tokens[:4] and all(oracle.agrees)
    ids = IDS + layer_skip.tokens
    for t in range(4):
        context = ids[:len(IDS) + t]
        assert oracle.exits[t][4] == oracle.tokens[t] and 1 <= oracle.earliest_exit(t) <= 4
        for layer in range(4):
            assert oracle.skippable[t][layer] == (skip_for_last_token(tiny.model, context, [layer]) == oracle.tokens[t])
        assert skip_for_last_token(tiny.model, context, oracle.greedy[t]) == oracle.tokens[t]
    assert len(oracle.skippable_share()) == 4


@pytest.mark.parametrize("method", ["layer-skip", "clasp"])
def test_the_oracle_sees_what_the_drafts_had_accepted(tiny, layer_skip, method):
    trace = layer_skip if method == "layer-skip" else tiny.generate("clasp", IDS, max_new_tokens=12).trace
    oracle = interp.skip_oracle(tiny, trace, max_tokens=12, alone=False)  # exits only: one forward
    assert oracle.skippable == [] and oracle.exits[0][4] == oracle.tokens[0]
    rows = interp.compare(tiny, oracle, trace)
    assert rows, "some speculative step within the oracle's tokens"
    for row in rows:  # the draft's first token is the choice's argmax: accepted exactly when it is the target's
        assert row["hits"][0] == (row["accepted"] >= 1)
        assert row["layers_run"] < 4 and "alone_skippable" not in row
