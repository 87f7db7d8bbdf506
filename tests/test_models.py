"""Model loading: the default model's cache equals transformers' own GGUF loading, bit for bit."""
from __future__ import annotations

import pytest
import torch

from lab import LabError, models


def test_default_cache_is_bit_identical_to_gguf_loading(default_lab):
    from transformers import AutoModelForCausalLM

    gguf = models.default_gguf()
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    cached = default_lab.model.state_dict()
    direct_sd = direct.state_dict()
    assert cached.keys() == direct_sd.keys()
    for name, tensor in direct_sd.items():
        assert torch.equal(cached[name], tensor), name


def test_default_is_fp32_on_cpu(default_lab):
    assert next(default_lab.model.parameters()).dtype == torch.float32
    assert default_lab.model.config.num_hidden_layers == 30
    assert default_lab.eos == {2}


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_tiny_architectures(arch):
    model = models.tiny(arch, vocab_size=32)
    assert model.config.vocab_size == 32


@pytest.mark.parametrize("name", ["", "./no/such/folder", "missing.gguf"])
def test_bad_model_names(name):
    with pytest.raises(LabError):
        models.resolve(name)


def test_local_folder_without_tokenizer_takes_token_ids(tmp_path):
    import lab

    models.tiny("qwen2", vocab_size=40).save_pretrained(tmp_path)
    folder_lab = lab.Lab(str(tmp_path), device="cpu")
    assert folder_lab.tokenizer is None
    assert len(folder_lab.generate("greedy", [1, 2, 3], max_new_tokens=5).tokens) == 5
    with pytest.raises(LabError, match="token ids"):
        folder_lab.generate("greedy", "text needs a tokenizer")


def test_conversion_takes_special_tokens_from_the_gguf(tmp_path, monkeypatch):
    """transformers 5.17 (the GPU machine's) converted the GGUF's tokenizer with eos <|im_start|> (1): generation
    stopped one turn late there. The file's metadata decides, whatever transformers' conversion says."""
    import transformers

    load = transformers.AutoTokenizer.from_pretrained

    def wrong_eos(*args, **kwargs):
        tok = load(*args, **kwargs)
        tok.eos_token = "<|im_start|>"  # what the older conversion gave
        return tok

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", wrong_eos)
    out = models.convert_gguf(models.default_gguf(), tmp_path / "converted")
    monkeypatch.undo()
    assert models.gguf_special_tokens(models.default_gguf()) == {"bos": 1, "eos": 2, "padding": 2}
    tok = transformers.AutoTokenizer.from_pretrained(out)
    config = transformers.AutoConfig.from_pretrained(out)
    generation = transformers.GenerationConfig.from_pretrained(out)
    assert tok.eos_token_id == config.eos_token_id == generation.eos_token_id == 2
