"""A model too large for its device loads with device_map='auto' (accelerate's placement, here the CPU and disk:
the same hooks that move states between GPUs) and runs on the HF backend with the same tokens."""
from __future__ import annotations

import pytest

from lab import models
from lab.api import Lab
from lab.backends.hf import HFBackend
from lab.errors import LabError
from lab.models import tiny


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "llama"
    tiny("llama", vocab_size=96, layers=4, seed=6).save_pretrained(path)
    return str(path)


def test_a_model_spread_over_cpu_and_disk_gives_the_same_tokens(folder):
    whole = Lab(folder, device="cpu")
    spread = Lab(folder, device="cpu", device_map="auto", max_memory="cpu=400KB")
    placed = set(spread.model.hf_device_map.values())
    assert placed == {"cpu", "disk"}  # layers 1-3 and the head live on disk, loaded by hooks on the fly
    assert isinstance(spread.target, HFBackend)
    prompt = [5, 9, 14, 9, 14, 22, 5, 9]
    for method in ("greedy", "pld", "sps"):
        assert spread.generate(method, prompt, max_new_tokens=16).tokens == \
            whole.generate("greedy", prompt, max_new_tokens=16).tokens, method


def test_max_memory_is_checked():
    assert models.parse_max_memory("0=70GiB, cpu=100GiB") == {0: "70GiB", "cpu": "100GiB"}
    with pytest.raises(LabError, match="DEVICE=SIZE"):
        models.parse_max_memory("70GiB")
    with pytest.raises(LabError, match="needs a device_map"):
        models.load("default", "cpu", None, False, None, "cpu=1GiB")
