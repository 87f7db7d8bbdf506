"""Distribution tests of the Triton samplers on the GPU: does each kernel sample exactly what it must?

    python scripts/gpu_distribution.py [--device cuda] [--trials 400000] [--out results/gpu-distribution.json]

- chain rejection (`kernels/rejection.py`, speculative sampling of a chain, "Accelerating Large Language Model
  Decoding with Speculative Sampling"): the target is a Markov chain P over V tokens and the draft another one, Q,
  far from it (sharpened and permuted: confident and mostly wrong). Each trial drafts k tokens from Q after a start
  token, gives the kernel the target's rows P[previous] for every draft prefix and the draft's rows Q[previous], and
  reads the emitted tokens (the accepted drafts, then the recovered or bonus token). Lossless means: every emitted
  token, given the ones before it, is a draw from P[the previous token]. Tested by a chi-square over the counts of
  (previous, emitted) pairs at every emitted position, and over the first token alone; the run counts rejections at
  each depth and bonus tokens, so a test that never went deep cannot pass silently. Twice: drafts drawn from Q
  (`draft_probs` given) and fixed drafts (the target's argmax: `draft_probs` None, as a lookup drafter's drafts
  are verified at T > 0).
- a mutant: the kernel told a wrong draft distribution (Q's rows of another start): it must fail, or the test has
  no power.
- top-k + top-p and min-p sampling (`kernels/topk_topp.py`, `kernels/sampling.py`): many rows of the same logits
  with their own noise; the counts against the exact truncated distribution (lab.sampling's rules).

Prints one line per test and exits 1 if a lossless test fails or the mutant passes. On the CPU the kernels run as
their torch references (or in Triton's interpreter with TRITON_INTERPRET=1, slowly: use few --trials).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from scipy.stats import chi2

from lab.kernels import rejection, sampling, topk_topp, triton_ready
from lab.sampling import top_k as lab_top_k, top_p as lab_top_p

ALPHA = 1e-4  # a lossless kernel fails a test this rarely; the mutant must land far below it


def chi_square(observed: torch.Tensor, expected: torch.Tensor) -> tuple[float, int, float]:
    """(statistic, degrees of freedom, p-value) of counts against expectations, row by row: each row of `observed`
    and `expected` [R, V] has the same total; cells expected below 5 are pooled per row."""
    stat, dof = 0.0, 0
    for o, e in zip(observed.double(), expected.double()):
        if e.sum() < 5:
            continue
        big = e >= 5
        o_cells = torch.cat([o[big], o[~big].sum()[None]]) if (~big).any() else o[big]
        e_cells = torch.cat([e[big], e[~big].sum()[None]]) if (~big).any() else e[big]
        keep = e_cells > 0
        stat += float(((o_cells[keep] - e_cells[keep]) ** 2 / e_cells[keep]).sum())
        dof += int(keep.sum()) - 1
    return stat, dof, float(chi2.sf(stat, dof)) if dof > 0 else 1.0


def markov(vocab: int, g: torch.Generator, sharpen: float = 1.0, permute: bool = False) -> torch.Tensor:
    logits = torch.randn(vocab, vocab, generator=g) * 1.5 * sharpen
    if permute:
        logits = logits[:, torch.randperm(vocab, generator=g)]
    return logits.softmax(-1)


def chain_test(P: torch.Tensor, Q: torch.Tensor, k: int, trials: int, drawn: bool, device: str,
               g: torch.Generator, lie: torch.Tensor | None = None) -> dict:
    """One chain-rejection run of `trials` rows from start token 0; `lie`: the draft rows told to the kernel instead
    of Q's (the mutant)."""
    vocab = P.shape[0]
    P, Q = P.to(device), Q.to(device)
    pairs = torch.zeros(vocab, vocab, dtype=torch.long, device=device)
    expected = torch.zeros(vocab, vocab, dtype=torch.float64, device=device)
    first = torch.zeros(vocab, dtype=torch.long, device=device)
    accepted_counts = torch.zeros(k + 1, dtype=torch.long, device=device)
    batch = 65536
    for start in range(0, trials, batch):
        b = min(batch, trials - start)
        prev = torch.zeros(b, dtype=torch.long, device=device)
        drafts, rows_p, rows_q = [], [P[prev]], []
        for _ in range(k):
            q = Q[prev]
            token = torch.multinomial(q, 1, generator=g)[:, 0] if drawn else P[prev].argmax(-1)
            rows_q.append(q if lie is None else lie.to(device)[prev])
            drafts.append(token)
            prev = token
            rows_p.append(P[prev])
        drafts = torch.stack(drafts, 1)
        target = torch.stack(rows_p, 1).contiguous()
        draft = torch.stack(rows_q, 1).contiguous() if drawn else None
        u = torch.rand(b, k, device=device, generator=g)
        e = torch.empty(b, vocab, device=device).exponential_(generator=g)
        tokens, accepted = rejection.chain_rejection(drafts, draft, target, u, e)
        accepted_counts += torch.bincount(accepted, minlength=k + 1)
        first += torch.bincount(tokens[:, 0], minlength=vocab)
        previous = torch.zeros(b, dtype=torch.long, device=device)
        for j in range(k + 1):
            emitted = accepted >= j  # position j holds an accepted draft or the last, sampled token
            x, before = tokens[emitted, j], previous[emitted]
            pairs += torch.bincount(before * vocab + x, minlength=vocab * vocab).view(vocab, vocab)
            expected += torch.bincount(before, minlength=vocab).double()[:, None] * P.double()[:, :]
            previous = torch.where(emitted, tokens[:, j], previous)
    stat, dof, p_pairs = chi_square(pairs.cpu(), expected.cpu())
    _, _, p_first = chi_square(first[None].cpu(), trials * P[0:1].double().cpu())
    counts = accepted_counts.tolist()
    return {"drafts": "drawn from Q" if drawn else "fixed (the target's argmax)", "k": k, "trials": trials,
            "emitted": int(pairs.sum()), "accepted_histogram": counts,
            "rejections": trials - counts[-1], "bonus_tokens": counts[-1],
            "rejected_at_depth_2_or_more": sum(counts[1:-1]),
            "chi2_pairs": round(stat, 1), "dof": dof, "p_pairs": p_pairs, "p_first": p_first}


def sampler_test(name: str, logits: torch.Tensor, want: torch.Tensor, draw, trials: int, device: str,
                 g: torch.Generator) -> dict:
    """`trials` draws of `draw(rows, noise)` from rows equal to `logits` against the exact distribution `want`."""
    vocab = logits.shape[0]
    counts = torch.zeros(vocab, dtype=torch.long, device=device)
    batch = 65536
    for start in range(0, trials, batch):
        b = min(batch, trials - start)
        rows = logits.to(device)[None].expand(b, -1).contiguous()
        noise = torch.empty(b, vocab, device=device).exponential_(generator=g)
        counts += torch.bincount(draw(rows, noise), minlength=vocab)
    stat, dof, p = chi_square(counts[None].cpu(), trials * want[None].double())
    outside = int(counts.cpu()[want == 0].sum())
    return {"name": name, "trials": trials, "kept": int((want > 0).sum()), "drawn_outside_the_kept_set": outside,
            "chi2": round(stat, 1), "dof": dof, "p": p}


def judged(r: dict) -> dict:
    """A sampler test's record with its verdict, printed: the chi-square passes and nothing was drawn outside the
    kept set."""
    passed = r["p"] > ALPHA and r["drawn_outside_the_kept_set"] == 0
    print(f"{r['name']}: {r['kept']} tokens kept, chi2 p = {r['p']:.3g}, outside {r['drawn_outside_the_kept_set']}: "
          f"{'pass' if passed else 'FAIL'}")
    return {**r, "passed": passed}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--trials", type=int, default=400_000)
    ap.add_argument("--vocab", type=int, default=12)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--out")
    args = ap.parse_args()
    g_cpu = torch.Generator().manual_seed(0)
    g = torch.Generator(device=args.device).manual_seed(0)
    P = markov(args.vocab, g_cpu)
    Q = markov(args.vocab, g_cpu, sharpen=2.0, permute=True)  # confident and mostly wrong
    Q_other = Q.roll(1, dims=0)  # the mutant's lie: another row's draft distribution
    report = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
              "triton": triton_ready(torch.zeros(1, device=args.device)), "chain": [], "samplers": []}
    ok = True
    for drawn in (True, False):
        r = chain_test(P, Q, args.k, args.trials, drawn, args.device, g)
        passed = (r["p_pairs"] > ALPHA and r["p_first"] > ALPHA and r["rejected_at_depth_2_or_more"] > 0
                  and r["bonus_tokens"] > 0)
        ok &= passed
        report["chain"].append({**r, "passed": passed})
        print(f"chain rejection, drafts {r['drafts']}: accepted histogram {r['accepted_histogram']} "
              f"({r['bonus_tokens']} bonus tokens), pairs p = {r['p_pairs']:.3g}, first p = {r['p_first']:.3g}: "
              f"{'pass' if passed else 'FAIL'}")
    mutant = chain_test(P, Q, args.k, args.trials, True, args.device, g, lie=Q_other)
    caught = mutant["p_pairs"] < ALPHA
    ok &= caught
    report["mutant"] = {**mutant, "caught": caught}
    print(f"mutant (the kernel told another row's draft distribution): pairs p = {mutant['p_pairs']:.3g}: "
          f"{'caught' if caught else 'NOT CAUGHT: the test has no power'}")
    logits = torch.randn(64, generator=g_cpu)  # a flat enough row: top-p keeps many tokens
    for temperature, k, p in ((0.8, 10, 0.9), (1.0, 0, 0.7), (1.3, 20, 1.0)):
        kept = lab_top_p(lab_top_k(logits[None] / temperature, k), p)[0]
        want = kept.softmax(-1)
        r = sampler_test(f"top-k {k} top-p {p} T {temperature}", logits, want,
                         lambda rows, noise, t=temperature, k=k, p=p: topk_topp.sample_top_k_top_p(rows, t, k, p, noise),
                         args.trials, args.device, g)
        report["samplers"].append(judged(r))
        ok &= report["samplers"][-1]["passed"]
    for temperature, min_p in ((0.7, 0.05), (1.5, 0.2)):
        scaled = logits / temperature
        want = torch.where(scaled.softmax(-1) >= min_p * scaled.softmax(-1).max(), scaled, float("-inf")).softmax(-1)
        r = sampler_test(f"min-p {min_p} T {temperature}", logits, want,
                         lambda rows, noise, t=temperature, m=min_p: sampling.sample_min_p(rows, t, m, noise),
                         args.trials, args.device, g)
        report["samplers"].append(judged(r))
        ok &= report["samplers"][-1]["passed"]
    report["passed"] = ok
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print("all pass" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
