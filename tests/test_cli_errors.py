"""Bad input to the CLI, in one process: one line on stderr, exit 2, nothing on stdout and no model loaded."""
from __future__ import annotations

import json

import pytest
import torch

from lab import cli, models
from lab.errors import LabError


@pytest.fixture
def no_model(monkeypatch):
    """The test fails if anything loads a model: bad input must be found before that."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "load", refuse)


def run(capsys, *args) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, args, message: str) -> None:
    code, out, err = run(capsys, *args)
    assert code == 2 and out == "", (code, out, err)
    assert err.count("\n") == 1 and message in err, err


def write_prompts(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


# -- --prompts and @path files -------------------------------------------------------------------------------
def test_prompts_naming_a_folder(tmp_path, no_model, capsys):
    refused(capsys, ["generate", "--method", "greedy", "--prompts", tmp_path], "is a folder, not a file")


def test_files_that_are_not_utf8(tmp_path, no_model, capsys):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes('{"id": "a", "prompt": "café"}\n'.encode("latin-1"))
    refused(capsys, ["generate", "--method", "greedy", "--prompts", latin1], "not UTF-8")
    refused(capsys, ["generate", "--method", "pld", "--prompt", "hi", "--opt", f"length=@{latin1}"], "not UTF-8")


def test_chat_must_be_a_boolean(tmp_path, no_model, capsys):
    path = write_prompts(tmp_path / "p.jsonl", [{"id": "a", "prompt": "hi", "chat": "false"}])
    refused(capsys, ["generate", "--method", "greedy", "--prompts", path], '"chat" must be true or false')


# -- devices ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device, message", [
    ("banana", "unknown device"),
    pytest.param("cuda", "no CUDA GPU", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has a GPU")),
])
def test_bad_device(device, message, no_model, capsys):
    refused(capsys, ["generate", "--method", "greedy", "--prompt", "hi", "--device", device], message)


def test_load_checks_the_device_first():
    with pytest.raises(LabError, match="unknown device"):
        models.load("default", device="banana")
    assert models.check_device("cpu") == "cpu" and models.check_device(None) == models.default_device()
