"""layer-skip drafts with the target's own early exit, on the target's own KV cache."""
from __future__ import annotations

import torch

from lab.decoding import Decoding
from lab.sampling import Sampling
from lab.speculative.drafters.layer_skip import EarlyExit
from lab.speculative.self_draft import exit_layer

from ..conftest import hf_greedy, tiny_lab

PROMPT = [5, 9, 2, 7, 5, 9, 2, 7, 3, 11, 4, 8]


def started(lab_, prompt, temperature=0.0, max_new_tokens=16):
    dec = Decoding(lab_.target, prompt, Sampling(temperature=temperature), torch.Generator().manual_seed(0),
                   max_new_tokens, lab_.eos, lab_.tokenizer, lab_)
    root = dec.choose(dec.prefill())
    dec.tokens.append(root)
    return dec, root


def silence(model, layers):
    """Make decoder layers identities (their residual updates vanish)."""
    for i in layers:
        model.model.layers[i].self_attn.o_proj.weight.data.zero_()
        model.model.layers[i].mlp.down_proj.weight.data.zero_()


def test_exit_layer_is_a_clamped_fraction_of_depth():
    assert exit_layer(30, 0.5) == 15 and exit_layer(4, 0.75) == 3
    assert exit_layer(2, 0.5) == 1 and exit_layer(2, 1.0) == 1 and exit_layer(8, 0.01) == 1


def test_draft_is_the_early_exit_and_leaves_the_target_cache_as_it_was():
    tl = tiny_lab("llama", vocab_size=64, layers=4, seed=3)
    dec, root = started(tl, PROMPT)
    drafter = EarlyExit(dec, exit_fraction=0.5, length=4)
    tree = drafter.propose(dec, root)
    assert len(tree) == 4 and drafter.forwards == 4  # no prefill of a draft cache: it reads the target's
    assert dec.target.ids == PROMPT
    assert all(layer.keys.shape[-2] == len(PROMPT) for layer in dec.target.cache.layers)
    context = PROMPT + [root]
    for token in tree.tokens:  # each draft token is the argmax of layer 2's hidden state through norm + head
        with torch.no_grad():
            states = tl.model(torch.tensor([context]), output_hidden_states=True).hidden_states
        assert token == int(tl.target.exit_logits(states[2][0, -1:]).argmax())
        context.append(token)


def test_an_exact_early_exit_gets_every_draft_accepted():
    """If the layers after the exit do nothing, the early exit is the model: every draft must be accepted."""
    tl = tiny_lab("llama", vocab_size=64, layers=4, seed=4)
    silence(tl.model, [2, 3])
    result = tl.generate("layer-skip", PROMPT, max_new_tokens=21, exit_fraction=0.5, length=4)
    assert result.tokens == hf_greedy(tl.model, PROMPT, 21)
    speculative = [s for s in result.trace.steps if s.proposed]
    assert all(len(s.accepted) == len(s.proposed) for s in speculative)
    assert result.trace.forwards == 4  # the prefill gives token 1, then 4 rounds of 4 drafts + 1 bonus
    assert speculative[0].info["exit_layer"] == 2


def test_a_real_early_exit_is_rejected_sometimes_but_output_is_unchanged():
    tl = tiny_lab("llama", vocab_size=64, layers=4, seed=5)
    result = tl.generate("layer-skip", PROMPT, max_new_tokens=20, exit_fraction=0.25, length=3)
    assert result.tokens == hf_greedy(tl.model, PROMPT, 20)
    assert any(len(s.accepted) < len(s.proposed) for s in result.trace.steps if s.proposed)
