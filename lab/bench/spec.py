"""The speculative benchmark: every speculative method against greedy on the offline suite, per task category.

    python -m lab bench spec [--per-category 10] [--max-new-tokens 128] [--methods pld,sps] [--model default]
                             [--categories chat,code] [--temperature 0] [--opt sps.length=6]
                             [--device cuda] [--dtype float32] [--suite FILE.jsonl | --write-suite FILE.jsonl]
    python -m lab bench spec --merge A.json B.json ... --out results/spec_bench_gpu.json   # runs split by method
                             [--out results/spec_bench_cpu.json] [--no-plots] [--no-png]

In Spec-Bench's spirit ("Unlocking Efficiency in Large Language Model Inference: A Comprehensive Survey of
Speculative Decoding"): each prompt runs greedy and every method in the same engine, in an order that rotates
from prompt to prompt, so that drifts of the machine's speed hit all methods alike. Per method x category:

- tau, the mean accepted length (accepted draft tokens + 1 per verification step), and tokens per target forward;
- per-position acceptance: the share of verification steps whose accepted path reaches depth i
  (so tau = 1 + the sum over i);
- speedup: the method's tokens per second over greedy's, on the same prompts (the Trace's wall time, which
  includes the prefill), summed over the prompts; and the median of the per-prompt speedups, which one slow run
  (a first-use compile, a stall of the machine) moves less;
- exact match: the share of prompts whose tokens equal greedy's (at temperature 0; 100% for lossless methods);
- alpha and the draft cost c, the two axes of "Decoding Speculative Decoding": alpha solves tau = (1 - alpha^(g+1))
  / (1 - alpha) for the mean draft depth g, c is the time a step spends beyond one greedy forward, per draft token,
  in greedy forwards.

Writes the JSON (settings, every run, the summary), the plots (one HTML, a PNG each through headless Chromium)
and prints a Markdown table last.
"""
from __future__ import annotations

import argparse
import json
import platform
from datetime import date
from pathlib import Path

import torch
from tqdm import tqdm

from .. import registry
from ..errors import LabError
from ..metrics import (  # noqa: F401
    BASELINE,
    expected_speedup,
    group_metrics,
    reach_curve,
    run_record,
    solve_alpha,
    step_shapes,
    summarize,
)
from .output import save, write_figures
from .suite import CATEGORIES, build_suite


def speculative_methods() -> list[str]:
    """Every registered method of the speculative family."""
    return sorted(n for n, m in registry.load_all().items() if m.family == "speculative")


# -- one run ------------------------------------------------------------------------------------------------
def run_bench(lab, prompts: list[dict], methods: list[str], *, max_new_tokens: int, temperature: float = 0.0,
              seed: int = 0, options: dict[str, dict] | None = None, progress: bool = True,
              warmup: int = 1, warm_every_prompt: bool = False, first: int = 0) -> list[dict]:
    """Run greedy and `methods` on every prompt (order rotating per prompt); one record per run. `first` is the
    first prompt's index in the whole suite (a shard's seeds and rotation are the unsharded run's).

    A method that raises gets an `error` record for that prompt and the benchmark goes on. `warmup` untimed runs
    per method come first (first-call costs; on a GPU the fast backend captures a shape's graph on its third use).
    `warm_every_prompt`: instead, an untimed run of every method on every prompt at the full length. On a GPU each
    new context length's column bucket captures graphs and compiles kernels on first use, hundreds of milliseconds
    that would otherwise land in whichever method met that length first (on the H200 greedy's long prompts ran at
    150-200 tokens/s instead of 1,150, and made the draft methods' summed speedups look 1.1-1.2x while their
    per-prompt median was 0.6-0.8x).
    """
    options = options or {}
    names = [BASELINE] + [m for m in methods if m != BASELINE]
    for name in names:
        registry.parse_options(registry.get(name), options.get(name, {}))  # fail early on a bad name or option
    for name in names if prompts else []:  # first-call costs stay out of the timings
        warm = [(p, max_new_tokens) for p in prompts] if warm_every_prompt else \
            [(prompts[k % len(prompts)], min(32, max_new_tokens)) for k in range(warmup)]
        for p, tokens in warm:
            try:
                lab.generate(name, p["prompt"], chat=p["chat"], max_new_tokens=tokens, temperature=temperature,
                             seed=seed, **options.get(name, {}))
            except Exception:
                break
    runs = []
    bar = tqdm(total=len(prompts) * len(names), desc="spec bench", disable=not progress)
    for i, p in enumerate(prompts, start=first):
        shift = i % len(names)
        mine = {}
        for name in names[shift:] + names[:shift]:
            bar.set_postfix_str(f"{p['category']}: {name}")
            try:
                trace = lab.generate(name, p["prompt"], chat=p["chat"], max_new_tokens=max_new_tokens,
                                     temperature=temperature, seed=seed + i, **options.get(name, {})).trace
                mine[name] = run_record(p, name, trace)
            except Exception as err:
                mine[name] = run_record(p, name, None, f"{type(err).__name__}: {err}")
            bar.update(1)
        reference = mine[BASELINE].get("tokens")
        for name in names:
            row = mine[name]
            if "error" not in row:
                row["exact"] = None if temperature > 0 or reference is None else row["tokens"] == reference
            runs.append(row)
    bar.close()
    return runs


# -- report -------------------------------------------------------------------------------------------------
def _cell(x, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def markdown_table(results: dict) -> str:
    """Speedup per category, then overall speedup (summed tokens over summed time), the median of the per-prompt
    speedups, tau, tokens/forward and exact match; fastest first."""
    summary, categories = results["summary"], results["categories"]
    lossless = results.get("lossless", {})
    order = sorted(summary, key=lambda m: (m != BASELINE, -(summary[m]["overall"]["speedup"] or 0)))
    head = ["method", "lossless", *categories, "overall", "median", "tau", "tokens/forward", "exact"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for m in order:
        s = summary[m]
        cells = [m, {True: "yes", False: "no"}.get(lossless.get(m), "?")]
        for c in [*categories, "overall"]:
            g = s.get(c, {})
            cells.append("error" if g.get("errors") and not g.get("prompts") else _cell(g.get("speedup"), ".2f") + "x")
        o = s["overall"]
        median = o.get("speedup_median")  # (absent from reports written before it was measured)
        cells += ["–" if median is None else f"{median:.2f}x", _cell(o["tau"], ".2f"), _cell(o["tokens_per_forward"], ".2f"),
                  "–" if o["exact_match"] is None else f"{100 * o['exact_match']:.0f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_plots(results: dict, out: Path, png: bool = True) -> list[Path]:
    """One HTML with every figure beside the JSON, and one PNG per figure."""
    from ..widgets.analysis import bench_figures

    return write_figures(bench_figures(results), out, png)


def parse_method_opts(pairs: list[str]) -> dict[str, dict]:
    """--opt method.key=value -> {method: {key: value}}."""
    out: dict[str, dict] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        method, dot, key = name.partition(".")
        if not (dot and key and equals):
            raise LabError(f"--opt {pair!r}: use method.key=value, e.g. sps.length=6")
        out.setdefault(method.strip(), {})[key.strip()] = value
    return out


def merge(paths: list[str]) -> dict:
    """Join benchmark files that ran different methods on the same prompts (a long run split into several).

    Each method keeps the metrics of its own file, so its speedup is against the greedy run beside it."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    first = parts[0]
    if any(p["prompts"] != first["prompts"] or p["max_new_tokens"] != first["max_new_tokens"] for p in parts):
        raise LabError("--merge: the files must share their prompts and --max-new-tokens")
    out = dict(first, command=" && ".join(p["command"] for p in parts), methods=[BASELINE], summary={}, runs=[],
               lossless={}, departures={})
    for p in parts:
        for m in p["methods"]:
            if m in out["summary"]:
                continue
            if m != BASELINE:
                out["methods"].append(m)
            out["summary"][m] = p["summary"][m]
            out["lossless"][m] = p["lossless"][m]
            if m in p.get("departures", {}):  # files written before the field existed have none
                out["departures"][m] = p["departures"][m]
            out["runs"] += [r for r in p["runs"] if r["method"] == m]
    return out


def main(argv: list[str] | None = None, lab=None, prompts: list[dict] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m lab bench spec")
    ap.add_argument("--model", default="default")
    ap.add_argument("--device")
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: float32 on CPU, bf16 on GPU")
    ap.add_argument("--suite", help="a JSONL of prompts ({id, prompt, chat, category}) instead of building the suite")
    ap.add_argument("--write-suite", help="only build the suite and write it to this JSONL (for a machine without "
                                          "the data packages)")
    ap.add_argument("--per-category", type=int, default=10)
    ap.add_argument("--categories", default=",".join(CATEGORIES))
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--methods", default="", help="comma-separated; default: every speculative method")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup", type=int, help="untimed runs per method first (default: 1 on the CPU, 3 on a GPU)")
    ap.add_argument("--warm-every-prompt", action=argparse.BooleanOptionalAction, default=None,
                    help="instead, an untimed run of every method on every prompt first (default on a GPU: graphs "
                         "are captured and kernels compiled at each new context length)")
    ap.add_argument("--opt", action="append", default=[], metavar="METHOD.KEY=VALUE")
    ap.add_argument("--out", default="results/spec_bench_cpu.json")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--no-png", action="store_true")
    ap.add_argument("--merge", nargs="+", metavar="FILE", help="join files of runs split by method, then report")
    ap.add_argument("--ray", metavar="ADDRESS", help="fan method x prompt shards out over a Ray cluster ('auto', "
                                                     "'ray://HOST:PORT', or 'local' for one started here)")
    ap.add_argument("--shard-prompts", type=int, default=4, help="prompts per Ray shard (with --ray)")
    args = ap.parse_args(argv)
    if args.merge:
        results = merge(args.merge)
        return report(results, Path(args.out), args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] or speculative_methods()
    for name in methods:
        registry.get(name)  # unknown names fail before the model loads
    options = parse_method_opts(args.opt)
    for name, opts in options.items():
        options[name] = registry.parse_options(registry.get(name), opts)
    if args.max_new_tokens < 1:
        raise LabError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if prompts is None and args.suite:
        prompts = [json.loads(line) for line in Path(args.suite).read_text().splitlines() if line.strip()]
    if prompts is None:
        prompts = build_suite(args.per_category, [c.strip() for c in args.categories.split(",") if c.strip()])
    if args.write_suite:
        Path(args.write_suite).write_text("".join(json.dumps(p) + "\n" for p in prompts))
        print(f"wrote {len(prompts)} prompts to {args.write_suite}")
        return {"prompts": prompts}
    settings = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed, options=options)
    cluster = None
    if args.ray:
        from . import distributed

        on_gpu = bool(args.device) and args.device.startswith("cuda")
        settings["warmup"] = args.warmup if args.warmup is not None else 3 if on_gpu else 1
        settings["warm_every_prompt"] = on_gpu if args.warm_every_prompt is None else args.warm_every_prompt
        runs, summary, nodes = distributed.run(args.ray, run_bench, args.model, args.device, args.dtype, prompts,
                                               methods, args.shard_prompts, settings)
        name, device = args.model, ", ".join(sorted({r["device"] for r in runs if "device" in r}))
        cluster = {"address": args.ray, "nodes": nodes, "shard_prompts": args.shard_prompts}
    else:
        if lab is None:
            from ..api import Lab
            lab = Lab(args.model, device=args.device, dtype=getattr(torch, args.dtype) if args.dtype else None)
        on_gpu = lab.target.device.type == "cuda"
        settings["warmup"] = args.warmup if args.warmup is not None else 3 if on_gpu else 1
        settings["warm_every_prompt"] = on_gpu if args.warm_every_prompt is None else args.warm_every_prompt
        runs = run_bench(lab, prompts, methods, **settings)
        summary, name, device = summarize(runs), getattr(lab, "name", args.model), str(lab.target.device)
    infos = registry.load_all()
    base = [r for r in runs if r["method"] == BASELINE and "error" not in r]
    forward_ms = 1000 * sum(r["wall_s"] - r["prefill_s"] for r in base) / max(sum(r["forwards"] for r in base), 1)
    results = {"benchmark": "spec-bench", "model": name, "device": device, **({"ray": cluster} if cluster else {}),
               "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "date": date.today().isoformat(),
               "command": "python -m lab bench spec " + " ".join(argv or []),
               "per_category": args.per_category, "max_new_tokens": args.max_new_tokens,
               "temperature": args.temperature, "seed": args.seed, "options": options,
               "greedy_forward_ms": round(forward_ms, 3),
               "categories": list(dict.fromkeys(p["category"] for p in prompts)),
               "methods": [BASELINE] + [m for m in methods if m != BASELINE],
               "lossless": {m: infos[m].lossless for m in [BASELINE, *methods]},
               "departures": {m: infos[m].departures for m in [BASELINE, *methods]},
               "prompts": [{"id": p["id"], "category": p["category"], "source": p.get("source", "")} for p in prompts],
               "summary": summary, "runs": [{k: v for k, v in r.items() if k != "tokens"} for r in runs]}
    return report(results, Path(args.out), args)


def report(results: dict, out: Path, args) -> dict:
    """Write the JSON and the plots, print the table last."""
    def figures():
        from ..widgets.analysis import bench_figures  # plotly: not on a bare GPU machine (--no-plots)

        return bench_figures(results)

    save(results, out, None if args.no_plots else figures, png=not args.no_png)
    print(f"\n{len(results['prompts'])} prompts x {results['max_new_tokens']} new tokens, temperature "
          f"{results['temperature']}, greedy {results['greedy_forward_ms']:.1f} ms per forward on {results['device']}; "
          f"speedup = tokens/s over greedy's\n")
    print(markdown_table(results))
    return results


if __name__ == "__main__":
    main()
