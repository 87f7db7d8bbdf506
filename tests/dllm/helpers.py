"""Tiny diffusion LMs and prompts for the dLLM tests."""
from __future__ import annotations

import random

import torch

import lab
from lab.dllm import tiny_dllm

torch.set_num_threads(1)


def dllm_lab(attention: str = "block", shift: bool = True, block_size: int = 4, seed: int = 0) -> lab.Lab:
    return lab.Lab(model_obj=tiny_dllm(attention, shift=shift, block_size=block_size, seed=seed), tokenizer=None)


def random_prompts(n: int, seed: int = 0, vocab: int = 64) -> list[list[int]]:
    rnd = random.Random(seed)
    return [[rnd.randrange(4, vocab) for _ in range(rnd.randrange(1, 9))] for _ in range(n)]
