"""Shared fixtures: the default model's Lab, the real prompts, transformers' own greedy outputs."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

# Triton kernels run in its interpreter on CPU tensors; set before lab.kernels (imported by the fast backend) is
os.environ.setdefault("TRITON_INTERPRET", "1")

import lab  # noqa: E402
from lab.models import tiny  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = [json.loads(line) for line in (ROOT / "lab" / "data" / "prompts.jsonl").read_text().splitlines() if line.strip()]
IDENTITY_PROMPTS = PROMPTS[:20]  # the token-identity tests: 20 real prompts (chat, copy, code, math ...) ...
IDENTITY_TOKENS = 16  # ... x 16 new tokens per lossless method keeps CI under its time budget


@pytest.fixture(scope="session")
def default_lab() -> lab.Lab:
    torch.manual_seed(0)
    return lab.Lab("default")


@pytest.fixture(scope="session")
def prompts() -> list[dict]:
    return PROMPTS


def hf_greedy(model, ids: list[int], max_new_tokens: int) -> list[int]:
    """transformers' generate(do_sample=False): the reference for every lossless method."""
    x = torch.tensor([ids], device=model.device)
    out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, len(ids):].tolist()


@pytest.fixture(scope="session")
def reference(default_lab) -> dict[str, list[int]]:
    """Greedy tokens from transformers' generate for every real prompt, computed once."""
    return {p["id"]: hf_greedy(default_lab.model, default_lab.encode(p["prompt"], p["chat"]), IDENTITY_TOKENS)
            for p in IDENTITY_PROMPTS}


def tiny_lab(arch: str = "llama", **kwargs) -> lab.Lab:
    model = tiny(arch, **kwargs)
    return lab.Lab(model_obj=model, tokenizer=None)


def use_draft(lab_: lab.Lab, runner) -> None:
    """Make every method's default draft model `runner` (tiny targets have too few layers for 'layers:N')."""
    for info in lab.registry.load_all().values():
        spec = info.options.get("draft")
        if isinstance(spec, str):
            lab_._drafts[spec] = runner
