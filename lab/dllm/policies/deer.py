"""DEER: Draft with Diffusion, Verify with Autoregressive Models (2025).

The idea: a diffusion LM drafts a whole block of next tokens in one (or a few) denoising steps, free of the
left-to-right chain that limits autoregressive drafters; the autoregressive target verifies the block in one
forward and keeps the longest prefix it agrees with, plus its own next token. The dLLM is just a drafter on the
lab's speculative loop, whose exact verifier makes the output the target's: its greedy tokens at temperature 0,
its distribution when sampling.
"""
from __future__ import annotations

from ...backends import Backend
from ...decoding import Decoding
from ...errors import LabError
from ...registry import method
from ...speculative.drafter import Drafter
from ...speculative.expand import draft_token
from ...speculative.loop import speculate
from ...tree import Tree
from .. import rules
from ..denoiser import Denoiser
from ..model import DLLM, spec_of


class DiffusionDraft(Drafter):
    """A block of `size` draft tokens from a dLLM in `steps` denoising steps. Greedy: the surest positions first.
    Sampling: left to right (each token is drawn from the dLLM's distribution given the context and the drafts
    before it only, which is what exact verification needs), with its q kept for the verifier."""

    def __init__(self, runner: Backend, spec: DLLM, size: int, steps: int):
        self.runner, self.spec, self.size, self.steps = runner, spec, size, steps
        self.den: Denoiser | None = None

    @property
    def forwards(self) -> int:
        return self.runner.forwards

    def propose(self, dec: Decoding, root: int) -> Tree:
        n = min(self.size, dec.remaining)
        if n <= 0:
            return Tree()
        if self.den is None:
            self.den = Denoiser(self.runner, self.spec, dec.context, n, n, "prefix")
        else:
            self.den.length = self.den.block_size = n
            self.den.reset(dec.context)  # block attention: the committed context's cache is reused
        den = self.den
        tokens, beliefs, qs = [0] * n, [1.0] * n, [None] * n
        for count in rules.transfer_counts(n, min(self.steps, n)):
            window, logits = den.predict(0, n)
            rows = [j for j, p in enumerate(window) if den.canvas[p] == den.mask]
            if dec.greedy:
                best = logits.argmax(-1)
                rows = rules.rank(rules.host(best, rules.confidence(logits, best))[1], rows)
            for r in rows[:count]:
                token, belief, q = draft_token(dec, logits[r])
                p = window[r]
                tokens[p], beliefs[p], qs[p] = token, belief, q
                den.canvas[p] = token
        return Tree.from_chain(tokens, beliefs, qs)


@method("deer", family="diffusion", lossless=True,
        paper="DEER: Draft with Diffusion, Verify with Autoregressive Models (2025)",
        departures="The draft block is denoised in draft_steps low-confidence steps (1: all positions from one forward); "
                   "when sampling, positions are drawn left to right so that exact rejection sampling applies; "
                   "lossless with respect to the autoregressive target (its greedy output, its distribution).")
def deer(dec, *, draft: str = "dllm-default", block_size: int = 0, draft_steps: int = 1):
    """DEER: a diffusion LM drafts a block, the autoregressive target keeps what it agrees with (exactly)."""
    if draft_steps < 1:
        raise LabError("draft_steps must be >= 1")
    runner = dec.lab.draft(draft)
    spec = spec_of(runner, f"deer's draft {draft!r}")
    return speculate(dec, DiffusionDraft(runner, spec, block_size or spec.block_size or 8, draft_steps))
