"""Speculative Jacobi decoding: guesses are draws that remember their distribution q; verification with
min(1, p/q) and residual resampling keeps the output exact; at temperature 0 it is Jacobi decoding."""
from __future__ import annotations

import torch

from lab.api import Lab
from lab.decoding import Decoding
from lab.models import tiny
from lab.sampling import Sampling
from lab.speculative.drafters.sjd import sampled_guess
from lab.speculative.jacobi_window import JacobiWindow
from lab.speculative.verify import Verdict

from ..conftest import tiny_lab
from ..two_tokens import chi_square_p

VOCAB, T = 8, 0.8
PROMPT = [1, 2, 3, 1, 2, 3, 1, 2]


def sampling_lab() -> Lab:
    """The spread 8-token target of tests/test_distribution.py."""
    return Lab(model_obj=tiny("llama", vocab_size=VOCAB, layers=2, hidden=32, seed=3, init_std=0.15))


def exact_three_token_distribution(model, prompt, temperature) -> torch.Tensor:
    """p(x1) p(x2 | x1) p(x3 | x1 x2) over all VOCAB**3 continuations, flattened as (x1 * V + x2) * V + x3."""
    V = VOCAB
    with torch.no_grad():
        def next_probs(seqs):
            return (model(torch.tensor(seqs)).logits[:, -1] / temperature).softmax(-1)
        p1 = next_probs([prompt])[0]
        p2 = next_probs([prompt + [a] for a in range(V)])
        p3 = next_probs([prompt + [a, b] for a in range(V) for b in range(V)]).reshape(V, V, V)
    return (p1[:, None, None] * p2[:, :, None] * p3).flatten().double()


def test_guesses_are_draws_that_remember_their_distribution():
    lab_ = tiny_lab("llama", vocab_size=16)
    rng = torch.Generator().manual_seed(0)
    dec = Decoding(lab_.target, PROMPT, Sampling(temperature=T), rng, 32, set(), lab=lab_)
    window = JacobiWindow(4, sampled_guess)
    tree = window.propose(dec, root=1)
    assert tree.q == [None] * 4  # nothing predicted yet: fixed candidates
    logits = torch.randn(5, 16, generator=torch.Generator().manual_seed(1)) * 3
    window.accepted(dec, tree, Verdict([0], bonus=3), logits)  # node 1 rejected: rows 2.. hold the next outputs
    assert len(window.guesses) == 3
    for guess, q, row in zip(window.guesses, window.q, logits[2:]):
        torch.testing.assert_close(q, dec.probs(row))
        assert float(q[guess]) > 0
    again = window.propose(dec, root=3)
    assert again.tokens[:3] == window.guesses[:3] and all(q is not None for q in again.q[:3])
    assert again.q[3] is None


def test_temperature_zero_is_jacobi():
    lab_ = tiny_lab("qwen2", vocab_size=8, seed=2)
    prompt = [1, 2, 3, 4] * 3
    jacobi = lab_.generate("jacobi", prompt, max_new_tokens=40).trace
    sjd = lab_.generate("sjd", prompt, max_new_tokens=40).trace
    assert sjd.tokens == jacobi.tokens
    assert [s.accepted for s in sjd.steps] == [s.accepted for s in jacobi.steps]
    assert any(len(s.accepted) >= 2 for s in sjd.steps)


def test_three_token_distribution_with_residual_resampling():
    """The third token is often verified against a drawn guess; rejecting it resamples max(p - q, 0)."""
    lab_ = sampling_lab()
    exact = exact_three_token_distribution(lab_.model, PROMPT, T)
    rng = torch.Generator().manual_seed(7)
    counts, residual, accepted_drawn = torch.zeros(len(exact)), 0, 0
    for _ in range(3000):
        trace = lab_.generate("sjd", PROMPT, max_new_tokens=3, temperature=T, rng=rng).trace
        a, b, c = trace.tokens
        counts[(a * VOCAB + b) * VOCAB + c] += 1
        residual += any(s.info.get("residual") for s in trace.steps)
        accepted_drawn += len(trace.steps) == 3 and bool(trace.steps[2].accepted)
    assert residual > 150 and accepted_drawn > 150  # both outcomes of a drawn guess really happen
    assert chi_square_p(counts, exact) > 1e-3
