"""The learned commitment policies (learn2pd, tracelock) on a tiny block-diffusion LM: the stability labels on a
hand-built trajectory and on a real one, a filter that accepts nothing is one-token-per-step decoding exactly, the
trainer runs end to end and its filter commits several tokens per forward, EoTP stops at the end of text, and
without a filter the policies say how to train one."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import lab
from lab import cli
from lab.dllm import filters
from lab.dllm import models as dllm_models
from lab.dllm.filters import Filter, stability_labels
from lab.errors import LabError
from lab.models import tiny
from lab.train import commitment
from lab.train.learn2pd import RECIPE as LEARN2PD
from lab.train.tracelock import RECIPE as TRACELOCK

from .helpers import dllm_lab, random_prompts

RECIPES = {"learn2pd": LEARN2PD, "tracelock": TRACELOCK}


def test_stability_labels_on_a_hand_built_trajectory():
    # position 1 flips 7 -> 8 -> 7 (committed 7 at step 2); position 4 predicts 1, then 2 (its final token);
    # position 9 lies past the end of the text (no final token)
    trajectory = [{0: 5, 1: 7, 2: 9, 4: 1, 9: 3}, {1: 8, 2: 9, 4: 2, 9: 3}, {1: 7, 4: 2}]
    final = {0: 5, 1: 7, 2: 9, 4: 2}
    assert stability_labels(trajectory, final, "final") == [
        {0: True, 1: True, 2: True, 4: False}, {1: False, 2: True, 4: True}, {1: True, 4: True}]
    assert stability_labels(trajectory, final, "persistent") == [  # 7 at step 0 changes later: not stable
        {0: True, 1: False, 2: True, 4: False}, {1: False, 2: True, 4: True}, {1: True, 4: True}]
    with pytest.raises(LabError, match="final or persistent"):
        stability_labels(trajectory, final, "sometimes")


@pytest.mark.parametrize("policy", ["learn2pd", "tracelock"])
def test_the_trainers_reference_is_llada_and_its_labels_follow_the_trace(policy):
    tl = dllm_lab("block", block_size=4)
    for prompt in random_prompts(3, seed=11):
        ref = tl.generate("llada", prompt, max_new_tokens=16, steps=0).trace
        records, final, trace, size = commitment.reference(tl, prompt, 16, 0, RECIPES[policy])
        assert final == ref.tokens and [s.positions for s in trace.steps] == [s.positions for s in ref.steps]
        x, index, y = commitment.labelled(records, final, "final", RECIPES[policy].outputs(size))
        want = [float(t == final[p]) for s in ref.steps for p, t in zip(s.info["masked"], s.info["predicted"])]
        assert y.tolist() == want and len(index) == len(want) and x.shape[0] == (
            len(ref.steps) if policy == "learn2pd" else len(want))


def refusing(policy: str, folder, block_size: int = 4) -> str:
    """A filter file that accepts nothing (every score sigmoid(-30))."""
    features, outputs = (block_size, block_size) if policy == "learn2pd" else (7, 1)
    Filter([(torch.zeros(outputs, features), torch.full((outputs,), -30.0))], torch.zeros(features),
           torch.ones(features), {"policy": policy, "block_size": block_size}).save(folder / f"{policy}.json")
    return str(folder)


@pytest.mark.parametrize("policy", ["learn2pd", "tracelock"])
@pytest.mark.parametrize("attention,cache", [("block", "auto"), ("global", "none")])
def test_a_filter_that_accepts_nothing_is_one_token_per_step_decoding(policy, attention, cache, tmp_path):
    tl = dllm_lab(attention, block_size=4)
    path = refusing(policy, tmp_path, block_size=4)
    for prompt in random_prompts(6, seed=12):
        ref = tl.generate("llada", prompt, max_new_tokens=12, steps=0, block_size=4, cache=cache).trace
        got = tl.generate(policy, prompt, max_new_tokens=12, filter=path, block_size=4, cache=cache).trace
        assert got.tokens == ref.tokens and got.forwards == ref.forwards == 12
        assert [s.positions for s in got.steps] == [s.positions for s in ref.steps]


@pytest.fixture
def tiny_dllm_folder(tmp_path):
    """A folder the lab loads as a block-diffusion LM (`--model DIR`): a tiny random base and an empty delta."""
    folder = tmp_path / "dllm"
    tiny("llama", vocab_size=64).save_pretrained(folder / "base")
    save_file({}, str(folder / dllm_models.ADAPTER))
    (folder / dllm_models.MANIFEST).write_text(json.dumps({
        "kind": dllm_models.KIND, "base": "base", "lora": {"rank": 1, "alpha": 1.0},
        "dllm": {"mask_id": 3, "shift": True, "attention": "block", "block_size": 4}}))
    with open(tmp_path / "prompts.jsonl", "w") as f:
        for prompt in random_prompts(12, seed=13):
            f.write(json.dumps({"prompt": prompt}) + "\n")
    return tmp_path


@pytest.mark.parametrize("policy", ["learn2pd", "tracelock"])
def test_the_trainer_writes_a_small_filter_that_commits_several_tokens_per_forward(policy, tiny_dllm_folder):
    torch.set_num_threads(1)
    out = tiny_dllm_folder / "out"
    assert cli.main(["train", policy, "--model", str(tiny_dllm_folder / "dllm"), "--out", str(out),
                     "--data", str(tiny_dllm_folder / "prompts.jsonl"), "--prompts", "12", "--val", "3",
                     "--max-new-tokens", "16", "--epochs", "300", "--threshold", "0.5"]) == 0
    weights, manifest = out / f"{policy}.json", json.loads((out / f"{policy}.manifest.json").read_text())
    assert weights.stat().st_size < 16 * 1024 and manifest["files"] == {weights.name: weights.stat().st_size}
    assert manifest["model"] == str(tiny_dllm_folder / "dllm") and manifest["block_size"] == 4
    assert manifest["data"]["train_prompts"] == 9 and manifest["data"]["val_prompts"] == 3
    v = manifest["validation"]
    assert v["prompts"] == 3 and 0.5 <= v["label_accuracy"] <= 1 and v["positions"] > 0
    assert v["tokens_per_forward"] > 1 and v["forwards"] < v["reference_forwards"]  # several per forward

    tl = lab.Lab(str(tiny_dllm_folder / "dllm"))
    tokens = forwards = 0
    for prompt in random_prompts(6, seed=14):
        trace = tl.generate(policy, prompt, max_new_tokens=16, filter=str(out), threshold=0.5).trace
        tokens, forwards = tokens + trace.new_tokens, forwards + trace.forwards
        for step in trace.steps:  # always the surest masked position of the block, plus what the filter accepts
            conf = dict(zip(step.info["masked"], step.info["predicted_confidence"]))
            block = [p for p in conf if p // 4 == step.positions[0] // 4]
            assert max(block, key=lambda p: (conf[p], -p)) in step.positions
    assert tokens / forwards > 1


def test_eotp_fills_the_block_after_the_end_of_text_and_stops(tmp_path):
    tl = dllm_lab("block", block_size=8)
    path = refusing("learn2pd", tmp_path, block_size=8)
    found = None
    for prompt in random_prompts(20, seed=15):  # a token one-token-per-step decoding commits while later ones wait
        ref = tl.generate("llada", prompt, max_new_tokens=16, steps=0).trace
        for n, step in enumerate(ref.steps):
            p, token = step.positions[0], step.committed[0]
            later = [q for q in step.info["masked"] if q > p]
            if later and any(q < p for q in step.info["masked"]) and ref.tokens.count(token) == 1:
                found = prompt, p, token
                break
        if found:
            break
    prompt, p, eos = found
    tl.eos = {eos}  # make that token the end of text
    plain = tl.generate("llada", prompt, max_new_tokens=16, steps=0).trace
    assert tl.generate("learn2pd", prompt, max_new_tokens=16, filter=path, eotp=False).trace.tokens == plain.tokens
    trace = tl.generate("learn2pd", prompt, max_new_tokens=16, filter=path).trace
    assert trace.stop == plain.stop == "eos" and trace.tokens[-1] == eos and len(trace.tokens) == p + 1
    end = next(i for i, s in enumerate(trace.steps) if p in s.positions)
    filled = trace.steps[end].info["filled"]
    assert filled == [q for q in trace.steps[end].info["masked"] if q > p] and filled
    assert all(t == eos for q, t in zip(trace.steps[end].positions, trace.steps[end].committed) if q >= p)
    before = [q for q in trace.steps[end].info["masked"] if q < p]
    assert sorted(q for s in trace.steps[end + 1:] for q in s.positions) == before  # then only what precedes it
    assert trace.forwards == end + 1 + len(before) <= plain.forwards


def test_without_a_filter_the_policies_say_how_to_train_one(tmp_path, monkeypatch):
    tl = dllm_lab("block", block_size=4)
    for policy in ("learn2pd", "tracelock"):
        with pytest.raises(LabError, match=f"python -m lab train {policy} --model tiny-dllm-block --out DIR"):
            tl.generate(policy, [5, 6], max_new_tokens=4)
        with pytest.raises(LabError, match="no filter at"):
            tl.generate(policy, [5, 6], max_new_tokens=4, filter=str(tmp_path / "missing"))
    (tmp_path / "learn2pd.json").write_text(json.dumps({"kind": filters.KIND, "policy": "tracelock"}))
    with pytest.raises(LabError, match="is not a learn2pd filter"):
        tl.generate("learn2pd", [5, 6], max_new_tokens=4, filter=str(tmp_path))
    refusing("learn2pd", tmp_path, block_size=8)
    with pytest.raises(LabError, match="trained on blocks of 8, this run decodes blocks of 4"):
        tl.generate("learn2pd", [5, 6], max_new_tokens=4, filter=str(tmp_path))
    monkeypatch.setattr(filters, "SHIPPED", tmp_path / "nothing-shipped")
    tl.name = "dllm-default"
    with pytest.raises(LabError, match=r"for dllm-default \(none is shipped yet\)"):
        tl.generate("learn2pd", [5, 6], max_new_tokens=4)
    monkeypatch.setattr(filters, "SHIPPED", tmp_path)  # once shipped, dllm-default finds its filter by itself
    assert tl.generate("learn2pd", [5, 6], max_new_tokens=8, block_size=8).trace.forwards == 8


def test_the_learned_policies_are_registered_as_trained_diffusion_methods():
    methods = lab.registry.load_all()
    for name in ("learn2pd", "tracelock"):
        info = methods[name]
        assert info.family == "diffusion" and not info.training_free and not info.lossless
        assert info.paper and info.departures and "filter" in info.options
