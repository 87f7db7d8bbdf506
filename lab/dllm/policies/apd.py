"""Accelerating Diffusion LLMs via Adaptive Parallel Decoding (Israel, Van den Broeck and Grover, 2025; APD).

The idea: let a small autoregressive model decide how many of the dLLM's parallel proposals to keep, so the number
of tokens per step adapts. Each step the dLLM proposes the next `lookahead` tokens after the committed text in one
forward, each from its own marginal p_D; the AR model scores that proposal in one forward, giving p_AR at each
position given the proposals before it; the target is the multiplicative mixture p_T ∝ p_D^R · p_AR^(1-R). The
proposal and a draw from p_T share their random noise (a coupling): the proposals are kept up to the first position
where p_T's draw differs, and that draw is kept too. A step commits between 1 and `lookahead` tokens: many where
the two models agree, one where they do not. R = 1 trusts the dLLM alone, R = 0 makes the AR model decide (its
greedy output at temperature 0).
"""
from __future__ import annotations

import torch

from ... import models
from ...errors import LabError
from ...registry import method
from ...trace import Step
from .. import rules
from ..denoiser import Denoiser
from ..model import spec_of


def mixture(dllm: torch.Tensor, ar: torch.Tensor, weight: float, mask: int) -> torch.Tensor:
    """log p_T up to a constant per row: weight · log p_D + (1 - weight) · log p_AR, the mask token excluded (a
    zero weight drops its factor, so p_D's -inf at the mask never meets a zero)."""
    out = torch.zeros(dllm.shape, dtype=torch.float64, device=dllm.device)
    if weight > 0:
        out = out + weight * torch.log_softmax(dllm.double(), -1)
    if weight < 1:
        out = out + (1 - weight) * torch.log_softmax(ar.double(), -1)
    out[..., mask] = float("-inf")
    return out


@method("apd", family="diffusion", lossless=False,
        paper="Accelerating Diffusion LLMs via Adaptive Parallel Decoding (Israel, Van den Broeck and Grover, 2025)",
        departures="The coupling shares Gumbel noise between the dLLM's draw and the mixture's (the paper shares a "
                   "uniform through inverse CDFs; both draw each side exactly); the verifier is the lab's default "
                   "model unless `verifier` names another with the dLLM's vocabulary. KV cache: on a block-diffusion "
                   "dLLM the committed text stays in its cache (exact there; cache=none recomputes it), while on a "
                   "global-attention dLLM (LLaDA, Dream) the context is recomputed every step (no approximate prefix "
                   "cache); the AR verifier always keeps its cache. lookahead=0 takes the trained block size (else "
                   "16). The dLLM's forwards are `forwards`; the verifier's are each Step's `draft_forwards` and "
                   "info['verifier_forwards'].")
def apd(dec, *, verifier: str = "default", mixture_weight: float = 0.7, lookahead: int = 0, cache: str = "auto"):
    """APD: keep the dLLM's left-to-right proposals while a mixture with a small AR model draws the same tokens."""
    if not 0 <= mixture_weight <= 1:
        raise LabError(f"mixture_weight={mixture_weight} (the paper's R) must be in [0, 1]")
    spec = spec_of(dec.target, "apd")
    if cache == "auto":
        cache = "prefix" if spec.attention == "block" else "none"
    if cache not in ("prefix", "none") or (spec.attention == "global" and cache != "none"):
        raise LabError(f"apd cache={cache!r}: use auto, none or (on a block-diffusion model) prefix")
    backend, mask, length = dec.target, spec.mask_id, dec.max_new_tokens
    ar = dec.lab.draft(str(models.default_path()) if verifier == models.DEFAULT else verifier)
    if ar.vocab_size != backend.vocab_size:
        raise LabError(f"apd's verifier {verifier!r} has {ar.vocab_size} tokens, the dLLM {backend.vocab_size}: "
                       "give an autoregressive model with the dLLM's vocabulary")
    size, temperature = lookahead or spec.block_size or 16, dec.sampling.temperature
    den = Denoiser(backend, spec, dec.prompt, length, length, cache) if spec.attention == "block" else None
    ar_last = ar.prefill(list(dec.prompt))  # the AR model's logits after the last token its cache holds
    pending: list[int] = []  # committed tokens the AR cache does not hold yet
    out: list[int] = []
    while len(out) < length and not dec.done:
        n, done = min(size, length - len(out)), len(out)
        before, ar_before = backend.forwards, ar.forwards
        if den is not None:  # the committed text joins the cache as context in this very forward
            d_logits = den.predict(done, done + n)[1]
        else:  # n masks after the committed text, all recomputed (the paper's max lookahead bounds the input)
            d_logits = Denoiser(backend, spec, dec.prompt + out, n, n, "none").predict(0, n)[1]
        noise = None if temperature <= 0 else rules.gumbel(d_logits.shape, dec.rng, d_logits.device)
        proposal = rules.propose(d_logits, temperature, dec.rng, noise)
        x = proposal.tolist()  # the AR model reads host tokens
        scored = ar.forward(pending + x).logits
        p = len(pending)
        a_logits = torch.cat([ar_last[None] if p == 0 else scored[p - 1:p], scored[p:p + n - 1]])
        mixed = mixture(d_logits, a_logits, mixture_weight, mask)
        drawn = rules.propose(mixed, temperature, dec.rng, noise)
        sure = torch.softmax(mixed, -1).gather(-1, drawn[:, None])[:, 0]
        d_sure = torch.softmax(d_logits.double(), -1).gather(-1, proposal[:, None])[:, 0]
        y, conf, d_conf = torch.stack([drawn.double(), sure, d_sure]).tolist()  # one transfer
        y = [int(t) for t in y]
        agreed = next((i for i in range(n) if x[i] != y[i]), n)
        committed = x[:agreed] + y[agreed:agreed + 1]
        ar.keep(list(range(p + agreed)))  # the pending tokens and the agreed proposals, computed in order
        if agreed == n:
            ar_last, pending = scored[p + n - 1], []
        else:
            pending = [y[agreed]]
        out += committed
        if den is not None:
            den.canvas[done:len(out)] = committed
        spent = ar.forwards - ar_before
        yield Step(committed=committed, origin=["plain"] * len(committed), positions=list(range(done, len(out))),
                   confidence=[round(c, 6) for c in conf[:len(committed)]],
                   canvas=out + [-1] * (length - len(out)), forwards=backend.forwards - before, draft_forwards=spent,
                   info={"masked": list(range(done, done + n)), "predicted": x,
                         "predicted_confidence": [round(c, 6) for c in d_conf], "mixture": y, "agreed": agreed,
                         "verifier_forwards": spent})
