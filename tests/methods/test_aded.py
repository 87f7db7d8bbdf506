"""ADED: the tri-gram model follows the target's top-k, and PUCT trades acceptance history against exploration."""
from __future__ import annotations

import torch

from lab.speculative.drafters.aded import AdaptiveDrafter, TrigramModel, corpus_counts
from lab.speculative.verify import Verdict
from lab.tree import Tree

from ..conftest import tiny_lab


class FakeDecoding:
    def __init__(self, context, remaining=20):
        self.context, self.remaining = context, remaining


def logits_preferring(order: list[int], vocab: int = 10) -> torch.Tensor:
    logits = torch.full((vocab,), -10.0)
    for rank, token in enumerate(order):
        logits[token] = 5.0 - rank
    return logits


def test_the_trigram_model_ranks_the_target_top_k_and_backs_off_to_one_token():
    model = TrigramModel(decay=0.5)
    model.read_target(1, 2, logits_preferring([7, 4, 9]), k=3)
    ranked = model.next(1, 2, width=3)
    assert [t for t, _ in ranked] == [7, 4, 9]
    assert abs(sum(p for _, p in ranked) - 1.0) < 1e-6
    assert [t for t, _ in model.next(8, 2, width=3)] == [7, 4, 9]  # unseen pair: what follows 2
    assert model.next(2, 8, width=3) == []


def test_newer_target_predictions_outweigh_older_ones():
    model = TrigramModel(decay=0.5)
    model.add(1, 2, {3: 1.0})
    model.add(1, 2, {4: 1.0})
    assert model.next(1, 2, width=1)[0][0] == 4
    patient = TrigramModel(decay=1.0)  # without decay the first observation keeps its weight
    patient.add(1, 2, {3: 1.0})
    patient.add(1, 2, {4: 0.9})
    assert patient.next(1, 2, width=1)[0][0] == 3


def drafter_on_a_chain(**kwargs) -> AdaptiveDrafter:
    """After (0, 1) the model prefers 2 (0.7) over 3 (0.3); after (1, 2), 4 over 5; and so on."""
    drafter = AdaptiveDrafter(**kwargs)
    context = [0, 1]
    for step in range(6):
        a, b = context[-2], context[-1]
        good, other = 2 * step + 2, 2 * step + 3
        drafter.model.add(a, b, {good: 0.7, other: 0.3})
        context.append(good)
    drafter.read = 10**9  # no text statistics: only the rows above
    return drafter


def root_children(tree: Tree) -> list[int]:
    return [t for t, p in zip(tree.tokens, tree.parents) if p < 0]


def test_exploitation_follows_the_prior_then_the_acceptance_history():
    drafter = drafter_on_a_chain(nodes=1, max_depth=1, explore=0.3)
    assert drafter.propose(FakeDecoding([0, 1]), 1).tokens == [2]
    drafter.tried[(0, 1, 2)] = 10  # 2 was verified ten times after (0, 1) and always rejected
    assert drafter.propose(FakeDecoding([0, 1]), 1).tokens == [3]
    drafter.won[(0, 1, 2)] = 10  # ... or always accepted
    assert drafter.propose(FakeDecoding([0, 1]), 1).tokens == [2]


def test_a_never_tried_sibling_gets_its_chance_when_exploring():
    drafter = drafter_on_a_chain(nodes=1, max_depth=1, explore=3.0)
    drafter.tried[(0, 1, 2)] = drafter.won[(0, 1, 2)] = 10  # 2 always accepted, 3 never tried
    assert drafter.propose(FakeDecoding([0, 1]), 1).tokens == [3]
    drafter.explore = 0.3
    assert drafter.propose(FakeDecoding([0, 1]), 1).tokens == [2]


def test_the_exploration_bonus_widens_the_tree():
    greedy = drafter_on_a_chain(nodes=4, width=2, max_depth=6, explore=0.0).propose(FakeDecoding([0, 1]), 1)
    assert greedy.tokens == [2, 4, 6, 8] and greedy.parents == [-1, 0, 1, 2]
    curious = drafter_on_a_chain(nodes=4, width=2, max_depth=6, explore=10.0).propose(FakeDecoding([0, 1]), 1)
    assert sorted(root_children(curious)) == [2, 3]
    assert len(curious) == 4 and max(curious.depths()) < 4
    short = drafter_on_a_chain(nodes=4, width=2, max_depth=6, explore=0.0).propose(FakeDecoding([0, 1], 2), 1)
    assert max(short.depths()) == 2  # never deeper than the tokens left


def test_outcomes_count_only_where_a_draft_was_verified_in_its_true_context():
    drafter = drafter_on_a_chain(nodes=4, width=2, max_depth=6, explore=10.0)
    tree = drafter.propose(FakeDecoding([0, 1]), 1)  # 2 (under the root), 4 (under 2), 3 (under the root), ...
    node = {t: i for i, t in enumerate(tree.tokens)}
    verdict = Verdict(accepted=[node[2]], bonus=9)  # 2 accepted, then 4 rejected (the target wanted 9)
    logits = torch.stack([logits_preferring([2, 3])] + [logits_preferring([9])] * len(tree))
    drafter.accepted(FakeDecoding([0, 1]), tree, verdict, logits)
    assert drafter.tried[(0, 1, 2)] == 1 and drafter.won[(0, 1, 2)] == 1
    assert drafter.tried[(0, 1, 3)] == 1 and (0, 1, 3) not in drafter.won  # a sibling tried and lost
    assert drafter.tried[(1, 2, 4)] == 1 and (1, 2, 4) not in drafter.won
    deeper = [tree.tokens[i] for i in range(len(tree)) if tree.depths()[i] > 2]
    for token in deeper:  # their parents were rejected: never really tried
        assert not any(key[2] == token for key in drafter.tried)
    assert drafter.model.next(2, 4, width=1)[0][0] == 9  # the target's top-k was absorbed at every row


def test_aded_accepts_drafts_on_a_tiny_model():
    tl = tiny_lab("gpt2", vocab_size=96, seed=1)
    prompt = [(i * 3) % 50 + 1 for i in range(12)] * 2
    trace = tl.generate("aded", prompt, max_new_tokens=24).trace
    assert sum(len(s.accepted or []) for s in trace.steps) > 0
    assert trace.forwards < 24


class WordTokenizer:
    """Each distinct word gets an id, in order of appearance (a corpus needs a tokenizer)."""

    eos_token_id = None

    def __init__(self):
        self.ids: dict[str, int] = {}

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[self.ids.setdefault(w, len(self.ids)) for w in t.split()] for t in texts]}


def test_the_trigram_matrix_starts_from_a_corpus_and_never_writes_it(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("a b c a b c a b d x y z")
    tokenizer = WordTokenizer()
    counts = corpus_counts(str(path), tokenizer)
    a, b, c, d = (tokenizer.ids[w] for w in "abcd")
    assert counts[(a, b)] == {c: 2.0, d: 1.0} and counts[(b,)] == {c: 2.0, d: 1.0}
    assert corpus_counts(str(path), tokenizer) is counts  # counted once per tokenizer
    model = TrigramModel(decay=0.5, base=counts)
    assert [t for t, _ in model.next(a, b, 2)] == [c, d]  # before any text or target row
    model.read_target(a, b, logits_preferring([d]), k=1)
    assert model.next(a, b, 1)[0][0] == d  # the row adapts: the corpus weights decayed, d absorbed
    assert counts[(a, b)] == {c: 2.0, d: 1.0}  # the shared corpus counts are untouched
