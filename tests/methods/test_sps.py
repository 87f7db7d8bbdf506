"""sps at temperature 0: each drafted chain is the draft model's own greedy continuation of the context, with its
probabilities (the chain runs as bursts of steps, `Backend.greedy_chain`, on a GPU)."""
from __future__ import annotations

import pytest

from ..conftest import tiny_lab, use_draft


def test_each_chain_is_the_drafts_greedy_continuation():
    tl = tiny_lab("llama", vocab_size=96, seed=3)
    draft = tl.target.view([0])
    use_draft(tl, draft)
    prompt = [(i * 5) % 40 + 1 for i in range(10)]
    trace = tl.generate("sps", prompt, max_new_tokens=24, length=3).trace
    steps = [s for s in trace.steps if s.proposed]
    assert len(steps) > 3 and any(len(s.accepted) < len(s.proposed) for s in steps)  # rejections too
    done = []
    by_hand = tl.target.view([0]).fork()
    for step in trace.steps:
        if step.proposed:
            context = prompt + done
            assert step.parents == list(range(-1, len(step.proposed) - 1))
            logits, want, probs = by_hand.prefill(context), [], []
            for _ in step.proposed:  # the draft's argmax loop, by hand
                row = logits.float().softmax(-1)
                want.append(int(row.argmax()))
                probs.append(float(row.max()))
                logits = by_hand.decode(want[-1])
            assert step.proposed == want
            assert step.draft_probs == pytest.approx(probs, abs=1e-4)  # the trace keeps 4 digits
        done += step.committed
