"""SpecBranch: the chain goes on exactly while the hybrid signal is sure, and branches where it is not.

The signal is recomputed here from the draft model directly: its top probability after each prefix of the
chain, and the n-gram continuation that prompt lookup finds in the context.
"""
from __future__ import annotations

import torch

from lab.backends.hf import HFBackend
from lab.decoding import Decoding
from lab.models import tiny
from lab.sampling import Sampling
from lab.speculative.drafters.pld import lookup
from lab.speculative.drafters.specbranch import BranchDrafter

from ..conftest import hf_greedy

VOCAB = 32
CONTEXTS = [[4, 8, 15, 16, 23, 4, 8, 15], [1, 2, 3, 4, 5, 6, 7], [9, 9, 3, 9, 9, 3, 9, 9]]


def draft_model(seed: int = 4):
    return tiny("llama", vocab_size=VOCAB, layers=1, hidden=32, seed=seed, init_std=0.4)


def next_probs(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, -1].float().softmax(-1)


def decoding(context, temperature=0.0, seed=0) -> Decoding:
    return Decoding(HFBackend(tiny("llama", vocab_size=VOCAB, seed=1)), context, Sampling(temperature=temperature),
                    torch.Generator().manual_seed(seed), max_new_tokens=64, eos=set())


def branch_point(tree) -> tuple[int, list[int]]:
    """The last chain node (-1 for the root) and the chain's tokens: follow single children."""
    node, chain = -1, []
    while len(tree.children(node)) == 1:
        node = tree.children(node)[0]
        chain.append(tree.tokens[node])
    return node, chain


def bigram_draft(seed: int):
    """A draft that ignores attention: its greedy text soon cycles, so the context's n-grams agree with it."""
    model = tiny("llama", vocab_size=VOCAB, layers=1, hidden=32, seed=seed, init_std=0.5)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
    return model


def contexts(model, seed: int) -> list[list[int]]:
    """The draft's own repetitive text, and the same with a planted n-gram that disagrees at depth 3."""
    prompt = [(seed * 7 + 3 * i) % VOCAB for i in range(5)]
    text = prompt + hf_greedy(model, prompt, 12)
    a = text[-1]
    b = int(next_probs(model, [a]).argmax())
    c = int(next_probs(model, [b]).argmax())
    d = int(next_probs(model, [c]).argmax())
    return [text, text + [a, b, c, (d + 1) % VOCAB, a]]


def test_branches_exactly_where_the_hybrid_signal_drops():
    depths, ngram_branches = set(), 0
    for seed in range(3):
        model = bigram_draft(seed + 4)
        for context in contexts(model, seed):
            for confidence in (0.0, 0.3, 0.5, 0.7, 0.9):
                dec = decoding(context)
                drafter = BranchDrafter(HFBackend(model), max_length=8, confidence=confidence, branches=2, tail=2)
                tree = drafter.propose(dec, context[-1])
                node, chain = branch_point(tree)
                for i in range(len(chain)):  # every chain position was sure: confident, n-gram agreeing
                    probs = next_probs(model, context + chain[:i])
                    hint = lookup(context + chain[:i], 3, 1, 1)
                    assert chain[i] == int(probs.argmax())
                    assert float(probs.max()) >= confidence and (not hint or hint[0] == chain[i])
                if len(chain) == 8:  # never unsure within the length: no branch
                    assert drafter.branch_depth == 0
                    continue
                probs = next_probs(model, context + chain)
                hint = lookup(context + chain, 3, 1, 1)
                top = int(probs.argmax())
                assert float(probs.max()) < confidence or (hint and hint[0] != top)
                kids = [tree.tokens[c] for c in tree.children(node)]
                want = torch.topk(probs, 2).indices.tolist()
                want += [hint[0]] if hint and hint[0] not in want else []
                assert kids == want  # the top alternatives, and the n-gram's token when it disagrees
                ngram_branches += len(kids) > 2
                assert drafter.branch_depth == len(chain) + 1
                depths.add(drafter.branch_depth)
                for kid in tree.children(node):  # each branch continues `tail` tokens, greedily
                    ids, n = context + chain + [tree.tokens[kid]], kid
                    for _ in range(2):
                        (n,) = tree.children(n)
                        assert tree.tokens[n] == int(next_probs(model, ids).argmax())
                        ids.append(tree.tokens[n])
                    assert not tree.children(n)
    assert len(depths) >= 3 and ngram_branches > 0  # branches at several depths, some from the n-gram


def test_sampled_branches_are_distinct_and_carry_their_q():
    model = draft_model()
    for seed in range(4):
        context = CONTEXTS[seed % 3]
        dec = decoding(context, temperature=0.8, seed=seed)
        tree = BranchDrafter(HFBackend(model), confidence=0.5, branches=3, tail=1).propose(dec, context[-1])
        node, chain = branch_point(tree)
        kids = tree.children(node)
        assert len({tree.tokens[c] for c in kids}) == len(kids) >= 3
        with torch.no_grad():
            q = dec.probs(model(torch.tensor([context + chain])).logits[0, -1])
        left = q.clone()
        for c in kids[:3]:  # drawn without replacement, each from q without the earlier siblings
            assert torch.allclose(tree.q[c], left / left.sum(), atol=1e-5)
            left[tree.tokens[c]] = 0.0
        assert all(tree.q[c] is None for c in kids[3:])  # the n-gram's token is a fixed candidate
