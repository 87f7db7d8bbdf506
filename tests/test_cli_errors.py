"""Bad input to the CLI, in one process: one line on stderr, exit 2, nothing on stdout and no model loaded; Trace
files named safely from any prompt id; serve's port and settings checked before the model loads."""
from __future__ import annotations

import json
import os
import socket

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


# -- --trace-dir -----------------------------------------------------------------------------------------------
def test_trace_dir_that_is_a_file(tmp_path, no_model, capsys):
    path = write_prompts(tmp_path / "p.jsonl", [{"id": "a", "prompt": "hi"}])
    for trace_dir in (tmp_path / "p.jsonl", tmp_path / "p.jsonl" / "traces"):
        refused(capsys, ["generate", "--method", "greedy", "--prompts", path, "--trace-dir", trace_dir],
                "is a file, not a folder")


def test_trace_dir_not_writable(tmp_path, no_model, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    where = "/proc" if os.geteuid() == 0 else locked  # root writes anywhere but in /proc
    refused(capsys, ["generate", "--method", "greedy", "--prompt", "hi", "--trace-dir", f"{where}/traces"],
            "is not writable")


@pytest.mark.parametrize("ids", [["a", "b", "a"], [3, "3"]])
def test_duplicate_ids_are_refused_before_any_work(ids, tmp_path, no_model, capsys):
    path = write_prompts(tmp_path / "p.jsonl", [{"id": i, "prompt": "hi"} for i in ids])
    refused(capsys, ["generate", "--method", "greedy", "--prompts", path, "--trace-dir", tmp_path / "t"],
            "also on line")
    assert not (tmp_path / "t").exists()


def test_trace_files_stay_in_their_folder(tmp_path, capsys):
    """Ids that look like paths name files inside --trace-dir, one file each, and every prompt runs."""
    outside = tmp_path / "outside"
    ids = ["../../escape", str(outside), "a/b", "a\\b", "..", "", "same slug?", "same slug!", 7]
    path = write_prompts(tmp_path / "p.jsonl", [{"id": i, "prompt": "Say hi."} for i in ids])
    traces = tmp_path / "deep" / "traces"
    code, out, err = run(capsys, "generate", "--method", "greedy", "--prompts", path, "--max-new-tokens", 2,
                         "--json", "--trace-dir", traces)
    assert code == 0, err
    assert [json.loads(line)["id"] for line in out.splitlines()] == ids
    files = sorted(traces.iterdir())
    assert len(files) == len(ids) and all(f.is_file() and f.name.endswith(".greedy.json") for f in files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "p.jsonl"]  # no ../../escape, no outside
    assert cli.trace_file("a/b", "greedy") != cli.trace_file("a-b", "greedy")


# -- serve ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--port", "99999"], "use 1 to 65535"),
    (["--port", "-1"], "use 1 to 65535"),
    (["--max-models", "0"], "--max-models"),
    (["--allow-websocket-origin", "a:b:c"], "--allow-websocket-origin"),
    (["--address", "256.0.0.1"], "cannot listen on 256.0.0.1"),
])
def test_serve_bad_settings(args, message, no_model, capsys):
    refused(capsys, ["serve", "--port", "0", *args], message)


def test_serve_busy_port(no_model, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        refused(capsys, ["serve", "--port", s.getsockname()[1]], "is in use")


def test_serve_port_0_prints_the_port_it_got(monkeypatch, capsys):
    import panel

    served = {}
    monkeypatch.setattr("lab.apps.labs.Labs.get", lambda self, name: None)  # no model needed here
    monkeypatch.setattr(panel, "serve", lambda app, **kwargs: served.update(kwargs))
    code, out, err = run(capsys, "serve", "--port", 0)
    assert code == 0, err
    assert served["port"] > 0 and out == f"decoding-lab arena on http://localhost:{served['port']}\n"
    assert served["address"] == "localhost"
