"""The Katz back-off n-gram model (staged-sd's draft for the draft): its probabilities on a toy corpus by hand."""
from __future__ import annotations

import itertools

import pytest

from lab.speculative.ngram import KatzModel, count

CORPUS = [[1, 2, 3, 1, 2, 4, 1, 2, 3]]
VOCAB = [1, 2, 3, 4]


def model(**kw) -> KatzModel:
    return KatzModel(order=3, discount=0.5, base=count(CORPUS, 3), **kw)


def test_probabilities_by_hand():
    m = model()
    # seen after (1, 2): 3 twice, 4 once; each count loses D = 0.5
    assert m.prob(3, (1, 2)) == pytest.approx(1.5 / 3)
    assert m.prob(4, (1, 2)) == pytest.approx(0.5 / 3)
    # after (2,): the same counts; the freed 1/3 goes to 1 and 2 by their unigram frequencies (3/9 each) over
    # the unigram mass left outside {3, 4} (6/9): alpha(2,) = (1/3) / (6/9) = 1/2
    assert m.prob(1, (2,)) == pytest.approx(0.5 * 3 / 9)
    assert m.prob(2, (2,)) == pytest.approx(0.5 * 3 / 9)
    # back to (1, 2): the bigram level puts 1/3 on {1, 2}, the same as the trigram frees, so alpha = 1
    assert m.prob(1, (1, 2)) == pytest.approx(1 / 6)
    # a history never seen backs off whole; the bottom is the unigram frequency
    assert m.prob(2, (4, 4)) == pytest.approx(m.prob(2, (4,)))
    assert m.prob(1, ()) == pytest.approx(3 / 9)


def test_every_history_is_a_distribution():
    m = model()
    for n in range(3):
        for h in itertools.product(VOCAB + [9], repeat=n):
            assert sum(m.prob(w, h) for w in VOCAB) == pytest.approx(1.0), h


def test_predict_is_the_argmax_and_stops_where_nothing_was_seen():
    m = model()
    for h in itertools.product(VOCAB, repeat=2):
        best = max(VOCAB, key=lambda w: (m.prob(w, h), -w))
        assert m.predict(h) == best, h
    assert m.predict((9,)) is None  # 9 was never followed by anything: no guess
    assert m.guess([5, 1], 5) == [2, 3, 1, 2, 3]


def test_reading_text_adds_to_the_corpus_counts_without_writing_them():
    base = count(CORPUS, 3)
    m = KatzModel(order=3, discount=0.5, base=base)
    m.read([1, 2, 4, 1, 2, 4])
    assert base[(1, 2)] == {3: 2, 4: 1}
    assert m.predict((1, 2)) == 4  # now 4 three times after (1, 2), 3 twice
    m.read([1, 2, 4, 1, 2, 4, 7], start=6)  # only the new token is counted
    assert m.prob(7, (2, 4)) == pytest.approx(0.5 / 3)
    assert sum(m.prob(w, (2, 4)) for w in VOCAB + [7]) == pytest.approx(1.0)
