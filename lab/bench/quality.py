"""How far lossy methods drift from greedy decoding on real prompts, and what they buy in tokens per forward.

    python -m lab.bench.quality --methods fuzzy-sd,lookahead-reasoning [--prompts 6] [--tokens 48]
                                [--model default] [--suite prompts|math] [--out results/quality_cpu.json]

A method spec may carry options: `fuzzy-sd:threshold=0.5`, `lookahead-reasoning:judge=0.3:steps=3`.
For each prompt of lab/data/prompts.jsonl the reference is the target's greedy output; every method runs at
temperature 0 on the same prompt. Per run: exact match (identical tokens), the longest common prefix as a
fraction of the reference, edit similarity (1 - Levenshtein distance / longer length, on tokens) and tokens
per target forward. The summary averages them per method (tokens per forward: all tokens / all forwards).
`--suite math` runs the templated word problems of lab/bench/suite.py instead, whose answers are known: each run
(and greedy's) is also scored by its final number (the last number in the text equals the answer).
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
from collections import Counter
from datetime import date
from pathlib import Path

import torch

from .. import registry
from ..api import Lab
from ..errors import LabError
from ..metrics import common_prefix
from .greedy_vs_hf import prompts as load_prompts


def levenshtein(a: list[int], b: list[int]) -> int:
    """Edit distance between two token lists (insertions, deletions, substitutions)."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def agreement(reference: list[int], tokens: list[int]) -> dict:
    """Exact match, prefix agreement and edit similarity of `tokens` against `reference`."""
    longest = max(len(reference), len(tokens), 1)
    return {"exact": tokens == reference, "prefix": round(common_prefix(reference, tokens) / max(len(reference), 1), 4),
            "edit_similarity": round(1 - levenshtein(reference, tokens) / longest, 4)}


def final_number(text: str) -> float | None:
    """The last number in a text (commas between digit groups dropped), or None."""
    found = re.findall(r"-?\d+(?:\.\d+)?", re.sub(r"(?<=\d),(?=\d{3})", "", text))
    return float(found[-1]) if found else None


def parse_spec(spec: str) -> tuple[str, dict]:
    """'name:key=value:key=value' -> (name, {key: value}); a value may hold colons ('draft=layers:24').
    Values stay strings: the registry converts them to the options' types."""
    name, *parts = spec.strip().split(":")
    pairs: list[str] = []
    for part in parts:
        if "=" in part or not pairs:
            pairs.append(part)
        else:
            pairs[-1] += ":" + part
    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise LabError(f"method spec {spec!r}: write options as name:key=value")
        key, value = pair.split("=", 1)
        options[key.strip()] = value.strip()
    return name, options


def quality(lab: Lab, specs: list[str], prompts: list[dict], tokens: int) -> dict:
    """Run greedy and every method spec on every prompt; return per-run rows and a per-method summary."""
    for spec in specs:  # bad names or options fail before anything runs
        name, options = parse_spec(spec)
        registry.parse_options(registry.get(name), options)
    rows = []
    for p in prompts:
        reference = lab.generate("greedy", p["prompt"], chat=p["chat"], max_new_tokens=tokens)
        for spec in specs:
            name, options = parse_spec(spec)
            trace = lab.generate(name, p["prompt"], chat=p["chat"], max_new_tokens=tokens, **options).trace
            scored = {}
            if "answer" in p:
                scored = {"answer": p["answer"], "final_number": final_number(trace.text),
                          "reference_final_number": final_number(reference.trace.text)}
                scored["correct"] = scored["final_number"] == p["answer"]
                scored["reference_correct"] = scored["reference_final_number"] == p["answer"]
            judged = [r for step in trace.steps for r in step.info.get("steps", []) if r.get("used") and "reason" in r]
            if judged:  # a step-level method (lookahead-reasoning): why each draft step was kept or not
                scored["step_verdicts"] = dict(Counter(f"{r['verdict']}: {r['reason']}" for r in judged))
            rows.append({"method": spec, "prompt": p["id"], **agreement(reference.tokens, trace.tokens), **scored,
                         "new_tokens": trace.new_tokens, "forwards": trace.forwards,
                         "tokens_per_forward": round(trace.tokens_per_forward, 4),
                         "mean_accepted": round(trace.mean_accepted, 4), "wall_s": round(trace.wall_s, 4),
                         "reference_wall_s": round(reference.trace.wall_s, 4),
                         "reference_new_tokens": reference.trace.new_tokens,
                         "reference_forwards": reference.trace.forwards, "text": trace.text})
    summary = []
    for spec in specs:
        mine = [r for r in rows if r["method"] == spec]
        summary.append({"method": spec, "runs": len(mine),
                        "exact_match_rate": round(sum(r["exact"] for r in mine) / len(mine), 4),
                        "prefix_agreement": round(statistics.mean(r["prefix"] for r in mine), 4),
                        "edit_similarity": round(statistics.mean(r["edit_similarity"] for r in mine), 4),
                        "tokens_per_forward": round(sum(r["new_tokens"] for r in mine) /
                                                    max(sum(r["forwards"] for r in mine), 1), 4),
                        "wall_ratio_vs_greedy": round(sum(r["wall_s"] for r in mine) /
                                                      max(sum(r["reference_wall_s"] for r in mine), 1e-9), 4)})
        verdicts = Counter()
        for r in mine:
            verdicts.update(r.get("step_verdicts", {}))
        if verdicts:
            summary[-1]["step_verdicts"] = dict(verdicts.most_common())
        if all("correct" in r for r in mine):
            summary[-1].update(answer_accuracy=round(sum(r["correct"] for r in mine) / len(mine), 4),
                               greedy_answer_accuracy=round(sum(r["reference_correct"] for r in mine) / len(mine), 4),
                               greedy_tokens_per_forward=round(sum(r["reference_new_tokens"] for r in mine) /
                                                               max(sum(r["reference_forwards"] for r in mine), 1), 4))
    return {"summary": summary, "rows": rows}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m lab.bench.quality")
    ap.add_argument("--methods", default="fuzzy-sd,lookahead-reasoning")
    ap.add_argument("--model", default="default")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--suite", choices=("prompts", "math"), default="prompts",
                    help="prompts: lab/data/prompts.jsonl; math: the suite's templated word problems (answers known)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default="results/quality_cpu.json")
    args = ap.parse_args(argv)
    specs = [s for s in args.methods.split(",") if s.strip()]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.suite == "math":
        from .suite import build_suite
        chosen = build_suite(args.prompts, ["math"])
    else:
        chosen = load_prompts(args.prompts)
    lab = Lab(args.model)
    result = {"benchmark": "quality", "reference": "greedy", "model": args.model, "new_tokens": args.tokens,
              "temperature": 0.0, "device": str(lab.target.device), "cpu": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "date": date.today().isoformat(),
              "suite": args.suite, **quality(lab, specs, chosen, args.tokens),
              "command": "python -m lab.bench.quality " + " ".join(argv if argv is not None else [])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    width = max(len(s) for s in specs) + 2
    print(f"\n{'method':<{width}}{'exact':>7}{'prefix':>8}{'edit sim':>9}{'tok/fwd':>9}{'wall/greedy':>12}"
          f"{'answers':>9}{'greedy':>8}")
    for s in result["summary"]:
        print(f"{s['method']:<{width}}{s['exact_match_rate']:>7.2f}{s['prefix_agreement']:>8.3f}"
              f"{s['edit_similarity']:>9.3f}{s['tokens_per_forward']:>9.2f}{s['wall_ratio_vs_greedy']:>12.2f}"
              f"{s.get('answer_accuracy', float('nan')):>9.2f}{s.get('greedy_answer_accuracy', float('nan')):>8.2f}")
    print(f"({len(chosen)} {args.suite} prompts x {args.tokens} tokens, reference: greedy) -> {args.out}")
    return result


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
