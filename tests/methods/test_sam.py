"""SAM decoding: the suffix automaton finds exactly the longest earlier repeat, and the draft copies what followed."""
from __future__ import annotations

import json
import random

import pytest
import torch

from lab.bench.suite import held_out
from lab.speculative.corpus import DEFAULT
from lab.speculative.drafters.sam import SuffixMatchDrafter
from lab.speculative.drafters.token_recycling import TokenRecycler
from lab.speculative.suffix_automaton import Match, SuffixAutomaton

from ..conftest import hf_greedy, tiny_lab


def occurs_in(needle: list[int], text: list[int]) -> bool:
    n = len(needle)
    return any(text[i:i + n] == needle for i in range(len(text) - n + 1))


def brute_repeat(text: list[int]) -> int:
    """Length of the longest suffix of `text` that also ends somewhere before its last token."""
    return max((n for n in range(len(text)) if occurs_in(text[len(text) - n:], text[:-1])), default=0)


def brute_match(stream: list[int], corpus: list[int]) -> int:
    """Length of the longest suffix of `stream` that occurs in `corpus`."""
    return max(n for n in range(len(stream) + 1) if occurs_in(stream[len(stream) - n:], corpus))


@pytest.mark.parametrize("alphabet", [2, 3, 6])
def test_repeat_is_the_longest_earlier_suffix(alphabet):
    rng = random.Random(alphabet)
    for _ in range(20):
        sam = SuffixAutomaton()
        for _ in range(rng.randrange(1, 60)):
            sam.append(rng.randrange(alphabet))
            text = sam.tokens
            length, end = sam.repeat()
            assert length == brute_repeat(text)
            if length:  # `end` is a real earlier occurrence, so a continuation follows it
                assert end < len(text) - 1
                assert text[end - length + 1:end + 1] == text[len(text) - length:]
                assert sam.continuation(end, 3) == text[end + 1:end + 4]


def test_the_automaton_is_linear_and_knows_every_substring():
    rng = random.Random(0)
    text = [rng.randrange(3) for _ in range(200)]
    sam = SuffixAutomaton(text)
    assert len(sam) <= 2 * len(text) - 1  # the linear bound of a real suffix automaton
    for _ in range(300):
        i = rng.randrange(len(text))
        piece = text[i:i + rng.randrange(1, 12)]
        match = Match()
        for t in piece:
            match = sam.follow(match, t)
        assert match.length == len(piece)
    assert sam.follow(Match(), 7) == Match(0, 0)  # a token never seen


def test_streaming_match_against_a_static_corpus():
    rng = random.Random(1)
    for _ in range(20):
        corpus = [rng.randrange(4) for _ in range(rng.randrange(5, 80))]
        sam, match, stream = SuffixAutomaton(corpus), Match(), []
        for _ in range(40):
            token = rng.randrange(5)  # token 4 never occurs in the corpus
            stream.append(token)
            match = sam.follow(match, token)
            assert match.length == brute_match(stream, corpus)
            end = sam.end[match.state]
            if match.length:
                assert corpus[end - match.length + 1:end + 1] == stream[len(stream) - match.length:]


class FakeDecoding:
    def __init__(self, context, remaining=20):
        self.context, self.remaining = context, remaining


def test_the_draft_copies_the_longest_match_not_the_latest_short_one():
    # "5 1 2" occurred with 3 after it, "1 2" more recently with 9 after it: the longest match wins
    context = [5, 1, 2, 3, 4, 0, 1, 2, 9, 9, 7, 5, 1, 2]
    drafter = SuffixMatchDrafter(length=4)
    tree = drafter.propose(FakeDecoding(context), context[-1])
    assert drafter.matched == 3 and tree.tokens == [3, 4, 0, 1]
    assert tree.parents == [-1, 0, 1, 2]
    context = context + [3, 4, 8]  # committed tokens extend the automaton incrementally
    tree = drafter.propose(FakeDecoding(context, remaining=2), 8)
    assert drafter.matched == 0 and tree.tokens == []
    context = context + [5]
    tree = drafter.propose(FakeDecoding(context, remaining=2), 5)
    assert drafter.matched == 1 and len(tree) == 2  # never deeper than the tokens left


def test_a_static_corpus_wins_only_with_a_clearly_longer_match():
    corpus = SuffixAutomaton([10, 11, 12, 13, 14, 15, 16, 17])
    context = [1, 11, 12, 13, 14, 15]  # nothing repeats in the context itself
    tree = SuffixMatchDrafter(length=2, static=corpus, static_bias=2).propose(FakeDecoding(context), 15)
    assert tree.tokens == [16, 17]
    tree = SuffixMatchDrafter(length=2, static=corpus, static_bias=5).propose(FakeDecoding(context), 15)
    assert tree.tokens == []


@pytest.mark.parametrize("recycle", [False, True])
def test_sam_is_greedy_and_copies_on_repetitive_tiny_runs(recycle):
    tl = tiny_lab("llama", vocab_size=96, seed=1)
    accepted = 0
    for seed in range(4):
        prompt = [(seed * 7 + i * 3) % 50 + 1 for i in range(12)] * 2
        result = tl.generate("sam", prompt, max_new_tokens=24, recycle=recycle)
        assert result.tokens == hf_greedy(tl.model, prompt, 24)
        accepted += sum(len(step.accepted or []) for step in result.trace.steps)
    assert accepted > 0


def test_short_matches_hand_over_to_token_recycling():
    recycler = TokenRecycler(vocab_size=20, k=8, nodes=12)
    for token in range(20):
        recycler.successors[token] = torch.arange(8) + token % 3
    corpus = SuffixAutomaton([10, 11, 12, 13, 14, 15, 16, 17, 18])
    drafter = SuffixMatchDrafter(length=3, static=corpus, static_bias=1, recycler=recycler, threshold=3)
    tree = drafter.propose(FakeDecoding([1, 2, 3, 4]), 4)  # nothing matches: the recycled tree
    assert drafter.info == {"match": 0, "source": "recycled"} and len(tree) == 12
    tree = drafter.propose(FakeDecoding([1, 2, 3, 4, 11, 12, 13, 14]), 14)  # the corpus matches 4, counts 3
    assert drafter.info == {"match": 3, "source": "corpus"} and tree.tokens == [15, 16, 17]


def test_the_shipped_corpus_is_the_models_answers_outside_the_benchmark():
    """The static automaton's default corpus: under 2 MB, made by its script, no benchmark conversation in it."""
    assert DEFAULT.stat().st_size < 2_000_000
    data = json.loads(DEFAULT.read_text())
    assert data["about"]["command"].startswith("python -m lab train responses")
    assert len(data["answers"]) >= 1000
    assert not any(held_out(a["id"]) for a in data["answers"])  # the benchmark's prompts are all held out
    assert all(a["question"] and a["text"] for a in data["answers"])


def test_the_default_configuration_drafts_from_the_corpus(default_lab):
    """Asked a question from the corpus, the default model answers as it did there: sam drafts the answer from
    the static automaton, long matches get accepted, and the tokens are greedy's."""
    answer = json.loads(DEFAULT.read_text())["answers"][3]
    result = default_lab.generate("sam", answer["question"], chat=True, max_new_tokens=32)
    reference = default_lab.generate("greedy", answer["question"], chat=True, max_new_tokens=32)
    assert result.tokens == reference.tokens
    sources = [s.info["source"] for s in result.trace.steps if s.proposed]
    assert sources.count("corpus") >= 2 and "recycled" in sources
    assert result.trace.tokens_per_forward > 2.0
