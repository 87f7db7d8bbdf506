"""The CLI contract: methods --json, generate --json lines, one random stream per call, clean errors."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from .conftest import hf_greedy


def cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_methods_json():
    rows = json.loads(cli("methods", "--json").stdout)
    names = {r["name"] for r in rows}
    assert {"greedy", "sample", "beam", "sps", "pld"} <= names
    for r in rows:
        assert isinstance(r["name"], str) and isinstance(r["family"], str) and isinstance(r["paper"], str)
        assert isinstance(r["lossless"], bool) and isinstance(r["training_free"], bool)
        assert isinstance(r["departures"], str) and r["departures"].strip(), r["name"]


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "prompts.jsonl"
    rows = [{"id": "a", "prompt": "List three colours of the rainbow.", "chat": True},
            {"id": "b", "prompt": "def add(a, b):\n", "chat": False}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path, rows


@pytest.mark.parametrize("method", ["greedy", "pld"])
def test_generate_json_lines_match_transformers(default_lab, prompt_file, method):
    path, rows = prompt_file
    out = cli("generate", "--method", method, "--model", "default", "--prompts", str(path),
              "--max-new-tokens", "24", "--temperature", "0", "--seed", "0", "--json").stdout
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["id"] for line in lines] == ["a", "b"]
    for row, line in zip(rows, lines):
        ids = default_lab.encode(row["prompt"], row["chat"])
        assert line["tokens"] == hf_greedy(default_lab.model, ids, 24)
        assert line["method"] == method and line["new_tokens"] == len(line["tokens"])
        assert line["text"] == default_lab.tokenizer.decode(line["tokens"], skip_special_tokens=True)
        assert line["forwards"] >= 1 and line["wall_s"] > 0
        assert line["tokens_per_forward"] == pytest.approx(line["new_tokens"] / line["forwards"], abs=1e-3)
    assert set(lines[0]) >= {"id", "method", "tokens", "text", "new_tokens", "forwards", "tokens_per_forward", "wall_s"}


def test_one_seed_one_stream(default_lab, prompt_file):
    """With --seed, the prompts of one call are sampled one after another from one random stream."""
    path, rows = prompt_file
    args = ("generate", "--method", "sample", "--prompts", str(path), "--max-new-tokens", "12",
            "--temperature", "1.0", "--seed", "7", "--json")
    first = [json.loads(x)["tokens"] for x in cli(*args).stdout.splitlines()]
    again = [json.loads(x)["tokens"] for x in cli(*args).stdout.splitlines()]
    assert first == again
    rng = torch.Generator().manual_seed(7)
    api = [default_lab.generate("sample", r["prompt"], chat=r["chat"], max_new_tokens=12, temperature=1.0,
                                rng=rng).tokens for r in rows]
    assert api == first


def test_options_and_file_values(tmp_path):
    value = tmp_path / "n.txt"
    value.write_text("2")
    out = cli("generate", "--method", "pld", "--prompt", "a b c a b c a b", "--max-new-tokens", "6",
              "--opt", f"max_ngram=@{value}", "--opt", "length=3", "--json").stdout
    assert json.loads(out)["new_tokens"] == 6


@pytest.mark.parametrize("args, message", [
    (["--method", "nope", "--prompt", "hi"], "unknown method"),
    (["--method", "greedy", "--prompt", " "], "empty"),
    (["--method", "greedy", "--prompt", "hi", "--max-new-tokens", "0"], "max-new-tokens"),
    (["--method", "greedy", "--prompt", "hi", "--temperature", "-0.5"], "temperature"),
    (["--method", "greedy", "--prompt", "hi", "--model", "./no/such/model"], "unknown model"),
    (["--method", "sps", "--prompt", "hi", "--opt", "nonsense=1"], "no option"),
    (["--method", "sps", "--prompt", "hi", "--opt", "length=many"], "must be an integer"),
    (["--method", "greedy"], "exactly one of"),
])
def test_bad_input_is_one_line_exit_2(args, message):
    proc = cli("generate", *args, check=False)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_draft_with_another_tokenizer_is_refused(tmp_path):
    """A draft whose vocabulary differs from the target's cannot verify: a one-line error."""
    from transformers import AutoTokenizer

    from lab.models import tiny

    tiny("llama", vocab_size=300).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(str(__import__("lab").models.default_path())).save_pretrained(tmp_path)
    tok = tmp_path / "tokenizer.json"
    data = json.loads(tok.read_text())
    data["model"]["vocab"] = {k: v for k, v in list(data["model"]["vocab"].items())[:300]}
    data["model"]["merges"] = []
    data["added_tokens"] = [t for t in data["added_tokens"] if t["id"] < 300]
    tok.write_text(json.dumps(data))
    proc = cli("generate", "--method", "sps", "--prompt", "hi", "--opt", f"draft={tmp_path}", check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "another tokenizer" in proc.stderr
