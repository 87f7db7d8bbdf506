"""The lab's greedy loop against transformers' generate, side by side on the same model and prompts.

    python -m lab bench greedy-vs-hf [--model default] [--tokens 64] [--prompts 12] [--out results/...]

Both run greedy decoding (stopping at EOS or the budget) in the same process on the same weights; each
prompt runs both, in alternating order, after one warm-up. Reports per-prompt wall times, their ratio and
the median ratio; the tokens must be identical, so both did the same work.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch
from tqdm import tqdm

from ..api import Lab


def prompts(n: int) -> list[dict]:
    from importlib import resources

    rows = [json.loads(x) for x in resources.files("lab.data").joinpath("prompts.jsonl").read_text().splitlines() if x]
    return rows[:n]


def hf_generate(model, ids, tokens):
    x = torch.tensor([ids], device=model.device)
    return model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=tokens,
                          do_sample=False)[0, len(ids):].tolist()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m lab bench greedy-vs-hf")
    ap.add_argument("--model", default="default")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--out", default="results/greedy_vs_hf_cpu.json")
    args = ap.parse_args(argv)
    lab = Lab(args.model)
    rows = []
    lab.generate("greedy", "warm up", max_new_tokens=4)
    hf_generate(lab.model, lab.encode("warm up"), 4)
    for i, p in enumerate(tqdm(prompts(args.prompts), desc="greedy vs generate")):
        ids = lab.encode(p["prompt"], p["chat"])
        order = ["lab", "hf"] if i % 2 == 0 else ["hf", "lab"]
        times, tokens = {}, {}
        for who in order:
            start = time.perf_counter()
            if who == "lab":
                tokens[who] = lab.generate("greedy", ids, max_new_tokens=args.tokens).tokens
            else:
                tokens[who] = hf_generate(lab.model, ids, args.tokens)
            times[who] = time.perf_counter() - start
        rows.append({"id": p["id"], "new_tokens": len(tokens["hf"]), "lab_s": round(times["lab"], 4), "hf_s": round(times["hf"], 4),
                     "ratio": round(times["lab"] / times["hf"], 4), "same_tokens": tokens["lab"] == tokens["hf"]})
    result = {"benchmark": "greedy-vs-hf", "model": args.model, "new_tokens": args.tokens,
              "device": str(lab.target.device), "cpu": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "date": date.today().isoformat(),
              "median_ratio_lab_over_hf": round(statistics.median(r["ratio"] for r in rows), 4),
              "all_tokens_identical": all(r["same_tokens"] for r in rows), "rows": rows,
              "command": "python -m lab bench greedy-vs-hf " + " ".join(argv or [])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"\n{'prompt':<22}{'lab s':>8}{'hf s':>8}{'ratio':>8}  same")
    for r in rows:
        print(f"{r['id']:<22}{r['lab_s']:>8.2f}{r['hf_s']:>8.2f}{r['ratio']:>8.3f}  {r['same_tokens']}")
    print(f"median lab/hf wall-time ratio: {result['median_ratio_lab_over_hf']:.3f}  "
          f"(identical tokens: {result['all_tokens_identical']}) -> {args.out}")
    return result


if __name__ == "__main__":
    main()
