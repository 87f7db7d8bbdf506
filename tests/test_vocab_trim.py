"""A trimmed draft head (lab/vocab_trim.py, VocabTrim): logits only for its tokens, -inf elsewhere, on both backends
and through the fast backend's device rounds, whose argmax over the kept rows maps back to token ids; speculation
with such a draft stays exact and never drafts a token outside the head."""
from __future__ import annotations

import json

import pytest
import torch

import lab
from lab import drafts
from lab.backends import backend_for
from lab.models import tiny
from lab.train.fastdraft import export
from lab.vocab_trim import TrimmedLMHead, coverage, frequent_tokens

from .conftest import hf_greedy


def test_frequent_tokens_and_coverage():
    seqs = [[5, 5, 7, 9], [7, 5, 2], [9, 9, 9]]
    assert frequent_tokens(seqs, 2).tolist() == [5, 9]  # 5 and 9 three times and four, 7 twice
    assert frequent_tokens(seqs, 3).tolist() == [5, 7, 9]
    assert frequent_tokens(seqs, 1, always=[0]).tolist() == [0, 9]
    assert coverage(seqs, torch.tensor([5, 9])) == 7 / 10
    with pytest.raises(ValueError):
        frequent_tokens(seqs, 0)


def test_the_head_keeps_its_rows_and_masks_the_rest():
    weight = torch.randn(12, 4)
    head = TrimmedLMHead(weight, torch.tensor([1, 4, 7]))
    h = torch.randn(2, 3, 4)
    out = head(h)
    assert out.shape == (2, 3, 12)
    assert torch.equal(out[..., [1, 4, 7]], h @ weight[[1, 4, 7]].T)
    assert torch.isinf(out[..., [0, 2, 3, 5, 6, 8, 9, 10, 11]]).all()
    for bad in ([4, 1], [1, 1], [12], []):
        with pytest.raises(ValueError):
            TrimmedLMHead(weight, torch.tensor(bad, dtype=torch.long))


def rounds_of(trace):
    return [(s.proposed, s.accepted, s.bonus, s.committed) for s in trace.steps if s.proposed]


def test_a_trimmed_draft_is_exact_and_drafts_only_its_tokens():
    """sps with a trimmed draft on the fast backend (device rounds; the argmax over the kept rows mapped to token
    ids) and on the HF backend (the host loop over -inf-masked logits): greedy's tokens, the same rounds, no draft
    outside the head, and the trimming bites (a token the whole head would have drafted is missing)."""
    model = tiny("llama", vocab_size=96, layers=4, seed=5)
    prompt = [(i * 7) % 60 + 1 for i in range(14)] + [3, 4, 5, 3, 4, 5]
    want = hf_greedy(model, prompt, 40)
    vocab = torch.tensor(sorted(set(want[::2]) | set(range(0, 96, 3))))
    traces = {}
    for backend in ("fast", "hf"):
        lab_ = lab.Lab(model_obj=model, backend=backend)
        draft = drafts.draft_model(model, [0, 1, 2])
        whole = lab_.generate("sps", prompt, max_new_tokens=40, draft="layers:3", length=3, adaptive=False).trace
        draft.lm_head = TrimmedLMHead(model.lm_head.weight, vocab)
        lab_._drafts["trimmed"] = backend_for(draft, lab_.backend)
        traces[backend] = lab_.generate("sps", prompt, max_new_tokens=40, draft="trimmed", length=3,
                                        adaptive=False).trace
        assert traces[backend].tokens == want == whole.tokens
        proposed = [t for s in traces[backend].steps for t in s.proposed]
        assert set(proposed) <= set(vocab.tolist())
        assert not set(t for s in whole.steps for t in s.proposed) <= set(vocab.tolist())
    fast, host = traces["fast"], traces["hf"]
    assert any(s.info.get("device_rounds") == 4 for s in fast.steps)
    assert rounds_of(fast) == rounds_of(host)
    accepted = [len(s.accepted) for s in fast.steps if s.proposed]
    assert 0 in accepted and max(accepted) >= 2


def test_the_fast_backend_gives_a_trimmed_draft_the_masked_logits():
    """The fast backend's greedy chain of a trimmed draft (on the CPU: decode steps whose logits `head_logits`
    scatters over the vocabulary) is the HF model's argmax chain. A GPU runs it as a Burst, an argmax over the kept
    rows mapped to token ids: scripts/check_rounds_gpu.py compares that one with the HF backend's."""
    model = tiny("qwen2", vocab_size=96, layers=2, seed=5)
    draft = drafts.draft_model(model, [0])
    draft.lm_head = TrimmedLMHead(model.lm_head.weight, torch.arange(1, 96, 2))
    runner = backend_for(draft, "fast")
    prompt = [5, 9, 13, 17, 21, 25]
    runner.hold(prompt[:-1])
    tokens, beliefs = runner.greedy_chain(prompt[-1], 6)
    ref, seq = [], list(prompt)
    with torch.no_grad():
        for _ in range(6):
            logits = draft(input_ids=torch.tensor([seq])).logits[0, -1]
            ref.append(int(logits.argmax()))
            seq.append(ref[-1])
    assert tokens == ref and all(t % 2 == 1 for t in tokens)
    assert all(0 < b <= 1 for b in beliefs)


def test_an_export_with_a_vocab_loads_trimmed_unless_asked_whole(tmp_path):
    target = tiny("llama", vocab_size=48, layers=4, hidden=32, seed=5)
    draft = drafts.draft_model(target, [0, 3])
    config = target.config
    about = {"name": "fastdraft", "init_layers": [0, 3],
             "base": {"name": "tiny", "architecture": type(target).__name__, "vocab_size": config.vocab_size,
                      "hidden_size": config.hidden_size, "num_layers": config.num_hidden_layers}}
    export(draft, tmp_path, about)
    assert not isinstance(drafts.load_fastdraft(target, tmp_path).lm_head, TrimmedLMHead)
    (tmp_path / "vocab.json").write_text(json.dumps({"tokens": [2, 3, 5, 7]}))
    saved = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**saved, "vocab": {"file": "vocab.json"}}))
    trimmed = drafts.load_fastdraft(target, tmp_path)
    assert trimmed.lm_head.vocab.tolist() == [2, 3, 5, 7]
    assert drafts.load_fastdraft(target, tmp_path, trim=False).lm_head is target.lm_head
    ids = torch.tensor([[1, 4, 9]])
    with torch.no_grad():
        out = trimmed(input_ids=ids).logits[0, -1]
    assert torch.isinf(out[[0, 1, 4, 6]]).all() and torch.isfinite(out[[2, 3, 5, 7]]).all()


def test_sampling_with_a_trimmed_draft_is_the_target_distribution():
    """At T > 0 (and under top-k / top-p on every other run) sps with a draft whose head keeps 5 of 8 tokens samples
    exactly from the target (tests/distribution.py's check), with rejections, residual draws and the target's
    tokens outside the head, which only a residual or a bonus can give."""
    from lab.backends.hf import HFBackend

    from .conftest import use_draft
    from .distribution import check, target_and_draft

    target, draft = target_and_draft()
    kept = [0, 1, 2, 4, 6]
    draft.lm_head = TrimmedLMHead(draft.lm_head.weight, torch.tensor(kept))
    lab_ = lab.Lab(model_obj=target)
    use_draft(lab_, HFBackend(draft))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report = check(lab_, "sps", 64, 32, {"length": 3, "adaptive": False})
    finally:
        torch.set_num_threads(before)
    assert all(p > 1e-5 for p in report.p.values()), report.p
    assert not report.impossible
    assert min(report.deep, report.multi, report.rejected, report.bonus) >= 5
    outside = int(report.observed[:, [3, 5, 7]].sum())
    assert outside >= 50, outside  # the target's own tokens outside the head were committed


def test_the_recipe_counts_the_answers_and_measures_both_heads(tmp_path, capsys):
    """`python -m lab train draft-vocab` on a tiny export: the kept tokens are the most frequent ones of the corpus
    (plus EOS), written beside the draft and named in its manifest with both heads' acceptance on the answers."""
    from lab.train import draft_vocab

    target = tiny("llama", vocab_size=48, layers=4, hidden=32, seed=5)
    target.generation_config.eos_token_id = 2
    target.save_pretrained(tmp_path / "model")
    config = target.config
    about = {"name": "fastdraft", "init_layers": [0, 3],
             "base": {"name": "tiny", "architecture": type(target).__name__, "vocab_size": config.vocab_size,
                      "hidden_size": config.hidden_size, "num_layers": config.num_hidden_layers}}
    export(drafts.draft_model(target, [0, 3]), tmp_path / "draft", about)
    rows = [{"id": str(i), "question": "", "text": "", "prompt": [1, 5, 9], "response": [7, 7, 7, 11, 13, i % 3 + 20]}
            for i in range(6)]
    corpus = tmp_path / "answers.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["--draft", str(tmp_path / "draft"), "--corpus", str(corpus), "--keep", "3", "--compare", "5",
            "--val", str(corpus), "--model", str(tmp_path / "model"), "--device", "cpu"]
    draft_vocab.main(argv)
    assert json.loads((tmp_path / "draft" / "vocab.json").read_text())["tokens"] == [2, 7, 11, 13]
    record = json.loads((tmp_path / "draft" / "manifest.json").read_text())["vocab"]
    assert record["tokens"] == 4 and record["corpus_coverage"] == round(30 / 36, 4)
    assert {"greedy_acceptance", "t1_acceptance"} <= set(record["full_head"]) and record["other_sizes"][0]["keep"] == 5
    assert drafts.load_fastdraft(target, tmp_path / "draft").lm_head.vocab.tolist() == [2, 7, 11, 13]
    with pytest.raises(lab.errors.LabError, match="compare"):
        draft_vocab.main(argv[:6] + ["--compare", "x"] + argv[8:])
