"""VOCABTRIM: Vocabulary Pruning for Efficient Speculative Decoding in LLMs.

The one idea: a drafter's LM head only needs the tokens the target actually tends to produce. Restricting it
to a frequent-token subset cuts the drafting cost (the head is a large share of a small drafter: 28M of
SmolLM2-135M's parameters) for a small loss in acceptance. Here the drafter is an early exit (the target's first
layers on its own KV cache, as in layer-skip) whose head covers only the subset; its q is 0 outside the subset,
so the verification stays exact.

The subset: the `keep` tokens the target is most expected to produce on a calibration set (the sum of its
next-token distributions, teacher-forced over the prompts of lab/data/prompts.jsonl, one forward per prompt,
computed once per model), plus every token of the prompt and the EOS tokens. A model without a tokenizer
calibrates on the prompt alone.

Departure from the paper: VocabTrim counts the tokens in the target's (or drafter's) generated outputs on a
calibration dataset; one teacher-forced forward per prompt stands in for generation (expected counts of what
the target would sample at each prompt position), so that calibration takes seconds on a CPU.
"""
from __future__ import annotations

import json
import weakref
from importlib import resources

import torch

from ...backends import Backend
from ...decoding import Decoding
from ...errors import LabError
from ...registry import method
from ...tree import Tree
from ..drafter import Drafter
from ..loop import speculate
from ..self_draft import chain_from_view, exit_layer

_CALIBRATED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> expected token counts [V]


def expected_counts(target: Backend, sequences: list[list[int]]) -> torch.Tensor:
    """Sum over every position of `sequences` of the target's next-token distribution (T = 1): float [V]."""
    runner = target.fork()  # its own cache: the target's stays untouched
    total = torch.zeros(target.vocab_size)
    for ids in sequences:
        runner.rollback(0)
        total += runner.forward(ids).logits.softmax(-1).sum(0).cpu()
    return total


def calibration_counts(dec: Decoding) -> torch.Tensor:
    """Expected counts over the shipped prompts (cached per model), or over this prompt without a tokenizer."""
    if dec.tokenizer is None or dec.lab is None:
        return expected_counts(dec.target, [dec.prompt])
    model = dec.target.weights
    if model not in _CALIBRATED:
        rows = [json.loads(line) for line in
                resources.files("lab.data").joinpath("prompts.jsonl").read_text().splitlines() if line.strip()]
        chat = bool(getattr(dec.tokenizer, "chat_template", None))  # base models: the prompts as plain text
        _CALIBRATED[model] = expected_counts(dec.target, [dec.lab.encode(r["prompt"], r["chat"] and chat)
                                                          for r in rows])
    return _CALIBRATED[model]


def trimmed_vocabulary(dec: Decoding, keep: int) -> torch.Tensor:
    """Sorted token ids of the drafter's head: the `keep` most expected tokens, the prompt's tokens, EOS."""
    counts = calibration_counts(dec)
    top = torch.topk(counts, min(keep, counts.numel())).indices.tolist()
    ids = set(top) | set(dec.prompt) | {e for e in dec.eos if 0 <= e < counts.numel()}
    return torch.tensor(sorted(ids), dtype=torch.long)


class TrimmedHead(Drafter):
    """Early-exit chains whose LM head covers only `vocab`."""

    def __init__(self, dec: Decoding, keep: int, exit_fraction: float, length: int):
        if keep < 1 or length < 1:
            raise LabError("vocabtrim needs keep >= 1 and length >= 1")
        self.vocab = trimmed_vocabulary(dec, keep)
        self.view = dec.target.draft_on_cache(range(exit_layer(dec.target.num_layers, exit_fraction)))
        self.length = length
        self.info = {"draft_vocab": int(self.vocab.numel()), "vocab": dec.target.vocab_size,
                     "exit_layer": len(self.view.layers)}

    @property
    def forwards(self) -> int:
        return self.view.forwards

    def propose(self, dec: Decoding, root: int) -> Tree:
        return chain_from_view(dec, self.view, root, min(self.length, dec.remaining), self.vocab)


@method("vocabtrim", family="speculative", lossless=True, training_free=True,
        paper="VOCABTRIM: Vocabulary Pruning for Efficient Speculative Decoding in LLMs",
        departures="calibration counts the target's expected next-token distribution on teacher-forced prompts "
                   "(one forward each) instead of generating outputs on a calibration set")
def vocabtrim(dec, *, keep: int = 4096, exit_fraction: float = 0.5, length: int = 4):
    """Early-exit self-speculation whose draft LM head keeps only frequent tokens (q = 0 elsewhere)."""
    yield from speculate(dec, TrimmedHead(dec, keep, exit_fraction, length))
