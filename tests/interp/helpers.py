"""Small models for the interp tests: tiny random ones of the three families, and one built by hand."""
from __future__ import annotations

import torch

import lab
from lab.models import tiny


def tiny_with_biases(arch: str, layers: int = 2, seed: int = 0):
    """A tiny random model whose biases (GPT-2's everywhere, Qwen2's q/k/v) are not zero, so that they count."""
    model = tiny(arch, layers=layers, seed=seed)
    torch.manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.3)
    return model


def tiny_lab_of(model) -> lab.Lab:
    return lab.Lab(model_obj=model, tokenizer=None)


KEY, PLAIN, OTHER = 3, 1, 2  # the hand-built model's tokens


def hand_built():
    """One Llama layer whose route is known: attention is uniform (q = k = 0), only the KEY token has a value, only
    head 0 writes it out (to dimension 4, times 2), the MLP writes nothing. At position i the KEY's part is
    (1 / (i + 1)) * 2 * normed(KEY)[1] * e4 and nothing else reaches the stream but itself."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=6, hidden_size=8, intermediate_size=4, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=4, max_position_embeddings=64, tie_word_embeddings=False,
                         bos_token_id=None, eos_token_id=None, pad_token_id=None)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for norm in (model.model.norm, model.model.layers[0].input_layernorm,
                     model.model.layers[0].post_attention_layernorm):
            norm.weight.fill_(1.0)
        model.model.embed_tokens.weight[:, 0] = 0.5  # every token: 0.5 on dimension 0
        model.model.embed_tokens.weight[KEY, 1] = 1.0  # the KEY token also 1.0 on dimension 1
        attention = model.model.layers[0].self_attn
        attention.v_proj.weight[0, 1] = 1.0  # the value's first entry reads dimension 1
        attention.o_proj.weight[4, 0] = 2.0  # head 0 (columns 0..3) writes that entry, doubled, to dimension 4
        model.lm_head.weight.normal_()
    model.name_or_path = "hand-built"
    return model
