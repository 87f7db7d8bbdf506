"""Train Learn2PD's filter for a dLLM ("Learning to Parallel", Bao et al., 2025), on the CPU in minutes.

    python -m lab train learn2pd --model MODEL --out DIR [--prompts 48] [--max-new-tokens 64] [options]

The filter maps the block's confidence vector to a logit per position (one hidden layer as wide as the block: ~2K
parameters at block 32, as in the paper); labels: is the current prediction the token `llada steps=0` finally
commits there. The recipe and its options: lab/train/commitment.py. Use it as learn2pd:filter=DIR.
"""
from __future__ import annotations

from ..dllm.policies.learn2pd import BlockConfidence
from .commitment import Recipe
from .commitment import main as train

RECIPE = Recipe("learn2pd", BlockConfidence, outputs=lambda size: size, hidden=lambda size: size)


def main(argv: list[str]) -> dict:
    return train(argv, RECIPE)
