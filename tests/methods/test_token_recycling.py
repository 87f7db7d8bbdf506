"""Token Recycling: the matrix holds the target's latest top-k after each token, and the tree follows it."""
from __future__ import annotations

import torch

from lab.speculative.drafter import Drafter
from lab.speculative.drafters.token_recycling import TokenRecycler, static_template
from lab.speculative.loop import EXACT, score_one

from ..conftest import tiny_lab


class FakeDecoding:
    def __init__(self, context, remaining=20):
        self.context, self.remaining = context, remaining


def test_the_template_is_a_tree_of_distinct_ranks_parents_first():
    template = static_template(28, 8, 6)
    assert len(template) == 28
    seen = set()
    for slot, (parent, rank) in enumerate(template):
        assert parent < slot and (parent, rank) not in seen
        seen.add((parent, rank))
    # best-first: a first choice is always in before its siblings of a higher rank
    for parent, rank in template:
        assert rank == 0 or (parent, rank - 1) in seen


def test_the_tree_is_a_breadth_first_walk_through_the_matrix():
    recycler = TokenRecycler(vocab_size=50, k=4, nodes=12, max_depth=3)
    g = torch.Generator().manual_seed(0)
    for token in range(50):
        recycler.successors[token] = torch.randperm(50, generator=g)[:4]
    tree = recycler.propose(FakeDecoding([7, 3]), 3)
    assert len(tree) == 12 and max(tree.depths()) <= 3
    for node, (parent_slot, rank) in enumerate(recycler.template):  # every row is known: slot i is node i
        parent_token = 3 if parent_slot < 0 else tree.tokens[parent_slot]
        assert tree.parents[node] == parent_slot
        assert tree.tokens[node] == int(recycler.successors[parent_token, rank])
    # depth is cut to the tokens still to generate
    assert max(recycler.propose(FakeDecoding([7, 3], remaining=1), 3).depths()) == 1


def test_unknown_rows_are_not_expanded():
    recycler = TokenRecycler(vocab_size=20, k=2, nodes=6, max_depth=3)
    recycler.successors[3] = torch.tensor([5, 6])  # 5 and 6 have never been seen after anything
    tree = recycler.propose(FakeDecoding([1, 3]), 3)
    assert tree.tokens == [5, 6] and tree.parents == [-1, -1]


def test_every_scored_row_is_recycled_from_the_target_top_k():
    tl = tiny_lab("llama", vocab_size=64, seed=2)
    recycler = TokenRecycler(vocab_size=64, k=4, nodes=10, max_depth=3)
    g = torch.Generator().manual_seed(1)
    for token in range(64):
        recycler.successors[token] = torch.randperm(64, generator=g)[:4]
    prompt = [5, 9, 14, 2, 33, 5, 9]
    tl.target.prefill(prompt)

    class Dec(FakeDecoding):
        greedy, target = True, tl.target
    dec = Dec(prompt + [14])
    tree = recycler.propose(dec, 14)
    verdict, forward = score_one(dec, Drafter(), EXACT, 14, tree)
    logits = forward.logits
    recycler.accepted(dec, tree, verdict, logits)
    rows = [14] + tree.tokens
    for token in set(rows):
        last = max(i for i, t in enumerate(rows) if t == token)  # the latest prediction wins
        assert recycler.successors[token].tolist() == logits[last].topk(4).indices.tolist()
    # the next tree from the bonus token starts with the target's own top choices after it
    bonus = verdict.bonus
    next_tree = recycler.propose(Dec(prompt + [14, bonus]), bonus)
    first_level = [t for t, p in zip(next_tree.tokens, next_tree.parents) if p < 0]
    assert first_level == recycler.successors[bonus, :len(first_level)].tolist()


def test_a_generation_fills_the_matrix_and_drafts_get_accepted():
    tl = tiny_lab("qwen2", vocab_size=96, seed=1)
    prompt = [(i * 3) % 50 + 1 for i in range(12)] * 2
    trace = tl.generate("token-recycling", prompt, max_new_tokens=24).trace
    assert sum(len(s.accepted or []) for s in trace.steps) > 0
    assert trace.forwards < 24
