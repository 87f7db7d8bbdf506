"""Tiny diffusion LMs and prompts for the dLLM tests."""
from __future__ import annotations

import random
from functools import lru_cache

import torch

import lab
from lab.dllm import tiny_dllm

torch.set_num_threads(1)


def dllm_lab(attention: str = "block", shift: bool = True, block_size: int = 4, seed: int = 0) -> lab.Lab:
    return lab.Lab(model_obj=tiny_dllm(attention, shift=shift, block_size=block_size, seed=seed), tokenizer=None)


def random_prompts(n: int, seed: int = 0, vocab: int = 64) -> list[list[int]]:
    rnd = random.Random(seed)
    return [[rnd.randrange(4, vocab) for _ in range(rnd.randrange(1, 9))] for _ in range(n)]


def repeating_prompts(n: int, seed: int = 0, vocab: int = 64) -> list[list[int]]:
    """Prompts that repeat a span (a random span, a few other tokens, then the span's start again): prompt-lookup
    guesses fire on them."""
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        span = [rnd.randrange(4, vocab) for _ in range(rnd.randrange(2, 7))]
        other = [rnd.randrange(4, vocab) for _ in range(rnd.randrange(0, 3))]
        out.append(span + other + span[:rnd.randrange(1, len(span) + 1)])
    return out


@lru_cache(maxsize=1)
def default_tokenizer():
    from transformers import AutoTokenizer

    from lab import models

    return AutoTokenizer.from_pretrained(models.default_path())


def text_dllm() -> lab.Lab:
    """A tiny random block-diffusion LM that speaks the default model's vocabulary (prompts and outputs are text)."""
    tok = default_tokenizer()
    return lab.Lab(model_obj=tiny_dllm("block", vocab_size=len(tok), hidden=32, block_size=4), tokenizer=tok)


def text_ar() -> lab.Lab:
    """A tiny random autoregressive model with the default model's vocabulary (a stand-in judge)."""
    from lab.models import tiny

    tok = default_tokenizer()
    return lab.Lab(model_obj=tiny("llama", vocab_size=len(tok), hidden=32), tokenizer=tok)
