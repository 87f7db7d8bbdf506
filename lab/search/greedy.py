"""Greedy decoding: the target's argmax, one forward per token (the reference every lossless method matches).

At temperature > 0 it draws from softmax(logits / T), so it is also the plain sampling baseline.
"""
from __future__ import annotations

from ..registry import method
from ..trace import Step


RUN = 8  # argmax steps asked of the backend at once (the fast backend runs them in one graph: `Burst`)


def autoregressive(dec):
    """One token per target forward, chosen by `dec.choose` (argmax, or a draw at temperature > 0). At temperature 0
    the argmax steps go to the backend RUN at a time (`greedy_run`); steps past an EOS are computed and dropped."""
    token = dec.choose(dec.prefill())
    yield Step(committed=[token], origin=["plain"], forwards=0, prefill=True)
    while not dec.done:
        if dec.greedy and dec.remaining >= RUN:
            for token in dec.target.greedy_run(token, RUN):
                yield Step(committed=[token], origin=["plain"])
                if dec.done:
                    return
            continue
        token = dec.choose(dec.target.decode(token))
        yield Step(committed=[token], origin=["plain"])


@method("greedy", family="autoregressive", lossless=True,
        paper="Autoregressive decoding (the reference: transformers' generate)",
        departures="none: the reference, token for token transformers' greedy generate")
def greedy(dec):
    """Argmax decoding, one token per forward; samples from softmax(logits/T) at temperature > 0."""
    yield from autoregressive(dec)
