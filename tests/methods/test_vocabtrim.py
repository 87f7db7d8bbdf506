"""vocabtrim drafts only from a trimmed vocabulary (q = 0 outside it) and stays exact."""
from __future__ import annotations

import torch

from lab.api import Lab
from lab.models import tiny
from lab.speculative.drafters.vocabtrim import TrimmedHead, expected_counts
from lab.speculative.self_draft import draft_chain

from ..conftest import hf_greedy, tiny_lab
from ..two_tokens import PROMPT as PROMPT8
from ..two_tokens import T, chi_square_p, empirical, exact_two_token_distribution
from .test_layer_skip import started

PROMPT = [(i * 7) % 40 + 1 for i in range(16)]


def test_subset_is_the_most_expected_tokens_plus_the_prompt():
    tl = tiny_lab("llama", vocab_size=96, layers=2, seed=1)
    dec, _ = started(tl, PROMPT)
    vocab = TrimmedHead(dec, keep=5, exit_fraction=0.5, length=3).vocab.tolist()
    with torch.no_grad():
        counts = tl.model(torch.tensor([PROMPT])).logits[0].softmax(-1).sum(0)
    assert set(vocab) == set(torch.topk(counts, 5).indices.tolist()) | set(PROMPT)
    assert torch.allclose(expected_counts(tl.target, [PROMPT]), counts, atol=1e-4)


def test_never_drafts_a_token_outside_its_vocabulary():
    tl = tiny_lab("llama", vocab_size=96, layers=2, seed=1)
    dec, _ = started(tl, PROMPT, temperature=1.5)
    vocab = set(TrimmedHead(dec, keep=5, exit_fraction=0.5, length=3).vocab.tolist())
    assert len(vocab) < 96
    proposed, committed = set(), set()
    rng = torch.Generator().manual_seed(0)
    for _ in range(10):
        trace = tl.generate("vocabtrim", PROMPT, max_new_tokens=12, keep=5, temperature=1.5, rng=rng).trace
        proposed |= {t for s in trace.steps for t in s.proposed}
        committed |= set(trace.tokens)
    assert proposed and proposed <= vocab
    assert committed - vocab  # the target still says what it wants: the trim only limits the drafts


def test_draft_distribution_is_zero_outside_the_vocabulary():
    tl = tiny_lab("llama", vocab_size=96, layers=2, seed=1)
    dec, root = started(tl, PROMPT, temperature=0.8)
    vocab = torch.tensor([3, 17, 40, 41, 90])
    logits = torch.tensor([0.5, 2.0, -1.0, 0.0, 1.0])
    tree = draft_chain(dec, lambda token: logits, root, 6, vocab)
    for token, q in zip(tree.tokens, tree.q):
        assert token in vocab.tolist() and abs(float(q.sum()) - 1) < 1e-6
        assert torch.allclose(q[vocab], dec.probs(logits)) and float(q.sum() - q[vocab].sum()) == 0.0


def test_two_token_distribution_is_exact_with_a_trimmed_head():
    """On an 8-token vocabulary with a 4-token draft head, sampling still follows the target exactly."""
    model = tiny("llama", vocab_size=8, layers=2, hidden=32, seed=3, init_std=0.15)
    lab_ = Lab(model_obj=model)
    dec, _ = started(lab_, PROMPT8, temperature=T)
    assert len(TrimmedHead(dec, keep=1, exit_fraction=0.5, length=2).vocab) < 8
    counts = empirical(lab_, "vocabtrim", runs=2000, keep=1)
    assert chi_square_p(counts, exact_two_token_distribution(model, PROMPT8, T)) > 1e-3


def test_greedy_output_is_unchanged():
    tl = tiny_lab("gpt2", vocab_size=96, layers=2, seed=2)
    assert tl.generate("vocabtrim", PROMPT, max_new_tokens=16, keep=4).tokens == hf_greedy(tl.model, PROMPT, 16)
