"""Beam search with a length penalty, the way transformers' `generate(num_beams=...)` runs it.

Each step keeps the best `2 * beams` continuations of all beams; those that end (EOS or the length
limit) among the top `beams` join the finished hypotheses, scored by sum of log-probs / length ** penalty;
the best unfinished `beams` continue. Search stops when no running beam can beat the worst finished one
(or, with early_stopping, once `beams` hypotheses are finished). At temperature > 0 the continuations are
sampled instead of taken in order (beam sampling). Paper: "Sequence to Sequence Learning with Neural
Networks" (Sutskever et al., 2014) for beam search in neural decoding; the length penalty is GNMT's idea.
"""
from __future__ import annotations

import time

import torch

from ..errors import LabError
from ..registry import method
from ..trace import Step

NEG = -1.0e9


@method("beam", family="search", lossless=False, paper="Sequence to Sequence Learning with Neural Networks",
        departures="none: transformers' beam search (GNMT length penalty, early stopping as in generate); at T > 0 "
                   "the continuations are sampled (beam sampling)")
def beam(dec, *, beams: int = 4, length_penalty: float = 1.0, early_stopping: bool = False):
    """Beam search (beam sampling at temperature > 0) with a length penalty on finished hypotheses."""
    if beams < 1:
        raise LabError("beams must be >= 1")
    eos = sorted(dec.eos)
    keep = max(2, 1 + len(eos)) * beams
    runner, limit = dec.target.for_rows(), dec.max_new_tokens
    start = time.perf_counter()
    logits = runner.prefill_rows([dec.prompt] * beams)
    dec.prefill_s = time.perf_counter() - start
    device = logits.device
    running = [[] for _ in range(beams)]
    running_scores = torch.full((beams,), NEG, device=device)
    running_scores[0] = 0.0
    done_seqs: list[list[int]] = [[] for _ in range(beams)]
    done_scores = torch.full((beams,), NEG, device=device)
    done_flags = torch.zeros(beams, dtype=torch.bool, device=device)
    improvable, length, forwards = True, 0, 0
    top_mask = torch.arange(keep, device=device) < beams
    while True:
        logp = torch.log_softmax(logits, -1)
        if not dec.greedy:
            logp = logp / dec.sampling.temperature
        flat = (logp + running_scores[:, None]).reshape(-1)
        if dec.greedy:
            top_scores, top_idx = torch.topk(flat, keep)
        else:
            top_idx = torch.multinomial(torch.softmax(flat, -1), keep, generator=dec.rng)
            top_scores = flat[top_idx]
        vocab = logits.shape[-1]
        origin, tokens = top_idx // vocab, top_idx % vocab
        candidates = [running[b] + [t] for b, t in zip(origin.tolist(), tokens.tolist())]
        ends = torch.tensor([int(t) in dec.eos or length + 1 >= limit for t in tokens.tolist()], device=device)
        # finished hypotheses: the ending candidates among the top `beams`, scored with the length penalty
        fin = top_scores / ((length + 1) ** length_penalty)
        fin = fin + float(bool(done_flags.all()) and early_stopping is True) * NEG
        fin = fin + float(not improvable) * NEG
        fin = fin + (~(ends & top_mask)).float() * NEG
        merged = torch.cat([done_scores, fin])
        best = torch.topk(merged, beams)[1]
        pool = done_seqs + candidates
        flags = torch.cat([done_flags, ends & top_mask])
        done_seqs, done_scores, done_flags = [pool[i] for i in best.tolist()], merged[best], flags[best]
        # running beams: the best continuations that did not end
        alive = top_scores + ends.float() * NEG
        nxt = torch.topk(alive, beams)[1]
        running = [candidates[i] for i in nxt.tolist()]
        running_scores = alive[nxt]
        length += 1
        # stop when no running beam can beat the worst finished one (transformers' heuristic)
        hyp_len = (limit if early_stopping == "never" and length_penalty > 0 else length)
        best_running = running_scores[0] / (hyp_len ** length_penalty)
        worst_done = torch.where(done_flags, done_scores.min(), torch.tensor(NEG, device=device))
        improvable = improvable and bool((best_running > worst_done).any())
        go_on = improvable and not (bool(done_flags.all()) and early_stopping is True) and not bool(ends.all())
        if not go_on:
            break
        runner.reorder(origin[nxt])
        logits = runner.decode_rows([seq[-1] for seq in running])
        forwards += 1
        yield Step(committed=[], origin=[], forwards=1, info={"beams": [list(s) for s in running],
                                                               "scores": running_scores.tolist()})
    best_seq = done_seqs[0]
    yield Step(committed=best_seq, origin=["plain"] * len(best_seq), forwards=0,
               info={"finished": [list(s) for s in done_seqs], "scores": done_scores.tolist()})
