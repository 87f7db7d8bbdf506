"""DEER: Draft with Diffusion, Verify with Autoregressive Models (2025).

The idea: a diffusion LM drafts a whole block of next tokens in one (or a few) denoising steps, free of the
left-to-right chain that limits autoregressive drafters; the autoregressive target verifies the block in one
forward and keeps the longest prefix it agrees with, plus its own next token. The output is the target's
greedy output exactly; the dLLM only decides how many tokens each target forward yields.
"""
from __future__ import annotations

from ...errors import LabError
from ...registry import method
from ...trace import Step
from .. import rules
from ..denoiser import Denoiser
from ..model import spec_of


def draft_block(den: Denoiser, context: list[int], size: int, steps: int) -> list[int]:
    """The dLLM's greedy draft of `size` tokens after `context`, in `steps` low-confidence steps."""
    den.length = size
    den.reset(context)
    for n in rules.transfer_counts(size, steps):
        window, logits = den.predict(0, size)
        tokens = logits.argmax(-1)
        conf = rules.confidence(logits, tokens)
        rows = [j for j, p in enumerate(window) if den.canvas[p] == den.mask]
        for r in rules.rank(conf, rows)[:n]:
            den.canvas[window[r]] = int(tokens[r])
    return list(den.canvas)


@method("deer", family="diffusion", lossless=True,
        paper="DEER: Draft with Diffusion, Verify with Autoregressive Models (2025)",
        departures="Greedy verification only (temperature 0); the draft block is denoised by low-confidence remasking "
                   "in draft_steps steps (1: all positions from one forward).")
def deer(dec, *, draft: str = "dllm-default", block_size: int = 0, draft_steps: int = 1):
    """DEER: a diffusion LM drafts a block in one step, the autoregressive target keeps what it agrees with."""
    if not dec.greedy:
        raise LabError("deer verifies greedily: use temperature 0")
    if draft_steps < 1:
        raise LabError("draft_steps must be >= 1")
    drafter = dec.lab.draft(draft)
    spec = spec_of(drafter, f"deer's draft {draft!r}")
    size = block_size or spec.block_size or 8
    den = Denoiser(drafter, spec, dec.prompt, size, size, "prefix")
    target = dec.target
    pending = int(dec.prefill().argmax())  # the target's first token, from the prefill: no forward
    yield Step(committed=[pending], origin=["plain"], forwards=0)
    while not dec.done:
        k = max(0, min(size, dec.remaining - 1))
        before = drafter.forwards
        proposal = draft_block(den, dec.context, k, min(draft_steps, k)) if k else []
        logits = target.forward([pending] + proposal).logits  # row i: the target's next token after token i
        choice = logits.argmax(-1).tolist()
        accepted = 0
        while accepted < len(proposal) and proposal[accepted] == choice[accepted]:
            accepted += 1
        target.keep(list(range(1 + accepted)))
        pending = choice[accepted]
        yield Step(committed=proposal[:accepted] + [pending], origin=["draft"] * accepted + ["bonus"],
                   proposed=proposal, parents=list(range(-1, len(proposal) - 1)), accepted=list(range(accepted)),
                   bonus=pending, forwards=1, draft_forwards=drafter.forwards - before)
