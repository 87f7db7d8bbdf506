"""FastDraft: speculative sampling with a small draft trained for the target.

Paper: "FastDraft: How to Train Your Draft" (Zafrir et al., 2024). The draft is a small model of the target's
architecture and tokenizer, aligned to the target on text the target wrote itself; decoding is then plain
speculative sampling (draft a chain, verify it in one target forward). The lab ships such a draft for the
default model (lab/drafts.py; trained by lab/train/fastdraft.py, its manifest in lab/data/fastdraft/), and it is
the default draft of every draft-model method on that model; `draft=FOLDER` takes another export of the recipe.
Chains are 1 draft long by default (the paper evaluates fixed draft lengths): on the H200 with the trimmed head below,
chains of 1 ran at 1.05-1.06x greedy by the median over the mixed suite at temperature 0 in three runs, against
1.00-1.04x for chains of 2 in the same runs (4 rounds on the device per call, `sps.draft_model_decoding`); at T = 1
0.52x against 0.47x, on copy-heavy prompts 1.07x against 0.99x (results/spec-gpu-2026-12-02-trimmed-*); `sps`'s
adaptive schedule ran at 0.94-0.96x (results/spec-gpu-2026-12-01-rounds-*). `adaptive=True` takes that schedule.
The draft trained longer (a second schedule, on greedy and sampled answers) accepts 0.626 of the target's greedy
tokens on held-out answers, and runs at 1.13x greedy on that suite, 0.79x of sampling at T = 1
(results/spec-gpu-2026-12-03-more-*). The draft's LM head keeps the 16,384 tokens the target writes most often
(VocabTrim, lab/vocab_trim.py: a draft step 0.187 of a target step against 0.203; acceptance 0.626 against 0.631 on
held-out answers); `draft='fastdraft:full'` keeps the whole head. `siblings=True` also verifies the draft's second
choice at each depth (lab/backends/fast/rounds.py): more tokens per forward, but slower on the H200 (0.87-0.89x
against 1.01-1.05x: results/spec-gpu-2026-12-02-siblings-t0*.json), so it is off by default.
"""
from __future__ import annotations

from ...registry import method
from .sps import DraftModel, draft_model_decoding


@method("fastdraft", family="speculative", lossless=True, training_free=False,
        paper="FastDraft: How to Train Your Draft",
        departures="the draft is four decoder layers of the target's own shape started from target layers 0, 1, "
                   "2 and 29 and sharing its embeddings, distilled for about eleven minutes in two schedules on the "
                   "target's greedy answers to 6,650 prompts and as many sampled at T = 1 (the paper pre-trains a "
                   "separate small model on a large corpus first); it exists for the "
                   "default model only; its LM head keeps the target's 16,384 most frequent tokens (VocabTrim; "
                   "draft='fastdraft:full' for the whole head); siblings=True verifies the draft's second choice at "
                   "each depth too (a static tree, at temperature 0)")
def fastdraft(dec, *, draft: str = "fastdraft", length: int = 1, adaptive: bool = False, siblings: bool = False):
    """Speculative sampling with a draft trained for the target (FastDraft): the shipped one for the default model,
    or the folder a `python -m lab train fastdraft --export` wrote. `siblings`: at temperature 0, the draft's
    second choice at each depth is verified beside the chain (a static tree)."""
    yield from draft_model_decoding(dec, DraftModel(dec.lab.draft(draft), length, adaptive, 0.0, siblings=siblings))
