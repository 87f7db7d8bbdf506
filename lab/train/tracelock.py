"""Train TraceLock's controller for a dLLM ("The Path Matters", Sun et al., 2026), on the CPU in minutes.

    python -m lab train tracelock --model MODEL --out DIR [--prompts 48] [--labels final | persistent] [options]

The controller scores each masked position from seven trace-state features (lab/dllm/policies/tracelock.py) with
an MLP of 16 hidden units; labels: future stability of the prediction on `llada steps=0` trajectories. The recipe
and its options: lab/train/commitment.py. Use it as tracelock:filter=DIR.
"""
from __future__ import annotations

from ..dllm.policies.tracelock import TraceState
from .commitment import Recipe
from .commitment import main as train

RECIPE = Recipe("tracelock", TraceState, outputs=lambda size: 1, hidden=lambda size: 16)


def main(argv: list[str]) -> dict:
    return train(argv, RECIPE)
