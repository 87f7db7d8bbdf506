"""Learning to Parallel: Accelerating Diffusion Large Language Models via Adaptive Parallel Decoding
(Bao et al., 2025; Learn2PD).

The idea: the oracle "extremely greedy" schedule would commit every position the moment its prediction equals
the token finally decoded there. A small filter model, trained after the fact on reference trajectories, learns
to tell those positions from the block's confidence scores; each forward commits all the masked positions it
accepts. End-of-Text Prediction (EoTP): once the end-of-text token is committed, everything after it is padding,
so the rest of the block is filled with it and decoding stops when the text up to it is complete.

Train the filter with `python -m lab train learn2pd --model MODEL --out DIR` (lab/train/learn2pd.py).
"""
from __future__ import annotations

import torch

from ...errors import LabError
from ...registry import method
from .. import filters
from ..loop import Round, block_size_of, denoise


class BlockConfidence:
    """The filter's input: the confidence at each position of the block (1 where committed or past the canvas),
    one row a step; each masked row's score is the output at its place in the block (in the flattened output)."""

    def __init__(self, size: int):
        self.size = size
        self.names = [f"confidence[{i}]" for i in range(size)]

    def __call__(self, r: Round) -> tuple[torch.Tensor, torch.Tensor]:
        x = [1.0] * self.size
        places = [r.window[j] - r.start for j in r.block]
        for j, place in zip(r.block, places):
            x[place] = r.confidence[j]
        device = r.logits.device
        return torch.tensor([x], dtype=torch.float32, device=device), torch.tensor(places, device=device)


def end_of_text(r: Round, rows: list[int], eos: set[int]) -> list[int]:
    """EoTP: when a row to commit is the end of text, every masked row of the block after it is filled with it."""
    ends = [j for j in rows if r.tokens[j] in eos]
    if not ends:
        return rows
    first = min(ends, key=lambda j: r.window[j])
    after = [j for j in r.block if r.window[j] > r.window[first]]
    for j in after:
        r.fill[j] = r.tokens[first]
    return sorted(set(rows) | set(after))


@method("learn2pd", family="diffusion", lossless=False, training_free=False,
        paper="Learning to Parallel: Accelerating Diffusion Large Language Models via Adaptive Parallel Decoding "
              "(Bao et al., 2025)",
        departures="Written from the paper's description (its code was not at hand). The filter is an MLP with one "
                   "hidden layer as wide as the block, from the block's confidence vector (committed positions read "
                   "1) to a logit per position, trained with binary cross-entropy on llada steps=0 trajectories "
                   "(one token per step, low confidence) of ShareGPT prompts outside the benchmark's held-out set, "
                   "label: the current argmax is the token finally committed there. The surest position is always "
                   "committed too, so a step never stalls; threshold 0.9 is the lab's choice. EoTP fills the rest of "
                   "the block after a committed end-of-text token with it; the driver stops once the text up to it "
                   "is complete, so later blocks are never decoded.")
def learn2pd(dec, *, filter: str = "", threshold: float = 0.9, eotp: bool = True, block_size: int = 0,
             cache: str = "auto"):
    """Learn2PD: commit every masked position a trained filter says is already final; stop at the end of text."""
    if not 0 <= threshold <= 1:
        raise LabError(f"threshold={threshold!r} must be in [0, 1]")
    trained = filters.load("learn2pd", filter, getattr(dec.lab, "name", ""))
    size = block_size_of(dec, "learn2pd", block_size)
    if trained.meta.get("block_size") != size:
        raise LabError(f"learn2pd: the filter was trained on blocks of {trained.meta.get('block_size')}, this run "
                       f"decodes blocks of {size}: pass block_size={trained.meta.get('block_size')} or train a "
                       "filter for this model")
    features = BlockConfidence(size)

    def pick(r: Round) -> list[int]:
        x, places = features(r)
        scores = torch.sigmoid(trained.logits(x)).flatten()[places]
        rows = filters.accepted(scores, r.block, r.confidence, threshold)
        return end_of_text(r, rows, dec.eos) if eotp else rows

    return denoise(dec, pick, method="learn2pd", block_size=block_size, cache=cache, confidence="probability")
