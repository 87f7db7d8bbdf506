"""Nothing lost when something fails, nothing shared that should not be: cancelled and failed runs leave the Lab
usable, one Lab serves two threads and interleaved or abandoned streams, a too-long request ends cleanly."""
from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from lab import registry
from lab.errors import LabError
from lab.registry import method
from lab.speculative.drafters.sps import DraftModel
from lab.speculative.loop import speculate

from .conftest import hf_greedy, tiny_lab, use_draft

PROMPTS = [[(seed * 7 + i * 3) % 50 + 1 for i in range(12)] * 2 for seed in range(3)]


class Failing(DraftModel):
    """A drafter that breaks after a few proposals (mid-run, with draft and target caches half-way)."""

    def propose(self, dec, root):
        if len(dec.tokens) > 6:
            raise RuntimeError("drafter broke")
        return super().propose(dec, root)


@pytest.fixture
def failing():
    @method("failing-sd", family="speculative", lossless=True, paper="(a test)")
    def failing_sd(dec, *, draft: str = "layers:1"):
        """Test only: sps whose drafter raises mid-run."""
        yield from speculate(dec, Failing(dec.lab.draft(draft), 4))
    yield
    registry.METHODS.pop("failing-sd", None)


@pytest.mark.parametrize("method_name", ["sps", "greedy", "lookahead"])
def test_a_cancelled_run_leaves_the_lab_usable(method_name):
    tl = tiny_lab(vocab_size=96, seed=1)
    use_draft(tl, tl.target.view([0]))
    want = hf_greedy(tl.model, PROMPTS[0], 20)
    n = []
    cut = tl.generate(method_name, PROMPTS[0], max_new_tokens=20, cancel=lambda: len(n) >= 3,
                      on_step=lambda s, t: n.append(s))
    assert cut.trace.stop == "cancelled" and cut.tokens == want[:len(cut.tokens)]
    assert tl.generate(method_name, PROMPTS[0], max_new_tokens=20).tokens == want


def test_a_failed_run_leaves_the_lab_usable(failing):
    tl = tiny_lab(vocab_size=96, seed=1)
    use_draft(tl, tl.target.view([0]))
    with pytest.raises(RuntimeError, match="drafter broke"):
        tl.generate("failing-sd", PROMPTS[1], max_new_tokens=20)
    for prompt in PROMPTS:
        assert tl.generate("sps", prompt, max_new_tokens=20).tokens == hf_greedy(tl.model, prompt, 20)


@pytest.mark.parametrize("method_name", ["greedy", "sps", "pld"])
def test_one_lab_in_two_threads_gives_what_each_gives_alone(method_name):
    tl = tiny_lab(vocab_size=96, seed=1)
    use_draft(tl, tl.target.view([0]))
    alone = [tl.generate(method_name, p, max_new_tokens=30).tokens for p in PROMPTS[:2]]
    got: dict = {}
    threads = [threading.Thread(target=lambda i=i: got.__setitem__(
        i, [tl.generate(method_name, PROMPTS[i], max_new_tokens=30).tokens for _ in range(3)])) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == {0: [alone[0]] * 3, 1: [alone[1]] * 3}


def test_interleaved_and_abandoned_streams_stay_correct():
    tl = tiny_lab(vocab_size=96, seed=1)
    use_draft(tl, tl.target.view([0]))
    want = [hf_greedy(tl.model, p, 16) for p in PROMPTS[:2]]
    a = tl.stream("sps", PROMPTS[0], max_new_tokens=16)
    b = tl.stream("greedy", PROMPTS[1], max_new_tokens=16)
    out = {0: [], 1: []}
    for sa, sb in zip(a, b):  # step by step, in turns, on one Lab
        out[0] += sa.committed
        out[1] += sb.committed
    out[0] += [t for s in a for t in s.committed]
    out[1] += [t for s in b for t in s.committed]
    assert [out[0], out[1]] == want
    abandoned = tl.stream("greedy", PROMPTS[2], max_new_tokens=16)
    first = next(abandoned).committed
    assert tl.generate("sps", PROMPTS[0], max_new_tokens=16).tokens == want[0]  # runs while the other waits
    resumed = first + [t for s in abandoned for t in s.committed]
    assert resumed == hf_greedy(tl.model, PROMPTS[2], 16)


def test_too_long_a_request_is_one_clear_line(tmp_path):
    tl = tiny_lab(vocab_size=96)
    with pytest.raises(LabError, match="exceeds the model's context of 512"):
        tl.generate("greedy", [1] * 500, max_new_tokens=20)
    prompt = "word " * 9000  # far past the default model's 8192 positions
    proc = subprocess.run([sys.executable, "-m", "lab", "generate", "--method", "greedy", "--prompt", prompt,
                           "--max-new-tokens", "8"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "context" in proc.stderr
