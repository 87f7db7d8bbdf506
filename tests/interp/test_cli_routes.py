"""`python -m lab routes` on the default model: the JSON contract of issue 10, and one line + exit 2 for bad input
(found before any model loads where it can be)."""
from __future__ import annotations

import json

import pytest

from lab import cli, models

PROMPT = "The capital of France is"


def run(capsys, *args):
    code = cli.main(["routes", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_json_contract_on_the_default_model(default_lab, capsys):
    code, out, err = run(capsys, "--model", "default", "--prompt", PROMPT, "--tau", "0.04", "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    assert set(data) == {"tokens", "nodes", "edges"}
    ids = default_lab.encode(PROMPT)
    assert data["tokens"] == [default_lab.token_text(t) for t in ids]
    nodes = {n["id"] for n in data["nodes"]}
    last = len(ids) - 1
    assert f"x30_{last}" in nodes and any(e["dst"] == f"x30_{last}" for e in data["edges"])
    kinds = set()
    for e in data["edges"]:
        assert set(e) == {"src", "dst", "kind", "weight", "layer", "head", "src_token", "dst_token"}
        assert 0 < e["weight"] <= 1 and 0 <= e["layer"] < 30 and e["src"] in nodes and e["dst"] in nodes
        assert (0 <= e["head"] < 9) if e["kind"] == "attention" else e["head"] is None
        assert 0 <= e["src_token"] <= e["dst_token"] <= last
        kinds.add(e["kind"])
    assert kinds == {"attention", "ffn", "residual"}

    code, out, _ = run(capsys, "--prompt", PROMPT, "--position", "2", "--json")
    assert code == 0 and "x30_2" in {n["id"] for n in json.loads(out)["nodes"]}
    assert all(e["dst_token"] <= 2 for e in json.loads(out)["edges"])
    code, out, _ = run(capsys, "--prompt", PROMPT, "--chat", "--json")
    assert code == 0 and len(json.loads(out)["tokens"]) == len(default_lab.encode(PROMPT, chat=True))
    code, out, _ = run(capsys, "--prompt", PROMPT)
    assert code == 0 and "' Paris'" in out and "important heads" in out


@pytest.mark.parametrize("args, message", [
    (["--prompt", "   "], "--prompt is empty"),
    (["--prompt", PROMPT, "--tau", "0"], "tau must be a number in (0, 1)"),
    (["--prompt", PROMPT, "--tau", "1"], "tau must be a number in (0, 1)"),
    (["--prompt", PROMPT, "--tau", "-0.5"], "tau must be a number in (0, 1)"),
    (["--prompt", PROMPT, "--tau", "nan"], "tau must be a number in (0, 1)"),
    (["--prompt", PROMPT, "--tau", "lots"], "invalid float value"),
    (["--prompt", PROMPT, "--model", "./no/such/folder"], "unknown model"),
    (["--prompt", PROMPT, "--model", "nothing.gguf"], "unknown model"),
    (["--prompt", PROMPT, "--device", "banana"], "unknown device"),
    (["--prompt", PROMPT, "--position", "x"], "invalid int value"),
    (["--tau", "0.04"], "--prompt"),
])
def test_bad_input_is_one_line_and_exit_2_before_loading(monkeypatch, capsys, args, message):
    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("the model was loaded for bad input"))
    code, out, err = run(capsys, *args)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err


@pytest.mark.parametrize("args, message", [
    (["--prompt", PROMPT, "--position", "5"], "--position 5 is outside the prompt's 5 tokens"),
    (["--prompt", PROMPT, "--position", "-6"], "outside"),
    (["--prompt", PROMPT, "--model", "no-such-org/no-such-model"], "unknown model"),
])
def test_bad_input_found_with_the_model(default_lab, capsys, args, message):
    code, out, err = run(capsys, *args)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err
