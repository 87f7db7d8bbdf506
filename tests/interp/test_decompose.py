"""The backend's parts sum back to every residual stream, on Llama, Qwen2 and GPT-2 (grouped-query attention,
biases); the readout of all parts of a stream gives its logits; unsupported models are refused."""
from __future__ import annotations

import pytest
import torch

from lab.backends import backend_for
from lab.backends.decompose import decompose
from lab.backends.readout import direct_logits, norm_bias_logits
from lab.errors import LabError

from .helpers import tiny_with_biases

IDS = [5, 9, 2, 31, 7, 7, 40, 3]


@pytest.fixture(scope="module", params=["llama", "qwen2", "gpt2"])
def model(request):
    return tiny_with_biases(request.param)


def test_parts_sum_back_to_the_models_own_streams(model):
    parts = decompose(backend_for(model), IDS)
    assert parts.error < 1e-5
    with torch.no_grad():
        hidden = model(torch.tensor([IDS]), output_hidden_states=True).hidden_states
    for n, layer in enumerate(parts.layers):
        torch.testing.assert_close(layer.residual, hidden[n][0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(layer.residual + layer.attention_update(), layer.middle, atol=1e-4, rtol=1e-4)
    for n in range(len(parts.layers) - 1):
        torch.testing.assert_close(parts.layers[n].output, parts.layers[n + 1].residual, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(parts.normed, hidden[-1][0], atol=1e-4, rtol=1e-4)  # final-normed


def test_grouped_query_heads_and_biases_are_where_the_model_has_them(model):
    parts = decompose(backend_for(model), IDS)
    layer = parts.layers[0]
    assert layer.attention.shape == (4, len(IDS), len(IDS))
    assert layer.head_values.shape == (len(IDS), 4, 64)
    assert (layer.attention_bias is not None) == (model.config.model_type == "gpt2")  # c_proj has one; o_proj not
    assert torch.all(layer.attention.triu(1) == 0)  # causal


def test_every_part_of_the_last_stream_reads_out_to_its_logits(model):
    """Direct logits of the embedding, every head of every layer, the output biases and every FFN block add up to
    the model's logits less the final norm's bias: the final norm is frozen once and biases counted once."""
    backend = backend_for(model)
    parts = decompose(backend, IDS)
    p = len(IDS) - 1
    final = parts.layers[-1].output[p]
    pieces = [parts.layers[0].residual[p]]
    for layer in parts.layers:
        pieces += list(torch.einsum("hj,jhd->hd", layer.attention[:, p], layer.head_values))
        pieces += [layer.mlp[p]] + ([layer.attention_bias] if layer.attention_bias is not None else [])
    total = direct_logits(backend, torch.stack(pieces), final).sum(0)
    bias = norm_bias_logits(backend)
    expected = backend.head(parts.normed[p:p + 1])[0]
    torch.testing.assert_close(total + (bias if bias is not None else 0), expected, atol=1e-3, rtol=1e-4)


def test_neuron_activations_rebuild_the_mlp_output(model):
    from lab.backends.readout import neuron_directions

    backend = backend_for(model)
    parts = decompose(backend, IDS, neurons=True)
    layer = parts.layers[1]
    rebuilt = layer.neurons @ neuron_directions(backend, 1)
    down = [m for n, m in model.named_modules() if n.endswith(("layers.1.mlp.down_proj", "h.1.mlp.c_proj"))][0]
    rebuilt = rebuilt + (down.bias if down.bias is not None else 0)
    torch.testing.assert_close(rebuilt, layer.mlp, atol=1e-4, rtol=1e-4)


def test_a_model_whose_parts_do_not_add_up_is_refused(monkeypatch):
    from lab.backends import decompose as module

    model = tiny_with_biases("llama")
    real = module.output_weights
    monkeypatch.setattr(module, "output_weights", lambda attention, heads: (real(attention, heads)[0].flip(0), None))
    with pytest.raises(LabError, match="do not sum back"):
        decompose(backend_for(model), IDS)


def test_a_16_bit_model_is_decomposed_in_float32_within_its_rounding():
    model = tiny_with_biases("gpt2").to(torch.bfloat16)
    parts = decompose(backend_for(model), IDS)
    assert 1e-4 < parts.error < 3e-2 and parts.layers[0].head_values.dtype == torch.float32
