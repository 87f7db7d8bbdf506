"""Hundreds of generated bad --prompts files and --opt values through the CLI in one process: each ends with exit 2,
exactly one line on stderr, nothing on stdout, nothing in the trace folder, and no model loaded."""
from __future__ import annotations

import json
import random
import string

from lab import cli, models

GOOD_ROWS = [{"id": "../a", "prompt": "Hi.", "chat": True}, {"id": 3, "prompt": "def f():\n"}, {"prompt": "x y z"}]
BAD_ROWS = [  # each is wrong on its own, whatever surrounds it
    '{"prompt": 1}', '{"prompt": null}', '{"id": "x"}', '{}', '[]', '[{"prompt": "hi"}]', '"hi"', '7', 'null', 'true',
    '{"prompt": ""}', '{"prompt": " \\n\\t"}', '{"prompt": "hi", "chat": "false"}', '{"prompt": "hi", "chat": 1}',
    '{"prompt": "hi", "chat": null}', '{"prompt": "hi", "id": [1]}', '{"prompt": "hi", "id": null}',
    '{"prompt": "hi", "id": 1.5}', '{"prompt": "hi", "id": true}', '{"prompt": "hi", "id": {"a": 1}}',
    '{"prompt": "\\ud800"}', '{"prompt": "hi"', "{'prompt': 'hi'}", '{"prompt": "hi",}', '{"prompt": NaN',
    '{"prompt": "a\u0001b"}', '[' * 100_000, '{"prompt": "hi"} {"prompt": "ho"}', 'prompt: hi',
]
NOT_UTF8 = [b"\xff", b"\x80", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]


def bad_prompt_file(rng: random.Random) -> bytes:
    """Good rows with unique ids around one fault: a bad row, a duplicate id, bytes that are not UTF-8, no rows."""
    rows = [json.dumps(dict(r, id=f"g{i}")) for i, r in enumerate(rng.sample(GOOD_ROWS, rng.randint(0, 3)))]
    fault = rng.choice(["row", "row", "duplicate", "bytes", "empty", "garbage"])
    if fault == "row":
        rows.insert(rng.randint(0, len(rows)), rng.choice(BAD_ROWS))
    elif fault == "duplicate":
        twin = rng.choice(["a", "../a", "/tmp/a", 3])
        rows += [json.dumps({"id": twin, "prompt": "one"}), json.dumps({"id": str(twin), "prompt": "two"})]
        rng.shuffle(rows)
    elif fault == "garbage":  # no double quote: it can never spell a prompt
        rows.insert(rng.randint(0, len(rows)), "".join(rng.choices(string.printable.replace('"', ""), k=30)))
    elif fault == "empty":
        rows = [rng.choice(["", " ", "\t", "\r"]) for _ in range(rng.randint(0, 3))]
    text = rng.choice(["\n", "\r\n"]).join(rows).encode()
    if fault == "bytes":
        at = rng.randint(0, len(text))
        text = text[:at] + rng.choice(NOT_UTF8) + text[at:]
    return rng.choice([b"", b"\xef\xbb\xbf"]) + text


def bad_opt(rng: random.Random, tmp_path) -> str:
    """One bad --opt for pld (its options: max_ngram, min_ngram, length, all ints)."""
    key = rng.choice(["max_ngram", "min_ngram", "length"])
    return rng.choice([
        rng.choice(["length", "length:3", "", "@x", "3"]),  # no '='
        f"{rng.choice(['lenght', 'max-ngram', 'LENGTH', '', 'draft', 'a=b', '../x'])}=3",  # no such option
        f"{key}={rng.choice(['', 'many', '1.5', '1e3', '0x10', 'inf', 'nan', '1 2', '½', '--1', 'None'])}",
        f"{key}=@{tmp_path / 'missing.txt'}", f"{key}=@{tmp_path}", f"{key}=@", f"{key}=@{tmp_path / 'latin1.txt'}",
    ])


def test_bad_prompt_files_and_opts(tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "load", refuse)
    rng = random.Random(12)
    (tmp_path / "latin1.txt").write_bytes("3 é".encode("latin-1"))
    traces = tmp_path / "traces"
    cases = []
    for n in range(200):
        path = tmp_path / f"prompts{n}.jsonl"
        path.write_bytes(bad_prompt_file(rng))
        cases.append(["--method", "greedy", "--prompts", str(path)])
    for n in range(200):
        good = rng.sample(["--opt=max_ngram=2", "--opt=length=4", "--opt=min_ngram=1"], rng.randint(0, 2))
        cases.append(["--method", "pld", "--prompt", "a b a b", *good, f"--opt={bad_opt(rng, tmp_path)}"])
    for args in cases:
        code = cli.main(["generate", *args, "--trace-dir", str(traces)])
        out, err = capsys.readouterr()
        assert (code, out) == (2, "") and err.startswith("error: ") and err.count("\n") == 1, (args, code, out, err)
        assert not traces.exists(), args
