"""Token Recycling: the matrix holds the target's latest top-k after each token, and the tree follows it."""
from __future__ import annotations

import torch

from lab.models import tiny
from lab.api import Lab
from lab.speculative.drafters.token_recycling import PAPER_TREE, TokenRecycler, paper_template
from lab.speculative.drafter import Drafter
from lab.speculative.loop import EXACT, score_one

from ..conftest import tiny_lab


class FakeDecoding:
    def __init__(self, context, remaining=20):
        self.context, self.remaining = context, remaining


def test_the_template_is_the_papers_static_tree_of_80_nodes():
    template = paper_template()
    assert len(template) == 80
    depth, seen, children = {-1: 0}, set(), {}
    for slot, (parent, rank) in enumerate(template):
        assert parent < slot and (parent, rank) not in seen  # parents first, distinct ranks
        assert rank == 0 or (parent, rank - 1) in seen  # a node's children are its ranks 0, 1, ...
        seen.add((parent, rank))
        depth[slot] = depth[parent] + 1
        children[parent] = children.get(parent, 0) + 1
    assert max(depth.values()) == 6 and sum(d == 1 for d in depth.values()) == 8
    assert [children.get(n - 1, 0) for n in range(81)] == [c for level in PAPER_TREE for c in level]
    assert [d for d in depth.values() if d] == sorted(d for d in depth.values() if d)  # breadth first
    assert paper_template(12) == template[:12]


def test_the_tree_is_a_breadth_first_walk_through_the_matrix():
    recycler = TokenRecycler(vocab_size=50, k=8, nodes=12)
    g = torch.Generator().manual_seed(0)
    for token in range(50):
        recycler.successors[token] = torch.randperm(50, generator=g)[:8]
    tree = recycler.propose(FakeDecoding([7, 3]), 3)
    assert len(tree) == 12 and max(tree.depths()) == 2
    for node, (parent_slot, rank) in enumerate(recycler.template):  # every row is known: slot i is node i
        parent_token = 3 if parent_slot < 0 else tree.tokens[parent_slot]
        assert tree.parents[node] == parent_slot
        assert tree.tokens[node] == int(recycler.successors[parent_token, rank])
    # depth is cut to the tokens still to generate
    assert max(recycler.propose(FakeDecoding([7, 3], remaining=1), 3).depths()) == 1


def test_unknown_rows_are_not_expanded():
    recycler = TokenRecycler(vocab_size=20, k=8, nodes=12)
    recycler.successors[3, :2] = torch.tensor([5, 6])  # 5 and 6 have never been seen after anything
    tree = recycler.propose(FakeDecoding([1, 3]), 3)
    assert tree.tokens == [5, 6] and tree.parents == [-1, -1]


def test_every_scored_row_is_recycled_from_the_target_top_k():
    tl = tiny_lab("llama", vocab_size=64, seed=2)
    recycler = TokenRecycler(vocab_size=64, k=8, nodes=10)
    g = torch.Generator().manual_seed(1)
    for token in range(64):
        recycler.successors[token] = torch.randperm(64, generator=g)[:8]
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
        assert recycler.successors[token].tolist() == logits[last].topk(8).indices.tolist()
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


def test_the_matrix_persists_across_generations_of_the_same_model():
    lab_ = Lab(model_obj=tiny("llama", vocab_size=96, seed=4))
    prompt = [(i * 5) % 60 + 1 for i in range(16)]
    first = lab_.generate("token-recycling", prompt, max_new_tokens=12).trace
    again = lab_.generate("token-recycling", prompt, max_new_tokens=12).trace
    assert first.tokens == again.tokens
    assert not first.steps[1].proposed  # an empty matrix has nothing to draft after the first token
    assert again.steps[1].proposed  # the second generation starts with what the first recycled
    assert again.forwards < first.forwards
    alone = lab_.generate("token-recycling", prompt, max_new_tokens=12, persist=False).trace
    assert not alone.steps[1].proposed  # its own matrix, empty
    other = Lab(model_obj=tiny("llama", vocab_size=96, seed=5))  # another model: another matrix
    assert not other.generate("token-recycling", prompt, max_new_tokens=12).trace.steps[1].proposed
