"""Trained FastDraft candidates side by side on the GPU: acceptance, draft cost, and sps against greedy.

    python scripts/compare_drafts.py [--val val.jsonl] --drafts DIR [DIR ...] [--prompts 8] [--tokens 96]
        [--device cuda] [--out compare.json] [--full]

Each DIR is an exported draft (python -m lab train fastdraft --export DIR). On the default model, for held-out
chat prompts (the --val file's questions, or the spec bench suite's chat prompts; chat template), one process and the same backend for all: the
target's greedy tokens/s, each draft's own greedy tokens/s (`draft_cost`: their ratio, prompts and per-call work
included), `draft_step_cost` (a step of the draft's chain, tokens and probabilities as sps drafts them, over a greedy decode
step of the target, after a prompt: the draft cost c of "Decoding Speculative Decoding"),
and `sps` with that draft: tokens/s, tokens per target forward, and the median speedup over greedy measured
prompt by prompt. Prints a table last and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from lab import drafts
from lab.api import Lab
from lab.backends import backend_for
from lab.train.responses import read


def timed(lab_, method: str, prompt: str, tokens: int, **opts):
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    start = time.perf_counter()
    result = lab_.generate(method, prompt, max_new_tokens=tokens, chat=True, **opts)
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    return result, time.perf_counter() - start


def seconds_a_token(backend, ids: list[int], tokens: int = 64, repeats: int = 7, chain: bool = False) -> float:
    """A greedy decode step's seconds on `backend` after a prompt (bursts of 8 on a GPU; no prefill, no host work
    of a method): the draft cost's numerator or denominator. `chain`: with each token's probability
    (`greedy_chain`, what a draft runs in sps at T = 0), else tokens only (`greedy_run`, what greedy runs)."""
    fork = backend.fork()
    fork.prefill(ids)
    times = []
    for _ in range(repeats + 2):  # the first two capture and warm up
        fork.rollback(len(ids))
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        start = time.perf_counter()
        token = ids[-1]
        for _ in range(tokens // 8):
            token = (fork.greedy_chain(token, 8)[0] if chain else fork.greedy_run(token, 8))[-1]
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        times.append((time.perf_counter() - start) / tokens)
    return statistics.median(times[2:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--val")
    ap.add_argument("--drafts", nargs="+", required=True)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="compare_drafts.json")
    ap.add_argument("--full", action="store_true", help="also each draft with the whole LM head where its manifest "
                                                       "trims it (lab/vocab_trim.py)")
    args = ap.parse_args()
    target = Lab("default", device=args.device)
    if args.val and args.val.endswith("suite.jsonl"):  # a `bench spec --write-suite` file: its chat prompts
        rows = [json.loads(line) for line in Path(args.val).read_text().splitlines() if line.strip()]
        prompts = [r["prompt"] for r in rows if r["category"] == "chat"][:args.prompts]
    elif args.val:
        prompts = [r["question"] for r in read(args.val)[:args.prompts]]
    else:
        from lab.bench.suite import build_suite

        prompts = [r["prompt"] for r in build_suite(args.prompts, ["chat"])]
    names = []
    for folder in args.drafts:
        about = drafts.manifest(Path(folder))
        for trim in (True, False) if args.full and about.get("vocab") else (True,):
            name = str(Path(folder)) + ("" if trim else ":full")  # two drafts never share a name
            model = drafts.load_fastdraft(target.model, Path(folder), trim=trim)
            target._drafts[name] = backend_for(model, target.backend)
            alone = Lab(model_obj=model, tokenizer=target.tokenizer, backend=target.backend)
            names.append((name, alone, about))
    for p in prompts[:2]:  # warm up: graphs are captured once a shape has been asked a few times
        for _ in range(3):
            timed(target, "greedy", p, args.tokens)
            for name, alone, _ in names:
                timed(alone, "greedy", p, args.tokens)
                timed(target, "sps", p, args.tokens, draft=name)
    rows = []
    ids = target.encode(prompts[0], True)
    target_step = seconds_a_token(target.target, ids)
    greedy = [timed(target, "greedy", p, args.tokens) for p in prompts]
    greedy_tps = sum(len(r.tokens) for r, _ in greedy) / sum(t for _, t in greedy)
    for name, alone, about in names:
        own = [timed(alone, "greedy", p, args.tokens) for p in prompts]
        spec = [timed(target, "sps", p, args.tokens, draft=name) for p in prompts]
        own_tps = sum(len(r.tokens) for r, _ in own) / sum(t for _, t in own)
        sps_tps = sum(len(r.tokens) for r, _ in spec) / sum(t for _, t in spec)
        same = sum(s.tokens == g.tokens for (s, _), (g, _) in zip(spec, greedy))
        speedups = [(len(s.tokens) / ts) / (len(g.tokens) / tg) for (s, ts), (g, tg) in zip(spec, greedy)]
        metrics = [s.trace.metrics() for s, _ in spec]
        head = alone.model.lm_head
        rows.append({"draft": name, "layers": about["init_layers"], "steps": about["steps"],
                     "head_tokens": int(head.weight.shape[0]),
                     "val_greedy_acceptance": about["validation"].get("greedy_acceptance"),
                     "val_t1_acceptance": about["validation"].get("t1_acceptance"),
                     "draft_cost": round(greedy_tps / own_tps, 3),
                     "draft_step_cost": round(seconds_a_token(target._drafts[name], ids, chain=True) / target_step, 3),
                     "sps_tokens_per_s": round(sps_tps, 1),
                     "tokens_per_forward": round(statistics.mean(m["tokens_per_forward"] for m in metrics), 3),
                     "sps_speedup_median": round(statistics.median(speedups), 3),
                     "same_tokens": f"{same}/{len(prompts)}"})
    report = {"command": "python scripts/compare_drafts.py " + " ".join(sys.argv[1:]), "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
              "backend": type(target.target).__name__, "greedy_tokens_per_s": round(greedy_tps, 1),
              "target_step_ms": round(target_step * 1e3, 4),
              "prompts": len(prompts), "tokens": args.tokens, "rows": rows}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"greedy {greedy_tps:.1f} tok/s on {report['backend']}")
    print("draft      head   layers        val-greedy  val-T1  cost   step-cost  sps tok/s  tok/fwd  speedup  same")
    for r in rows:
        print(f"{r['draft'][-10:]:10s} {r['head_tokens']:5d}  {str(r['layers']):13s} {r['val_greedy_acceptance']:.3f}       "
              f"{r['val_t1_acceptance']:.3f}   {r['draft_cost']:.3f}  {r['draft_step_cost']:.3f}      "
              f"{r['sps_tokens_per_s']:8.1f}  "
              f"{r['tokens_per_forward']:.2f}     {r['sps_speedup_median']:.2f}x    {r['same_tokens']}")


if __name__ == "__main__":
    main()
