"""Staged speculative decoding: the draft model is itself sped up by a cheaper speculative stage.

Paper: "Accelerating LLM Inference with Staged Speculative Decoding" (Spector & Re, 2023). Two ideas on top
of speculative decoding with a draft model: (a) the speculative batch is restructured as a tree: besides
the draft's own continuation, each position also offers the draft's next-best tokens as siblings, which
are free (their logits are already computed) and give the target a second chance wherever the draft's
first choice is wrong; (b) the draft model is itself decoded speculatively by a cheaper stage: an n-gram
lookup in the context guesses the draft's next tokens, and the draft checks a whole guess in one forward.

The inner stage is exact with respect to the draft: at T = 0 a guess is kept while it equals the draft's
argmax, so the main chain is token for token what plain greedy drafting gives; at T > 0 a guessed token g
is kept with probability q(g), else a token is drawn from q with g removed, so each chain token is a draw
from the draft's own q, which the node carries. The siblings are the next-best tokens (T = 0) or are drawn
from q without the tokens before them (T > 0), each with its conditional q; the target's verification is
the usual multi-round rejection, so the output is exactly the target's.

Departures from the paper: the cheap stage is prompt lookup over the context (lab/speculative/drafters/pld.py's
`lookup`) rather than a Katz back-off n-gram model trained on a corpus; the tree is a main chain with
`width - 1` siblings per position rather than the paper's tuned expansion; the draft is by default the
target's own first 16 layers.
"""
from __future__ import annotations

import torch

from ...backends import Backend
from ...decoding import Decoding
from ...registry import method
from ...sampling import draw
from ...tree import Tree
from ..drafter import Drafter
from ..loop import speculate
from .pld import lookup


class StagedDrafter(Drafter):
    """Draft chains by n-gram-guessed, draft-verified blocks; siblings from the draft's logits."""

    def __init__(self, runner: Backend, length: int = 8, width: int = 2, max_ngram: int = 3, min_ngram: int = 1):
        self.runner, self.length, self.width = runner, length, width
        self.max_ngram, self.min_ngram = max_ngram, min_ngram

    @property
    def forwards(self) -> int:
        return self.runner.forwards

    def _pick(self, dec: Decoding, logits: torch.Tensor) -> int:
        """The draft's own next token: its argmax, or a draw from its q."""
        return dec.choose(logits)

    def _check(self, dec: Decoding, logits: torch.Tensor, guess: int) -> int:
        """The draft's next token given a guess: the guess if the draft agrees (T = 0) or accepts it with
        probability q(guess) (T > 0), else the draft's own choice (a draw from q without the guess)."""
        if dec.greedy:
            return int(logits.argmax())
        q = dec.probs(logits)
        if dec.uniform() < float(q[guess]):
            return guess
        rest = q.clone()
        rest[guess] = 0.0
        return int(draw(rest / rest.sum(), dec.rng))

    def chain(self, dec: Decoding, n: int) -> tuple[list[int], list[torch.Tensor]]:
        """The inner stage: n draft tokens and, for each, the draft logits it was chosen from."""
        before = self.runner.sync(dec.context)
        base = self.runner.length
        tokens: list[int] = []
        rows: list[torch.Tensor] = []
        nxt = self._pick(dec, before)
        while True:
            tokens.append(nxt)
            rows.append(before)
            if len(tokens) >= n:
                break
            guess = lookup(dec.context + tokens, self.max_ngram, self.min_ngram, n - len(tokens))
            out = self.runner.forward([nxt] + guess).logits  # out[i]: the draft's logits after guess[:i]
            nxt = None
            for i, g in enumerate(guess):
                token = self._check(dec, out[i], g)
                if token != g:
                    nxt, before = token, out[i]
                    break
                tokens.append(g)
                rows.append(out[i])
            self.runner.rollback(base + len(tokens))  # drop the rejected guesses from the draft's cache
            if len(tokens) >= n:
                break
            if nxt is None:  # every guess was kept: the draft's next token comes from the last row
                before = out[len(guess)]
                nxt = self._pick(dec, before)
        self.runner.rollback(base)
        return tokens, rows

    def propose(self, dec: Decoding, root: int) -> Tree:
        n = min(self.length, dec.remaining)
        tree = Tree()
        if n <= 0:
            return tree
        tokens, rows = self.chain(dec, n)
        parent = -1
        for token, logits in zip(tokens, rows):
            shown = logits.float().softmax(-1)
            if dec.greedy:
                main = tree.add(token, parent, float(shown[token]))
                for alt in torch.topk(shown, min(self.width, shown.shape[-1])).indices.tolist():
                    if alt != token and len(tree.children(parent)) < self.width:
                        tree.add(alt, parent, float(shown[alt]))
            else:
                q = dec.probs(logits).float()
                main = tree.add(token, parent, float(shown[token]), q)
                rest = q.clone()
                rest[token] = 0.0
                for _ in range(self.width - 1):
                    if float(rest.sum()) <= 0.0:
                        break
                    dist = rest / rest.sum()
                    alt = int(draw(dist, dec.rng))
                    tree.add(alt, parent, float(shown[alt]), dist)
                    rest[alt] = 0.0
            parent = main
        return tree


@method("staged-sd", family="speculative", lossless=True, training_free=True,
        paper="Accelerating LLM Inference with Staged Speculative Decoding",
        departures="the cheap stage is prompt lookup over the context, not a Katz back-off n-gram model trained on "
                   "a corpus; the tree is a main chain with width - 1 siblings per position, not the paper's tuned "
                   "expansion; the default draft is the lab's trained FastDraft on the default model (four layers of its shape, not a separate small model) and the target's first half of layers, untrained, on other models")
def staged_sd(dec: Decoding, *, length: int = 8, width: int = 2, max_ngram: int = 3, min_ngram: int = 1,
              draft: str = "default"):
    """Draft tree (chain + siblings) whose draft is itself sped up by n-gram guesses it verifies."""
    yield from speculate(dec, StagedDrafter(dec.lab.draft(draft), length, width, max_ngram, min_ngram))
