"""`python -m lab train dllm-trajectories`: batched one-token-per-step decoding is the lab's `llada steps=0`,
token for token, on tiny block dLLMs (shifted or not, prompts of different lengths in one batch)."""
from __future__ import annotations

import gzip
import json

import pytest

from lab.train.dllm_trajectories import decode

from .helpers import dllm_lab, random_prompts


@pytest.mark.parametrize("order", ["confidence", "left-to-right"])
@pytest.mark.parametrize("shift,block", [(True, 4), (False, 3)])
def test_batched_decoding_is_one_token_per_step(shift, block, order):
    tl = dllm_lab(shift=shift, block_size=block)
    prompts = random_prompts(6, seed=3)
    full = decode(tl.model, prompts, 10, block, tl.model.dllm.mask_id, set(), shift, order)
    eos = {full[0][5], full[1][2]}  # tokens the random model writes mid-answer: some answers end early
    batched = decode(tl.model, prompts, 10, block, tl.model.dllm.mask_id, eos, shift, order)
    tl.eos = eos
    remasking = "low_confidence" if order == "confidence" else "left_to_right"
    one_by_one = [tl.generate("llada", p, max_new_tokens=10, steps=0, block_size=block, remasking=remasking).tokens
                  for p in prompts]
    assert batched == one_by_one
    assert any(a and a[-1] in eos and len(a) < 10 for a in batched)  # early ends were exercised


def test_cli_writes_trajectories(tmp_path, monkeypatch, capsys):
    from lab import cli
    from lab.dllm import models as dllm_models

    tl = dllm_lab(block_size=4)
    monkeypatch.setattr(dllm_models, "load", lambda name, device=None, dtype=None: (tl.model, None))
    prompts = random_prompts(5, seed=1)
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prompt": p, "response": [1], "kind": "qa"}) + "\n"
                                              for p in prompts))
    out = tmp_path / "t.jsonl.gz"
    assert cli.main(["train", "dllm-trajectories", "--prompts", str(tmp_path / "p.jsonl"), "--out", str(out),
                     "--length", "8", "--batch", "2", "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in gzip.decompress(out.read_bytes()).decode().splitlines()]
    assert [r["prompt"] for r in rows] == prompts and {r["kind"] for r in rows} == {"qa"}
    eos = tl.model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    assert [r["response"] for r in rows] == decode(tl.model, prompts, 8, 4, 3, eos)
    assert "wrote 5 trajectories" in capsys.readouterr().out


def test_bad_input_is_one_line(tmp_path):
    from lab import cli

    (tmp_path / "p.jsonl").write_text(json.dumps({"response": [1]}) + "\n")
    assert cli.main(["train", "dllm-trajectories", "--prompts", str(tmp_path / "p.jsonl"), "--out",
                     str(tmp_path / "o.jsonl")]) == 2
    assert cli.main(["train", "dllm-trajectories", "--prompts", str(tmp_path / "none.jsonl"), "--out",
                     str(tmp_path / "o.jsonl")]) == 2
