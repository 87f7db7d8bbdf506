"""DuoDecoding: the draft drafts on the CPU while the target verifies on the GPU, several sequences when unsure.

Paper: "DuoDecoding: Hardware-aware Heterogeneous Speculative Decoding with Dynamic Multi-Sequence Drafting"
(Lv et al., 2025). What it adds to PEARL's parallel pipeline (lab/speculative/overlap.py, shared with `pearl`):
- heterogeneous hardware: the draft always runs on the CPU (a float32 CPU copy of the draft weights, built
  once from the model object, when the target sits on a GPU) in a thread beside the target's forward, so the
  two overlap without sharing a device; each Step's info["timeline"] says when each ran (the target's forward
  timed by CUDA events on its stream, the draft's forwards by the host clock). `parallel=False` drafts before
  each target forward instead (same tokens), to compare;
- dynamic multi-sequence drafting: the draft's confidence decides how many sequences it drafts. With t1 its
  first token and t2 the token after it, every other first token x more likely than the draft's own two-token
  guess, p(x) > p(t1) p(t2 | t1), starts a sequence of its own (up to `max_sequences`), and the draft budget
  is split among them. The target checks all first tokens as siblings (exact multi-round rejection); the
  sequence whose first token is accepted goes on as the next round's pending chain;
- a hardware-aware draft budget: `budget=0` measures how many draft forwards fit in one target forward.

Departures: the paper drafts with llama.cpp in a second process and only handles greedy checks of the extra
first tokens; here the draft is a torch model in a thread, the sequences grow level by level in one draft
forward per level (a tree), and at T > 0 the extra first tokens are drawn without replacement from the draft
(recursive rejection sampling), so sampling stays exact too. The default budget is fixed (8) for reproducible
seeds; the paper's timing-based budget is `budget=0`.
"""
from __future__ import annotations

import weakref

import torch

from ...backends import Backend
from ...decoding import Decoding
from ...errors import LabError
from ...registry import method
from ..expand import TreeGrower, draft_token, sample_children
from ..loop import speculate
from ..overlap import AheadDrafter, Draft, Pace

_CPU_COPIES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # weights -> {layers: CPU copy}


def cpu_draft(runner: Backend) -> Backend:
    """The draft itself when it is on the CPU, else a fork of its float32 CPU copy (copied once per weights
    and layer subset)."""
    if runner.device.type == "cpu":
        return runner
    copies = _CPU_COPIES.setdefault(runner.weights, {})
    layers = runner.describe().layer_subset
    if layers not in copies:
        copies[layers] = runner.on("cpu", torch.float32)
    return copies[layers].fork()


def extra_starts(probs: torch.Tensor, first: int, second_prob: float, most: int) -> list[int]:
    """Other first tokens more likely than the draft's two-token guess (the paper's rule), most likely first."""
    joint = float(probs[first]) * second_prob
    values, tokens = torch.topk(probs, min(most + 1, probs.shape[-1]))
    return [int(t) for v, t in zip(values, tokens) if int(t) != first and float(v) > joint][:most]


class MultiSequence(AheadDrafter):
    """Drafts 1..max_sequences sequences after the context, one draft forward per level (in the draft thread)."""

    def __init__(self, dec: Decoding, runner: Backend, budget: int, max_sequences: int, parallel: bool = True):
        super().__init__(runner, Pace(guess=8), parallel)
        self.dec, self.budget, self.max_sequences = dec, budget, max_sequences

    def draft(self, context: list[int], room: int) -> list[list[Draft]]:
        dec = self.dec
        budget = min(room, self.budget if self.budget > 0 else self.pace.fit(2, 16))
        grower = TreeGrower(self.runner, context)
        first = draft_token(dec, grower.root_logits)
        sequences, tails = [[first]], [grower.add(first[0], -1, first[1], first[2])]
        if budget > 1:
            grower.run(tails)
            second = draft_token(dec, grower.logits[tails[0]])
            probs = grower.root_logits.float().softmax(-1)
            others = extra_starts(probs, first[0], second[1], self.max_sequences - 1)
            if others and not dec.greedy:  # as many, drawn without replacement from what the first draw left
                rest = dec.probs(grower.root_logits).clone()
                rest[first[0]] = 0.0
                drawn = sample_children(rest, len(others), dec.rng, replacement=False)
                starts = [(t, float(probs[t]), q) for t, q in drawn]
            else:
                starts = [(t, float(probs[t]), None) for t in others]
            length = max(1, budget // (1 + len(starts)))
            for start in starts:
                sequences.append([start])
                tails.append(grower.add(start[0], -1, start[1], start[2]))
            if length > 1:
                sequences[0].append(second)
                tails[0] = grower.add(second[0], tails[0], second[1], second[2])
            while True:
                growing = [i for i, seq in enumerate(sequences) if len(seq) < length]
                if not growing:
                    break
                grower.run([tails[i] for i in growing if tails[i] not in grower.logits])
                for i in growing:
                    token = draft_token(dec, grower.logits[tails[i]])
                    sequences[i].append(token)
                    tails[i] = grower.add(token[0], tails[i], token[1], token[2])
        grower.done()
        return sequences


@method("duodecoding", family="speculative", lossless=True, training_free=True,
        paper="DuoDecoding: Hardware-aware Heterogeneous Speculative Decoding with Dynamic Multi-Sequence Drafting",
        departures="the draft is a torch model in a thread beside the target (the paper: llama.cpp in a second "
                   "process); sequences grow one draft forward per level (a tree); at T > 0 extra first tokens are "
                   "drawn without replacement and verified by recursive rejection (the paper checks them "
                   "greedily); fixed budget 8 by default (budget=0 measures it); the default draft is the lab's trained FastDraft on the default model (four layers of its shape, not a separate small model) and the target's first half of layers, untrained, on other models")
def duodecoding(dec, *, draft: str = "default", budget: int = 8, max_sequences: int = 4, parallel: bool = True):
    """DuoDecoding: a CPU draft in parallel with the target; more draft sequences when the draft is unsure.
    `parallel=False`: the draft runs before each target forward instead (to compare)."""
    if budget < 0 or max_sequences < 1:
        raise LabError(f"duodecoding: budget must be >= 0 (0 measures it) and max_sequences >= 1, "
                       f"got budget={budget}, max_sequences={max_sequences}")
    if not isinstance(parallel, bool):
        raise LabError(f"duodecoding: parallel must be true or false, got {parallel!r}")
    yield from speculate(dec, MultiSequence(dec, cpu_draft(dec.lab.draft(draft)), budget, max_sequences, parallel))
