"""SpecBranch: chains go on exactly while the hybrid signal is sure; branches are drafted beside the target and,
when the verdict matches one, the next round's draft is ready (no sequential drafting after it).

The signal is recomputed here from the draft model directly: its top probability after each prefix of the
chain, and the n-gram continuation that prompt lookup finds in the context.
"""
from __future__ import annotations

import collections

import torch

from lab.backends.hf import HFBackend
from lab.decoding import Decoding
from lab.models import tiny
from lab.sampling import Sampling
from lab.speculative.drafters import specbranch as sb
from lab.speculative.drafters.pld import lookup

from ..conftest import IDENTITY_PROMPTS, hf_greedy

VOCAB = 32
CONTEXTS = [[4, 8, 15, 16, 23, 4, 8, 15], [1, 2, 3, 4, 5, 6, 7], [9, 9, 3, 9, 9, 3, 9, 9]]


def next_probs(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, -1].float().softmax(-1)


def decoding(context, temperature=0.0, seed=0) -> Decoding:
    return Decoding(HFBackend(tiny("llama", vocab_size=VOCAB, seed=1)), context, Sampling(temperature=temperature),
                    torch.Generator().manual_seed(seed), max_new_tokens=64, eos=set())


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


def sure(model, ids: list[int], confidence: float) -> bool:
    probs, hint = next_probs(model, ids), lookup(ids, 3, 1, 1)
    return float(probs.max()) >= confidence and (not hint or hint[0] == int(probs.argmax()))


def test_chains_stop_at_the_doubt_and_branch_there():
    lengths, ngram_branches = set(), 0
    for seed in range(3):
        model = bigram_draft(seed + 4)
        for context in contexts(model, seed):
            for confidence in (0.0, 0.3, 0.5, 0.7, 0.9):
                drafter = sb.BranchAhead(decoding(context), HFBackend(model), 8, confidence, branches=2, tail=2)
                chain = [t for t, _, _ in drafter.chain(drafter.runner, context, 8)]
                for i in range(len(chain)):  # every chain position was sure: confident, n-gram agreeing
                    assert chain[i] == int(next_probs(model, context + chain[:i]).argmax())
                    assert sure(model, context + chain[:i], confidence)
                lengths.add(len(chain))
                if len(chain) == 8:
                    continue
                ids = context + chain
                assert not sure(model, ids, confidence)
                seqs = drafter.draft(ids, 8)  # what the thread drafts after the chain: its branches
                probs, hint = next_probs(model, ids), lookup(ids, 3, 1, 1)
                want = torch.topk(probs, 2).indices.tolist()
                want += [hint[0]] if hint and hint[0] not in want else []
                assert [s[0][0] for s in seqs] == want  # the top alternatives, and the n-gram's token
                ngram_branches += len(seqs) > 2
                for seq in seqs:  # each continues at least `tail` tokens, greedily
                    tokens = [t for t, _, _ in seq]
                    assert len(tokens) >= 3
                    for i in range(1, len(tokens)):
                        assert tokens[i] == int(next_probs(model, ids + tokens[:i]).argmax())
    assert len(lengths) >= 3 and ngram_branches > 0  # chains of several lengths, some branches from the n-gram


def test_sampled_branches_are_distinct_and_carry_their_q():
    model = tiny("llama", vocab_size=VOCAB, layers=1, hidden=32, seed=4, init_std=0.4)
    for seed in range(4):
        context = CONTEXTS[seed % 3]
        dec = decoding(context, temperature=0.8, seed=seed)
        drafter = sb.BranchAhead(dec, HFBackend(model), confidence=1.01, branches=3, tail=1)  # always in doubt
        seqs = drafter.draft(context, 8)
        firsts = [s[0] for s in seqs]
        assert len({t for t, _, _ in firsts}) == len(firsts) >= 3
        with torch.no_grad():
            left = dec.probs(model(torch.tensor([context])).logits[0, -1]).float()
        for token, _, q in firsts[:3]:  # drawn without replacement, each from q without the earlier siblings
            assert torch.allclose(q, left / left.sum(), atol=1e-5)
            left[token] = 0.0
        assert all(q is None for _, _, q in firsts[3:])  # the n-gram's token is a fixed candidate
        for seq in seqs:  # the tail is drawn from q given the branch (each token carries it)
            with torch.no_grad():
                q = dec.probs(model(torch.tensor([context + [seq[0][0]]])).logits[0, -1]).float()
            assert torch.allclose(seq[1][2], q, atol=1e-5)


def test_prepared_branches_are_used_and_save_sequential_drafting(default_lab, monkeypatch):
    """Both kinds of prepared continuation hit on real prompts, the tokens stay greedy's, and the draft forwards
    spent before the target's forward are fewer than with every verdict treated as a miss."""
    draft = default_lab.draft("default").fork()

    def run(ready: bool):
        kinds, sequential, tokens = collections.Counter(), 0, []
        for p in IDENTITY_PROMPTS[:4]:
            result = default_lab.generate("specbranch", p["prompt"], chat=p["chat"], max_new_tokens=32)
            steps = [s for s in result.trace.steps if not s.prefill]
            kinds.update(s.info["kind"] for s in steps)
            sequential += sum(s.info["sequential"] for s in steps)
            assert all(s.info["hit"] == (s.info["kind"] is not None) for s in steps)
            text = default_lab.encode(p["prompt"], p["chat"]) + list(result.trace.steps[0].committed)
            for before, after in zip(steps, steps[1:]):  # a hit leaves a ready draft: nothing drafted first ...
                text += before.committed
                if ready and before.info["hit"] and before.info["carried"]:
                    assert after.info["sequential"] == 0
                if ready and before.info["kind"] == "branch":  # ... drafted after the context that resulted
                    assert after.proposed[0] == int(draft.sync(text).argmax())
            tokens.append(result.tokens)
        return kinds, sequential, tokens

    kinds, sequential, tokens = run(True)
    assert kinds["acceptance"] > 0 and kinds["branch"] > 0, kinds

    def miss(self, *args):  # the same rounds, but no prepared work is ever used
        accepted(self, *args)
        self.pending = []

    accepted = sb.BranchAhead.accepted
    monkeypatch.setattr(sb.BranchAhead, "accepted", miss)
    _, serial_sequential, serial_tokens = run(False)
    assert serial_tokens == tokens
    assert sequential < 0.8 * serial_sequential, (sequential, serial_sequential)


def test_parallel_false_gives_the_same_tokens(default_lab):
    p = IDENTITY_PROMPTS[0]
    both = [default_lab.generate("specbranch", p["prompt"], chat=p["chat"], max_new_tokens=24, temperature=0.8,
                                 seed=3, parallel=parallel).tokens for parallel in (True, False)]
    assert both[0] == both[1]
