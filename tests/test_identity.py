"""Every method flagged lossless returns exactly transformers' greedy tokens at temperature 0."""
from __future__ import annotations

import pytest

import lab
from lab import registry

from .conftest import (
    IDENTITY_PROMPTS,
    IDENTITY_TOKENS,
    PROMPTS,
    hf_greedy,
    tiny_lab,
    use_draft,
)

LOSSLESS = sorted(name for name, m in registry.load_all().items() if m.lossless
                  and m.family != "diffusion")  # dLLM drafts and references: tests/dllm
# identity must hold for any draft and any tree: smaller trees than the defaults (still branching) keep CI's time
LIGHTER = {"layer-skip": {"exit_fraction": 0.25}, "lookahead": {"window": 3, "candidates": 3},
           "vocabtrim": {"exit_fraction": 0.25}, "clasp": {"length": 2}, "staged-sd": {"nodes": 8, "max_depth": 4},
           "dyspec": {"nodes": 8, "max_depth": 4}, "opt-tree": {"nodes": 8, "max_depth": 4},
           "specmemo": {"max_nodes": 8, "max_depth": 4}, "sequoia": {"budget": 6, "max_depth": 4},
           "recursive-sd": {"branching": "2,1,1"}, "specinfer": {"expansion": "2,1,1"},
           "specbranch": {"max_length": 4}, "bass": {"max_length": 4}, "tetris": {"depth": 3, "budget": 4}}


def test_every_lossless_method_is_tested_here():
    assert {"greedy", "sps", "pld"} <= set(LOSSLESS)


@pytest.mark.parametrize("name", LOSSLESS)
def test_identity_with_greedy_on_real_prompts(default_lab, reference, name):
    assert len(IDENTITY_PROMPTS) >= 20
    # draft-model methods draft with their default, the trained FastDraft (four layers: cheap and often right, so
    # the trees go deep); LIGHTER shrinks some trees so that CI's time stays bounded
    opts = dict(LIGHTER.get(name, {}))
    mismatched = []
    for p in IDENTITY_PROMPTS:
        result = default_lab.generate(name, p["prompt"], chat=p["chat"], max_new_tokens=IDENTITY_TOKENS, **opts)
        if result.tokens != reference[p["id"]]:
            mismatched.append(p["id"])
        assert result.trace.new_tokens == len(result.tokens)
    assert not mismatched, f"{name} differs from greedy on {mismatched}"


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("name", LOSSLESS)
def test_identity_on_tiny_architectures(name, arch):
    """Random models of three architectures, prompts with repeats so that lookup drafters fire."""
    tl = tiny_lab(arch, vocab_size=96, seed=1)
    use_draft(tl, tl.target.view([0]))  # the 2-layer tiny model drafts with its first layer
    for seed in range(4):
        prompt = [(seed * 7 + i * 3) % 50 + 1 for i in range(12)] * 2
        want = hf_greedy(tl.model, prompt, 24)
        got = tl.generate(name, prompt, max_new_tokens=24).tokens
        assert got == want, (arch, seed)


def test_speculation_really_happens(default_lab):
    """pld must accept drafts on a prompt that asks it to copy: more than one token per forward."""
    p = next(p for p in PROMPTS if p["id"] == "copy-list")
    trace = default_lab.generate("pld", p["prompt"], chat=True, max_new_tokens=IDENTITY_TOKENS).trace
    assert trace.tokens_per_forward > 1.5
    assert any(s.accepted for s in trace.steps)
