"""Loading diffusion LMs: hub models only with explicit trust_remote_code (never downloaded in tests), and
dllm-default's one-line error until its files ship."""
from __future__ import annotations

import pytest

import lab
from lab import cli, models
from lab.dllm import models as dllm_models
from lab.errors import LabError


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    models.hub_reachable.cache_clear()
    yield
    models.hub_reachable.cache_clear()


@pytest.mark.parametrize("name", ["GSAI-ML/LLaDA-8B-Instruct", "Dream-org/Dream-v0-Instruct-7B"])
def test_hub_dllms_need_trust_remote_code(name, offline):
    with pytest.raises(LabError, match="trust_remote_code=True"):
        lab.Lab(name)
    with pytest.raises(LabError, match=f"cannot load {name}"):  # trusted, but offline and not cached here
        lab.Lab(name, trust_remote_code=True)


def test_dllm_default_says_how_to_make_it_until_it_ships(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(dllm_models, "SHIPPED", tmp_path / "nothing-here")
    with pytest.raises(LabError, match="dllm-default is not shipped yet.*python -m lab train dllm"):
        lab.Lab("dllm-default")
    assert cli.main(["generate", "--method", "llada", "--model", "dllm-default", "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: dllm-default is not shipped yet") and err.count("\n") == 1
