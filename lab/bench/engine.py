"""The engine bench: the lab's greedy against transformers' own `generate`, and every training-free drafter
against the lab's greedy, in one process on the same weights and prompts (the GPU is where this matters).

    python -m lab bench engine [--model default] [--device cuda] [--dtype bfloat16] [--prompts 6]
                               [--max-new-tokens 96] [--spec-tokens 48] [--repeats 3] [--methods pld,sam]
                               [--out results/engine-<device>-<date>.json]

Autoregressive: each prompt runs the lab's greedy and `generate(do_sample=False)` (eager, DynamicCache)
`--repeats` times, in alternating order; tokens/s is new tokens over wall time with a device sync at both ends,
and the tokens must be identical. Speculative: `bench spec`'s runner (greedy and every method per prompt, the
order rotating), on chat and copy-heavy prompts from lab/data/prompts.jsonl. Writes JSON, prints a table last.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date
from importlib import resources
from pathlib import Path

import torch
from tqdm import tqdm

from .. import registry
from ..errors import LabError
from ..metrics import BASELINE, summarize
from .greedy_vs_hf import hf_generate
from .spec import run_bench

MIX = ["chat-photosynthesis", "copy-list", "chat-email", "summarize-meeting", "chat-story", "copy-rewrite",
       "code-fib", "retrieval-qa", "chat-recipe", "summarize-fox"]  # chat and copy-heavy prompts, alternating


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def prompts(n: int) -> list[dict]:
    rows = {r["id"]: r for r in map(json.loads, resources.files("lab.data").joinpath("prompts.jsonl")
                                    .read_text().splitlines()) if r}
    out = [dict(rows[i]) for i in MIX[:n]]
    for row in out:
        row["category"] = row["id"].split("-")[0]
    return out


def autoregressive(lab, rows: list[dict], tokens: int, repeats: int) -> list[dict]:
    """Per prompt: median seconds of the lab's greedy and of transformers' generate, same tokens or not."""
    device = lab.target.device
    out = []
    for i, row in enumerate(tqdm(rows, desc="greedy vs generate")):
        ids = lab.encode(row["prompt"], row["chat"])
        times, got = {"lab": [], "hf": []}, {}
        for r in range(repeats):
            for who in (["lab", "hf"] if (i + r) % 2 == 0 else ["hf", "lab"]):
                sync(device)
                start = time.perf_counter()
                if who == "lab":
                    got[who] = lab.generate("greedy", ids, max_new_tokens=tokens).tokens
                else:
                    got[who] = hf_generate(lab.model, ids, tokens)
                sync(device)
                times[who].append(time.perf_counter() - start)
        n = len(got["hf"])
        lab_s, hf_s = statistics.median(times["lab"]), statistics.median(times["hf"])
        out.append({"id": row["id"], "new_tokens": n, "lab_tok_s": round(n / lab_s, 2), "hf_tok_s": round(n / hf_s, 2),
                    "ratio": round(hf_s / lab_s, 4), "same_tokens": got["lab"] == got["hf"]})
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m lab bench engine")
    ap.add_argument("--model", default="default")
    ap.add_argument("--device")
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: fp32 on CPU, bf16 on GPU")
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--max-new-tokens", type=int, default=96, help="tokens per autoregressive run")
    ap.add_argument("--spec-tokens", type=int, default=48, help="tokens per speculative run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", default="", help="comma-separated; default: every training-free speculative method")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    infos = registry.load_all()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] or sorted(
        n for n, m in infos.items() if m.family == "speculative" and m.training_free)
    for name in methods:
        registry.get(name)
    if not 1 <= args.prompts <= len(MIX) or min(args.max_new_tokens, args.spec_tokens, args.repeats) < 1:
        raise LabError(f"--prompts must be in 1..{len(MIX)}; token counts and --repeats >= 1")
    from ..api import Lab

    lab = Lab(args.model, device=args.device, dtype=getattr(torch, args.dtype) if args.dtype else None)
    rows = prompts(args.prompts)
    lab.generate("greedy", "warm up", max_new_tokens=4)
    hf_generate(lab.model, lab.encode("warm up"), 4)
    ar = autoregressive(lab, rows, args.max_new_tokens, args.repeats)
    runs = run_bench(lab, rows, methods, max_new_tokens=args.spec_tokens,
                     warm_every_prompt=lab.target.device.type == "cuda")
    summary = summarize(runs)
    device = str(lab.target.device)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or platform.machine()
    spec = [{"method": m, "lossless": infos[m].lossless, "speedup_vs_greedy": s["overall"]["speedup"],
             "tokens_per_forward": s["overall"]["tokens_per_forward"], "exact_match": s["overall"]["exact_match"],
             "errors": s["overall"]["errors"]} for m, s in summary.items() if m != BASELINE]
    greedy = [r for r in runs if r["method"] == BASELINE and "error" not in r]
    result = {"benchmark": "engine", "model": args.model, "device": device, "device_name": name,
              "dtype": str(lab.target.dtype).removeprefix("torch."), "torch": torch.__version__,
              "date": date.today().isoformat(), "command": "python -m lab bench engine " + " ".join(argv or []),
              "ar": {"lab_over_hf_median": round(statistics.median(r["ratio"] for r in ar), 4),
                     "lab_tok_s_median": statistics.median(r["lab_tok_s"] for r in ar),
                     "hf_tok_s_median": statistics.median(r["hf_tok_s"] for r in ar),
                     "all_tokens_identical": all(r["same_tokens"] for r in ar), "rows": ar},
              "spec": sorted(spec, key=lambda r: -(r["speedup_vs_greedy"] or 0)),
              "greedy_tok_s_in_spec": round(sum(r["new_tokens"] for r in greedy) / max(sum(r["wall_s"] for r in greedy),
                                                                                     1e-9), 2),
              "prompts": [r["id"] for r in rows], "spec_tokens": args.spec_tokens, "max_new_tokens": args.max_new_tokens,
              "runs": [{k: v for k, v in r.items() if k != "tokens"} for r in runs]}
    out = Path(args.out or f"results/engine-{device.split(':')[0]}-{result['date']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {out}\n\n{name}, {result['dtype']}, {len(rows)} prompts")
    print(f"lab greedy {result['ar']['lab_tok_s_median']} tok/s, transformers generate {result['ar']['hf_tok_s_median']}"
          f" tok/s: lab/generate speed {result['ar']['lab_over_hf_median']}x (median over prompts), "
          f"identical tokens: {result['ar']['all_tokens_identical']}\n")
    print("| method | lossless | speedup vs lab greedy | tokens/forward | exact match |\n|---|---|---:|---:|---:|")
    for r in result["spec"]:
        exact = "–" if r["exact_match"] is None else f"{100 * r['exact_match']:.0f}%"
        speed = "error" if r["speedup_vs_greedy"] is None else f"{r['speedup_vs_greedy']:.2f}x"
        print(f"| {r['method']} | {'yes' if r['lossless'] else 'no'} | {speed} | {r['tokens_per_forward']:.2f} | {exact} |")
    return result


if __name__ == "__main__":
    main()
