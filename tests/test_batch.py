"""Batched decoding: a backend of B rows equals one backend per row; every batched method equals greedy row by row at
T = 0 (tiny models, the default model) and samples the target distribution at T > 0; finished rows leave."""
from __future__ import annotations

import json

import pytest
import torch

from lab import registry
from lab.api import Lab
from lab.backends.hf import HFBackend
from lab.batch import batched_method
from lab.errors import LabError
from lab.models import tiny

from .conftest import PROMPTS, hf_greedy, tiny_lab, use_draft
from .two_tokens import (
    PROMPT,
    VOCAB,
    T,
    chi_square_p,
    exact_two_token_distribution,
)

batched_method("sps")  # loads every batched implementation
BATCHED = sorted(registry.BATCHED)
ARCHS = ["llama", "qwen2", "gpt2"]


def test_the_batched_methods():
    assert {"bass", "tetris", "sps", "pld"} <= set(BATCHED)
    assert all(name in registry.METHODS for name in BATCHED)


@pytest.mark.parametrize("arch", ARCHS)
def test_rows_equal_single_backends_row_by_row(arch):
    """Prefill of ragged prompts, trees, ragged keeps, holes and their compaction, dropped rows, sync."""
    model = tiny(arch, vocab_size=50, seed=2)
    prompts = [[3, 8, 1, 4, 9], [2, 7], [5, 5, 5, 1, 2, 3, 4, 6, 7]]
    batch, singles = HFBackend(model, compact_after=3), [HFBackend(model) for _ in prompts]

    def same(got, want):
        assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()

    logits = batch.prefill_rows(prompts)
    for b, p in enumerate(prompts):
        same(logits[b], singles[b].prefill(p))
    rounds = [
        ([[7, 11, 12, 13, 14], [9], [1, 2, 3]], [[-1, 0, 0, 1, 1], None, [-1, 0, 0]], [[0, 2], [0], [0, 1]]),
        ([[4], [5, 6, 7], []], [None, None, None], [[0], [0, 1], None]),
        ([[8, 9, 10], [1, 2], [6, 6]], [[-1, 0, 0], [-1, 0], None], [[0, 2], [0], [0, 1]]),
        ([[3, 4, 5, 6], [7], [8, 9, 10]], [[-1, 0, 1, 0], None, [-1, 0, 0]], [[0, 3], [0], [0, 2]]),
    ]
    for tokens, parents, keeps in rounds:
        out = batch.forward_rows(tokens, parents)
        for b in range(3):
            if tokens[b]:
                same(out[b], singles[b].forward(tokens[b], parents[b]).logits)
                batch.keep(keeps[b], row=b)
                singles[b].keep(keeps[b])
        assert [batch.tokens(b) for b in range(3)] == [s.ids for s in singles]
    assert batch.columns < 9 + 5 + 3 + 3 + 4  # the forwards appended 24 columns: holes were squeezed out
    batch._compact()
    assert batch.columns == max(len(s.ids) for s in singles) and [batch.tokens(b) for b in range(3)] == [s.ids for s in singles]
    batch.select([2, 0])  # row 1 finished
    singles = [singles[2], singles[0]]
    out = batch.forward_rows([[1], [2, 3]])
    for b, toks in enumerate([[1], [2, 3]]):
        same(out[b], singles[b].forward(toks).logits)
    contexts = [singles[0].ids[:-2] + [9], singles[1].ids + [4]]
    synced = batch.sync_rows(contexts)
    for b in range(2):
        same(synced[b], singles[b].sync(contexts[b]))
    assert [batch.tokens(b) for b in range(2)] == contexts


def ragged_prompts(seed: int) -> list[list[int]]:
    return [[(seed * 7 + r * 5 + i * 3) % 50 + 1 for i in range(3 + 4 * r)] * 2 for r in range(4)]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", BATCHED)
def test_batch_equals_greedy_on_tiny_architectures(name, arch):
    tl = tiny_lab(arch, vocab_size=96, seed=1)
    use_draft(tl, tl.target.view([0]))
    for seed in range(2):
        prompts = ragged_prompts(seed)
        results = tl.generate_batch(name, prompts, max_new_tokens=24)
        assert [r.tokens for r in results] == [hf_greedy(tl.model, p, 24) for p in prompts], (arch, seed)


@pytest.mark.parametrize("name", ["sps", "pld"])
def test_batched_sps_and_pld_propose_what_they_propose_alone(name):
    """At T = 0 a row of the batch drafts, accepts and commits exactly as the single-prompt method does."""
    tl = tiny_lab("llama", vocab_size=96, seed=1)
    use_draft(tl, tl.target.view([0]))
    prompts = ragged_prompts(1)
    together = tl.generate_batch(name, prompts, max_new_tokens=24)
    for prompt, result in zip(prompts, together):
        alone = tl.generate(name, prompt, max_new_tokens=24).trace
        assert [(s.proposed, s.accepted, s.committed) for s in result.trace.steps] == \
            [(s.proposed, s.accepted, s.committed) for s in alone.steps]


@pytest.mark.parametrize("name", BATCHED)
def test_finished_rows_leave_the_batch(name):
    """With an EOS that some rows meet early, each row stops there and the others go on in a smaller batch."""
    model = tiny("llama", vocab_size=96, seed=1)
    prompts = ragged_prompts(3)
    plain = [hf_greedy(model, p, 20) for p in prompts]
    model.generation_config.eos_token_id = model.generation_config.pad_token_id = plain[1][4]
    tl = Lab(model_obj=model)
    use_draft(tl, tl.target.view([0]))
    results = tl.generate_batch(name, prompts, max_new_tokens=20)
    want = [hf_greedy(model, p, 20) for p in prompts]
    want = [w[:w.index(plain[1][4]) + 1] if plain[1][4] in w else w for w in want]
    assert [r.tokens for r in results] == want
    assert len(want[1]) <= 5 and max(len(w) for w in want) == 20
    longest = max(range(4), key=lambda i: len(want[i]))
    assert results[1].trace.stop == "eos" and results[longest].trace.stop == "length"
    assert results[longest].trace.steps[-1].info["batch"] < 4  # it finished in a smaller batch


@pytest.fixture(scope="module")
def default_three(default_lab):
    chosen = [p for p in PROMPTS if p["id"] in ("chat-haiku", "copy-list", "code-fib")]
    ids = [default_lab.encode(p["prompt"], p["chat"]) for p in chosen]
    return ids, [hf_greedy(default_lab.model, i, 24) for i in ids]


@pytest.mark.parametrize("name", BATCHED)
def test_batch_equals_greedy_on_the_default_model(default_lab, default_three, name):
    ids, want = default_three
    assert len({len(i) for i in ids}) == 3
    results = default_lab.generate_batch(name, ids, max_new_tokens=24)
    assert [r.tokens for r in results] == want
    assert all(r.trace.new_tokens == len(r.tokens) and r.trace.forwards >= 1 for r in results)


@pytest.mark.parametrize("name", BATCHED)
def test_batched_sampling_keeps_the_distribution(name):
    """A batch of two identical prompts at T > 0: both rows' two-token outcomes follow the target exactly."""
    tl = Lab(model_obj=tiny("llama", vocab_size=VOCAB, layers=2, hidden=32, seed=3, init_std=0.15))
    use_draft(tl, HFBackend(tiny("llama", vocab_size=VOCAB, layers=1, hidden=32, seed=4, init_std=0.15)))
    rng = torch.Generator().manual_seed(99)
    counts = torch.zeros(VOCAB * VOCAB)
    for _ in range(1500):
        for result in tl.generate_batch(name, [PROMPT, PROMPT], max_new_tokens=2, temperature=T, rng=rng):
            counts[result.tokens[0] * VOCAB + result.tokens[1]] += 1
    p = chi_square_p(counts, exact_two_token_distribution(tl.model, PROMPT, T))
    assert p > 1e-3, f"{name}: p = {p:.2e}"


def test_batch_errors_are_clear():
    tl = tiny_lab("llama", vocab_size=32)
    with pytest.raises(LabError, match="no batched implementation"):
        tl.generate_batch("greedy", [[1, 2, 3]])
    with pytest.raises(LabError, match="list of prompts"):
        tl.generate_batch("pld", [])
    with pytest.raises(LabError, match="no option"):
        tl.generate_batch("pld", [[1, 2]], beams=3)


def test_cli_batch_size_keeps_one_line_per_prompt_in_order(default_lab, tmp_path):
    from .test_cli import cli

    rows = [{"id": "x", "prompt": "List three colours of the rainbow.", "chat": True},
            {"id": "y", "prompt": "def add(a, b):\n", "chat": False},
            {"id": "z", "prompt": "Count: one, two, three,", "chat": False}]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = cli("generate", "--method", "pld", "--prompts", str(path), "--max-new-tokens", "8", "--json",
              "--batch-size", "2").stdout
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["id"] for line in lines] == ["x", "y", "z"]
    for row, line in zip(rows, lines):
        assert line["tokens"] == hf_greedy(default_lab.model, default_lab.encode(row["prompt"], row["chat"]), 8)
        assert set(line) == {"id", "method", "tokens", "text", "new_tokens", "forwards", "tokens_per_forward",
                             "wall_s"}
    assert "no batched implementation" in cli("generate", "--method", "greedy", "--prompt", "hi",
                                              "--batch-size", "2", check=False).stderr
