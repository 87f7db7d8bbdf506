"""FastDraft: the draft built from target layers, its training (loss, acceptance, resume), export and loading."""
from __future__ import annotations

import json

import pytest
import torch

from lab import drafts
from lab.api import Lab
from lab.errors import LabError
from lab.models import tiny
from lab.train.fastdraft import export, train, validate

VOCAB = 48


@pytest.fixture(scope="module")
def target():
    return tiny("llama", vocab_size=VOCAB, layers=4, hidden=32, seed=5, init_std=0.3)


def answers(model, count: int, seed: int) -> list[dict]:
    """Rows shaped like `python -m lab train responses` output: random prompts, the target's greedy answers."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(count):
        prompt = torch.randint(1, VOCAB, (6,), generator=g)
        out = model.generate(prompt[None], attention_mask=torch.ones(1, 6, dtype=torch.long), max_new_tokens=12,
                             do_sample=False)[0, 6:].tolist()
        rows.append({"id": str(i), "question": "", "prompt": prompt.tolist(), "response": out, "text": ""})
    return rows


def test_a_draft_of_every_layer_is_the_target_and_shares_its_embeddings(target):
    whole = drafts.draft_model(target, [0, 1, 2, 3])
    ids = torch.randint(VOCAB, (2, 9))
    with torch.no_grad():
        assert torch.allclose(whole(input_ids=ids).logits, target(input_ids=ids).logits, atol=1e-5)
    part = drafts.draft_model(target, [0, 3])
    assert part.model.embed_tokens.weight.data_ptr() == target.model.embed_tokens.weight.data_ptr()
    assert part.model.layers[1].self_attn.layer_idx == 1
    assert set(drafts.own_state(part)) == {k for k in part.state_dict() if k.startswith(("model.layers.", "model.norm."))}
    with pytest.raises(LabError, match="indices"):
        drafts.draft_model(target, [4])
    with pytest.raises(LabError, match="Llama-family"):
        drafts.draft_model(tiny("gpt2", vocab_size=VOCAB), [0])


def test_training_raises_acceptance_and_a_job_resumes(target, tmp_path):
    rows, val = answers(target, 48, seed=1), answers(target, 12, seed=2)
    before = validate(target, drafts.draft_model(target, [0]), val, pad=0)
    draft, state = train(target, None, rows, val, tmp_path, [0], steps=150, minutes=5, batch=16, max_len=32, lr=3e-3,
                         progress=False, validate_every=75)
    after = validate(target, draft, val, pad=0)
    assert state["step"] == 150 and [e["step"] for e in state["log"]] == [75, 150]
    assert after["t1_acceptance"] > before["t1_acceptance"] + 0.1, (before, after)
    assert after["greedy_acceptance"] > before["greedy_acceptance"], (before, after)
    # a second job on the same folder starts where the first stopped, with the saved weights
    again, state2 = train(target, None, rows, val, tmp_path, [0], steps=150, minutes=5, batch=16, max_len=32, lr=3e-3,
                          progress=False)
    assert state2["step"] == 150 and validate(target, again, val, pad=0) == after
    more, state3 = train(target, None, rows, val, tmp_path, [0], steps=160, minutes=5, batch=16, max_len=32, lr=3e-3,
                         progress=False)
    assert state3["step"] == 160
    with pytest.raises(LabError, match="layers"):
        train(target, None, rows, val, tmp_path, [1], steps=170, minutes=5, batch=16, max_len=32, lr=3e-3)


def test_exported_files_load_as_the_trained_draft(target, tmp_path):
    rows = answers(target, 16, seed=3)
    draft, _ = train(target, None, rows, [], tmp_path / "ck", [0, 3], steps=5, minutes=5, batch=8, max_len=32,
                     lr=1e-3, progress=False)
    config = target.config
    about = {"name": "fastdraft", "base": {"name": "tiny", "architecture": type(target).__name__, "vocab_size": config.vocab_size,
                      "hidden_size": config.hidden_size, "num_layers": config.num_hidden_layers},
             "init_layers": [0, 3], "steps": 5}
    export(draft, tmp_path / "ship", about)
    saved = json.loads((tmp_path / "ship" / "manifest.json").read_text())
    assert saved["files"] == ["draft-01.safetensors"] and saved["init_layers"] == [0, 3]
    loaded = drafts.load_fastdraft(target, tmp_path / "ship")
    for name, tensor in drafts.own_state(draft).items():  # what was shipped: the trained weights rounded to bf16
        tensor.copy_(tensor.to(torch.bfloat16).float())
    ids = torch.randint(VOCAB, (1, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = draft(input_ids=ids).logits, loaded(input_ids=ids).logits
    assert torch.allclose(want, got, atol=1e-5)
    tl = Lab(model_obj=target)  # an export folder is a draft spec of its own
    assert tl.generate("fastdraft", [1, 2, 3], max_new_tokens=6, draft=str(tmp_path / "ship")).tokens == \
        tl.generate("greedy", [1, 2, 3], max_new_tokens=6).tokens
    # a second schedule starts from the export's weights, and its manifest counts the earlier steps
    again, state = train(target, None, rows, [], tmp_path / "ck2", [0, 3], steps=0, minutes=5, batch=8, max_len=32,
                         lr=1e-3, progress=False, init=tmp_path / "ship")
    assert state["init"]["steps"] == 5 and state["init"]["folder"] == str(tmp_path / "ship")
    for name, tensor in drafts.own_state(again).items():
        assert torch.equal(tensor, drafts.own_state(draft)[name]), name
    with pytest.raises(LabError, match="no FastDraft export from layers"):
        train(target, None, rows, [], tmp_path / "ck3", [0], steps=0, minutes=5, batch=8, max_len=32, lr=1e-3,
              init=tmp_path / "ship")
    other = tiny("llama", vocab_size=VOCAB, layers=3, hidden=32, seed=5)
    with pytest.raises(LabError, match="another shape"):
        drafts.load_fastdraft(other, tmp_path / "ship")
    with pytest.raises(LabError, match="no trained draft"):
        drafts.load_fastdraft(target, tmp_path / "nothing")


def test_the_default_draft_is_fastdraft_on_the_default_model_and_half_the_layers_elsewhere(default_lab, reference):
    from .conftest import IDENTITY_PROMPTS, tiny_lab

    draft = default_lab.draft("default")
    assert draft is default_lab.draft("fastdraft") and draft.num_layers == len(drafts.manifest()["init_layers"])
    # the shipped weights are the trained ones: the draft's argmax agrees with the target's greedy tokens often
    # (about 0.6 on held-out chat; an untrained 4-layer draft, or a wrong load, agrees on almost none)
    agree = total = 0
    for p in IDENTITY_PROMPTS[:6]:
        ids = default_lab.encode(p["prompt"], p["chat"])
        want = reference[p["id"]]
        with torch.no_grad():
            logits = draft.model(input_ids=torch.tensor([ids + want[:-1]])).logits[0, len(ids) - 1:]
        agree += int((logits.argmax(-1) == torch.tensor(want)).sum())
        total += len(want)
    assert agree / total > 0.35, agree / total
    tl = tiny_lab("llama", layers=4)
    assert tl.draft("default").layers == [0, 1]  # a view through the first half


def test_answers_are_greedy_or_sampled_reproducibly(default_lab):
    from lab.train.responses import answer

    asked = [{"id": "a", "question": "Name three colours."}, {"id": "b", "question": "What is the capital of France?"}]
    model, tokenizer = default_lab.model, default_lab.tokenizer
    greedy = answer(model, tokenizer, asked, tokens=6, batch=2, progress=False)
    for row in greedy:  # one prompt at a time, no padding: transformers' own greedy tokens
        ids = torch.tensor([row["prompt"]])
        want = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False)
        assert row["response"] == want[0, ids.shape[1]:].tolist()[:len(row["response"])] and "temperature" not in row
    hot = [answer(model, tokenizer, asked, tokens=6, batch=2, progress=False, temperature=2.0, seed=s)
           for s in (1, 1, 2)]
    assert hot[0] == hot[1] and hot[0] != hot[2] and all(r["temperature"] == 2.0 for r in hot[0])
    assert [r["response"] for r in hot[0]] != [r["response"] for r in greedy]
