"""The Path Matters: Learning a Token-Commitment Policy for Diffusion Language Models (Sun et al., 2026; TraceLock).

The idea: which proposed tokens to commit ("lock") at each step is a decision a small controller can learn from
the frozen dLLM's own decoding traces. Oracle commit times are unknown, so the supervision is future stability:
a prediction at step t is stable if it is the token the completed trace ends up with at that position. The
controller scores every active position from its trace state (how sure the model is, where the position sits,
how long its prediction has held) and the policy locks those it scores above a threshold.

Train the controller with `python -m lab train tracelock --model MODEL --out DIR` (lab/train/tracelock.py).
"""
from __future__ import annotations

import math

import torch

from ...errors import LabError
from ...registry import method
from .. import filters
from ..loop import Round, block_size_of, denoise


class TraceState:
    """Per masked position of the block, one row: the proposal's probability, the top-2 margin, the entropy (over
    log V), its place in the block, the masked positions to its left, the block's progress and the steps since its
    prediction last changed (both over the block size). Remembers predictions across the steps of a block."""

    names = ["confidence", "margin", "entropy", "place", "masked_left", "progress", "age"]

    def __init__(self, size: int):
        self.size = size
        self.block: int | None = None
        self.since: dict[int, tuple[int, int]] = {}  # position -> (its prediction, the step it first held)

    def __call__(self, r: Round) -> tuple[torch.Tensor, torch.Tensor]:
        if self.block != r.start:
            self.block, self.since = r.start, {}
        rows = r.block
        device = r.logits.device
        probs = torch.softmax(r.logits[rows].double(), -1)
        proposal = torch.tensor([r.tokens[j] for j in rows], device=device)
        top = probs.topk(2, -1).values
        entropy = -(probs * torch.log(probs.clamp_min(1e-300))).sum(-1) / math.log(probs.shape[-1])
        held = []
        for j in rows:
            p, token = r.window[j], r.tokens[j]
            if self.since.get(p, (None, 0))[0] != token:
                self.since[p] = (token, r.step)
            held.append(r.step - self.since[p][1])
        progress = 1 - len(rows) / (r.end - r.start)
        trace = [[(r.window[j] - r.start) / self.size, i / self.size, progress, age / self.size]
                 for i, (j, age) in enumerate(zip(rows, held))]
        x = torch.cat([torch.stack([probs.gather(-1, proposal[:, None])[:, 0], top[:, 0] - top[:, 1], entropy], 1),
                       torch.tensor(trace, dtype=torch.float64, device=device)], 1)
        return x.float(), torch.arange(len(rows), device=device)


@method("tracelock", family="diffusion", lossless=False, training_free=False,
        paper="The Path Matters: Learning a Token-Commitment Policy for Diffusion Language Models "
              "(Sun et al., 2026)",
        departures="Written from the paper's abstract (its code was not at hand). The controller is a small MLP on "
                   "seven hand-made features of each masked position (probability, top-2 margin, entropy, place in "
                   "the block, masked positions to its left, block progress, steps since its prediction last "
                   "changed) instead of the paper's scorer of variable-length trace states from projected hidden "
                   "states. Labels are the paper's future stability (the prediction equals the token the trace "
                   "finally commits there) on llada steps=0 trajectories (one token per step, low confidence) of "
                   "ShareGPT prompts outside the benchmark's held-out set; the trainer's --labels persistent also "
                   "asks that no later prediction differ. Locks every position of the current block scoring >= "
                   "threshold (0.9, the lab's choice) and always the surest one.")
def tracelock(dec, *, filter: str = "", threshold: float = 0.9, block_size: int = 0, cache: str = "auto"):
    """TraceLock: a controller trained on future-stability labels locks the positions it scores as stable."""
    if not 0 <= threshold <= 1:
        raise LabError(f"threshold={threshold!r} must be in [0, 1]")
    trained = filters.load("tracelock", filter, getattr(dec.lab, "name", ""))
    features = TraceState(block_size_of(dec, "tracelock", block_size))

    def pick(r: Round) -> list[int]:
        x, rows = features(r)
        return filters.accepted(torch.sigmoid(trained.logits(x)).flatten()[rows], r.block, r.confidence, threshold)

    return denoise(dec, pick, method="tracelock", block_size=block_size, cache=cache, confidence="probability")
