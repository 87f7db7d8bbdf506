"""dllm-default (the default model turned into a block-diffusion LM, lab/data/dllm-default/) on the CPU, as CI runs
it: every diffusion policy runs on it; freedave and ssd-dllm give one-token-per-step decoding's tokens exactly (in
any commit order; ssd-dllm with prompt-lookup guesses too), and
deer gives the default model's greedy tokens exactly (transformers' generate), on the 20 identity prompts."""
from __future__ import annotations

import json

import pytest

import lab
from lab import registry
from lab.dllm import models as dllm_models

from ..conftest import IDENTITY_PROMPTS, IDENTITY_TOKENS

BLOCK = 8  # a trained block size (4, 8, 16 and 32 were); small blocks keep the reference's forwards cheap


@pytest.fixture(scope="module")
def dllm() -> lab.Lab:
    return lab.Lab("dllm-default")


@pytest.fixture(scope="module")
def one_per_step(dllm) -> dict:
    return {p["id"]: dllm.generate("llada", p["prompt"], chat=p["chat"], max_new_tokens=IDENTITY_TOKENS, steps=0,
                                   block_size=BLOCK).trace for p in IDENTITY_PROMPTS}


def test_dllm_default_is_the_shipped_block_diffusion_model(dllm, default_lab):
    spec = dllm.model.dllm
    assert spec.attention == "block" and spec.shift and spec.mask_id == 3
    assert dllm.tokenizer.get_vocab() == default_lab.tokenizer.get_vocab()
    manifest = json.loads((dllm_models.SHIPPED / dllm_models.MANIFEST).read_text())
    assert manifest["steps"] > 0 and manifest["validation_loss"] < manifest["validation_loss_start"] / 2


@pytest.mark.parametrize("method", ["freedave", "ssd-dllm"])
def test_lossless_policies_give_one_token_per_step_decodings_tokens(dllm, one_per_step, method):
    saved = 0
    for p in IDENTITY_PROMPTS:
        trace = dllm.generate(method, p["prompt"], chat=p["chat"], max_new_tokens=IDENTITY_TOKENS,
                              block_size=BLOCK).trace
        ref = one_per_step[p["id"]]
        assert trace.tokens == ref.tokens, p["id"]
        assert trace.forwards <= ref.forwards, p["id"]
        saved += ref.forwards - trace.forwards
    assert saved > 0  # they did verify several decisions in one forward somewhere


def test_freedave_left_to_right_is_left_to_right_one_token_per_step(dllm):
    """The left-to-right reference (llada remasking=left_to_right) and freedave verifying against it: the same tokens,
    and on this trained model (unlike a random one) most forwards saved: its one-forward view of a block often is
    what it then writes left to right."""
    mine = theirs = 0
    for p in IDENTITY_PROMPTS[:10]:  # (the 20-prompt identity of freedave itself is the test above)
        ref = dllm.generate("llada", p["prompt"], chat=p["chat"], max_new_tokens=IDENTITY_TOKENS, steps=0,
                            block_size=BLOCK, remasking="left_to_right").trace
        got = dllm.generate("freedave", p["prompt"], chat=p["chat"], max_new_tokens=IDENTITY_TOKENS, block_size=BLOCK,
                            drafts=BLOCK, order="left-to-right").trace
        assert got.tokens == ref.tokens, p["id"]
        mine, theirs = mine + got.forwards, theirs + ref.forwards
    print(f"freedave left-to-right: {mine} forwards vs {theirs}")
    assert mine < 0.75 * theirs


def test_ssd_dllm_lookup_is_left_to_right_one_token_per_step_and_copies(dllm):
    """Prompt-lookup guesses on the trained model: the reference's tokens exactly, and some guesses accepted that the
    draft's own forward did not predict (what lookup adds)."""
    new = 0
    for p in IDENTITY_PROMPTS[:10]:
        ref = dllm.generate("llada", p["prompt"], chat=p["chat"], max_new_tokens=IDENTITY_TOKENS, steps=0,
                            block_size=BLOCK, remasking="left_to_right").trace
        got = dllm.generate("ssd-dllm", p["prompt"], chat=p["chat"], max_new_tokens=IDENTITY_TOKENS, block_size=BLOCK,
                            drafts=BLOCK, order="left-to-right", lookup=3).trace
        assert got.tokens == ref.tokens, p["id"]
        new += sum(s.info["lookup_new"] for s in got.steps)
    print(f"ssd-dllm lookup=3: {new} accepted guesses the draft had not predicted")
    assert new > 0


def test_ssd_dllm_leftmost_sure_is_its_one_token_per_step_reference(dllm):
    """The order of the bench's best lossless setting (leftmost-2@0.7: the left-most row when its confidence is at least
    0.7, else the surer of the two left-most): ssd-dllm gives llada leftmost=2 sure=0.7's tokens exactly, in well
    under its forwards (16 tokens in two blocks of 8: at most 4 per forward here)."""
    mine = theirs = 0
    for p in IDENTITY_PROMPTS[:4]:
        ref = dllm.generate("llada", p["prompt"], chat=p["chat"], max_new_tokens=IDENTITY_TOKENS, block_size=BLOCK,
                            leftmost=2, sure=0.7).trace
        got = dllm.generate("ssd-dllm", p["prompt"], chat=p["chat"], max_new_tokens=IDENTITY_TOKENS, block_size=BLOCK,
                            drafts=BLOCK, order="leftmost-2@0.7", lookup=3).trace
        assert got.tokens == ref.tokens, p["id"]
        mine, theirs = mine + got.forwards, theirs + ref.forwards
    print(f"ssd-dllm leftmost-2@0.7: {mine} forwards vs {theirs}")
    assert mine < 0.7 * theirs


def test_deer_gives_the_default_models_greedy_tokens(default_lab, dllm, reference):
    default_lab._drafts.setdefault("dllm-default", dllm.target)  # the dLLM already loaded serves as the draft
    accepted = 0
    for p in IDENTITY_PROMPTS:
        trace = default_lab.generate("deer", p["prompt"], chat=p["chat"], max_new_tokens=IDENTITY_TOKENS,
                                     draft="dllm-default").trace
        assert trace.tokens == reference[p["id"]], p["id"]
        accepted += sum(o == "draft" for s in trace.steps for o in s.origin)
    assert accepted >= len(IDENTITY_PROMPTS)  # the dLLM's drafts were accepted, not only the verifier's tokens


def test_every_diffusion_policy_runs_on_dllm_default(dllm, default_lab):
    default_lab._drafts.setdefault("dllm-default", dllm.target)
    prompt = "Copy this list, but remove \"dog\". Answer with the list only.\n\ncat, dog, melon, zebra"
    names = sorted(n for n, m in registry.load_all().items() if m.family == "diffusion")
    assert len(names) >= 14
    for name in names:
        runner = default_lab if name == "deer" else dllm
        trace = runner.generate(name, prompt, chat=True, max_new_tokens=12).trace
        assert 0 < trace.new_tokens <= 12 and trace.forwards >= 1, name
        assert trace.text.strip(), name
