"""The diffusion benchmark: one-token-per-step decoding and every diffusion policy at several settings, on tasks a
135M model can do, scored automatically: quality against denoiser forwards (a ParallelBench-style trade-off).

    python -m lab bench dllm [--model dllm-default] [--per-task 10] [--max-new-tokens 64]
                             [--policies fast-dllm,freedave | fast-dllm:threshold=0.8] [--judge default | none]
                             [--device cuda] [--dtype bfloat16] [--suite FILE.jsonl | --write-suite FILE.jsonl]
                             [--out results/dllm_bench.json] [--no-plots] [--no-png]
    python -m lab bench dllm --merge A.json B.json [--tasks qa,copy,arithmetic] [--out FILE.json]

Tasks (lab/bench/dllm_tasks.py; prompts from installed packages only, deterministic; `--write-suite` for a
machine without them):

- qa: a held-out ShareGPT answer as the passage; how does the sentence that begins with its first words end?
  The answer is a span of the passage. Score 1 if the answer (normalised: lower case, punctuation dropped) equals
  the output or is contained in it, word for word.
- copy: copy a list (seeded words) or a held-out ShareGPT sentence with one edit (replace, remove or append a
  word). Score 1 if a line of the output is exactly the edited text (outer quotes, spaces, a final period aside).
- arithmetic: templated sums, differences, products and unit conversions with seeded numbers. Score 1 if the last
  number of the output's first line is the answer.
- chat: first user turns of held-out ShareGPT conversations (lab.bench.suite's held-out set), judged by an
  autoregressive model (`--judge`, the default model): the per-token negative log-likelihood of the dLLM's answer
  given the prompt (lower is better; like any likelihood judge it favours bland and repetitive text).

Every setting runs every prompt at temperature 0. Per setting: the task scores, their mean over qa, copy and
arithmetic (`accuracy`, in percent), the chat NLL, and tokens per forward (all new tokens / all denoiser forwards).
deer runs on the judge (the autoregressive model verifies, the dLLM drafts): its forwards are the verifier's, its
dLLM forwards are `draft_forwards`. apd runs on the dLLM with the judge's model as its verifier: its forwards are
the dLLM's, the verifier's are `draft_forwards`. The learned policies (learn2pd, tracelock) run with the filter
shipped for the model (only dllm-default has them) or one named in --policies (learn2pd:filter=DIR); otherwise they
are skipped. Writes the JSON (with the command), the trade-off plots (HTML; a PNG each when Chromium is there) and
prints a Markdown table last. `--merge` runs nothing: it joins results files over the same tasks into one table
and plot (lab/bench/dllm_merge.py).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
from datetime import date
from pathlib import Path

import torch
from tqdm import tqdm

from .. import registry
from ..dllm import filters
from ..errors import LabError
from .dllm_merge import merge
from .dllm_tasks import SCORED, SCORERS, TASKS, Judge, build_tasks, read_suite
from .output import save, write_figures
from .quality import parse_spec


# -- settings ---------------------------------------------------------------------------------------------------
def default_settings(n: int) -> list[tuple[str, dict]]:
    """(policy, options) pairs; the first is the reference, one token per step (llada steps=0)."""
    return [("llada", {"steps": 0}), ("llada", {"steps": max(1, n // 2)}), ("llada", {"steps": max(1, n // 4)}),
            ("fast-dllm", {"threshold": 0.9}), ("fast-dllm", {"threshold": 0.7}), ("fast-dllm", {"threshold": 0.5}),
            ("fast-dllm", {"factor": 1.0}), ("dream", {"steps": max(1, n // 2)}), ("dream", {"steps": max(1, n // 4)}),
            ("prophet", {}), ("freedave", {"drafts": 4}), ("ssd-dllm", {"drafts": 4}),
            ("dinfer", {"decoder": "hierarchy"}), ("dinfer", {"decoder": "credit"}), ("lopa", {}), ("localleap", {}),
            ("wedlm", {}), ("wedlm", {"entropy_threshold": 1.0}), ("deer", {"draft_steps": 1}),
            ("apd", {"mixture_weight": 0.7}), ("apd", {"mixture_weight": 0.9})]

AR_VERIFIED = ("deer", "apd")  # policies that need the judge's autoregressive model (its vocabulary = the dLLM's)


def diffusion_policies() -> list[str]:
    return sorted(n for n, m in registry.load_all().items() if m.family == "diffusion")


def label(policy: str, options: dict) -> str:
    return policy + "".join(f" {k}={v}" for k, v in options.items())


def choose_settings(spec: str, n: int) -> list[tuple[str, dict]]:
    """--policies: names (all their settings above, or their defaults) or name:key=value specs; always the
    reference first. A name that is not a diffusion policy is a one-line error."""
    known = diffusion_policies()
    table = default_settings(n)
    ordered = list(dict.fromkeys([s[0] for s in table[1:]] + known))  # the table's order, then any newer policy
    wanted = [parse_spec(s) for s in spec.split(",") if s.strip()] if spec.strip() else \
        [(p, None) for p in ordered if p in known]
    chosen = [table[0]]
    for name, options in wanted:
        if name not in known:
            raise LabError(f"unknown diffusion policy {name!r}: use {', '.join(known)}")
        if options:
            chosen.append((name, registry.parse_options(registry.get(name), options)))
        else:
            chosen += [s for s in table[1:] if s[0] == name] or [(name, {})]
    seen, out = set(), []
    for s in chosen:
        if label(*s) not in seen:
            seen.add(label(*s))
            out.append(s)
    return out


# -- running ----------------------------------------------------------------------------------------------------
def run_one(lab, judge: Judge | None, p: dict, policy: str, options: dict, n: int) -> dict:
    runner = lab
    if policy == "deer":  # the autoregressive model verifies, the dLLM drafts
        runner = judge.lab
        runner._drafts.setdefault(f"bench:{lab.name}", lab.target)  # the loaded dLLM serves as the draft
        options = {**options, "draft": f"bench:{lab.name}"}
    elif policy == "apd":  # the dLLM proposes, the judge's autoregressive model verifies through the mixture
        lab._drafts.setdefault(f"bench:{judge.lab.name}", judge.lab.target)
        options = {**options, "verifier": f"bench:{judge.lab.name}"}
    trace = runner.generate(policy, p["prompt"], chat=True, max_new_tokens=n, temperature=0.0, seed=0,
                            **options).trace
    row = {"new_tokens": trace.new_tokens, "forwards": trace.forwards, "draft_forwards": trace.draft_forwards,
           "wall_s": round(trace.wall_s, 4), "stop": trace.stop, "text": trace.text}
    if p["task"] == "chat":
        row["score"] = judge.nll(p["prompt"], trace.text, trace.stop == "eos") if judge else None
    else:
        row.update(SCORERS[p["task"]](trace.text, p["answer"]))
    return row


def summarize(runs: list[dict], settings: list[str], tasks: list[str]) -> dict:
    out = {}
    for s in settings:
        mine = [r for r in runs if r["setting"] == s and "error" not in r]
        row = {"runs": len(mine), "errors": sum(r["setting"] == s and "error" in r for r in runs),
               "new_tokens": sum(r["new_tokens"] for r in mine), "forwards": sum(r["forwards"] for r in mine),
               "draft_forwards": sum(r["draft_forwards"] for r in mine)}
        row["tokens_per_forward"] = round(row["new_tokens"] / row["forwards"], 4) if row["forwards"] else None
        for task in tasks:
            scores = [r["score"] for r in mine if r["task"] == task and r["score"] is not None]
            row[task] = round(statistics.mean(scores) * (1 if task == "chat" else 100), 3) if scores else None
        accuracy = [r["score"] for r in mine if r["task"] in SCORED]
        row["accuracy"] = round(100 * statistics.mean(accuracy), 3) if accuracy else None
        out[s] = row
    return out


def best_within(results: dict, points: float = 1.0) -> dict | None:
    """The setting with the most tokens per forward whose accuracy is at most `points` below one-token-per-step's
    (the issue's bar: >= 3 tokens per forward at <= 1 point lost), or None."""
    summary = results["summary"]
    base = summary[results["settings"][0]["label"]]["accuracy"]
    fits = [(row["tokens_per_forward"], name) for name, row in summary.items() if base is not None
            and row["accuracy"] is not None and row["tokens_per_forward"] and row["accuracy"] >= base - points]
    if not fits:
        return None
    tpf, name = max(fits)
    return {"setting": name, "tokens_per_forward": tpf, "accuracy": summary[name]["accuracy"], "baseline": base}


def markdown_table(results: dict) -> str:
    summary, tasks = results["summary"], results["tasks"]
    base = summary[results["settings"][0]["label"]]["accuracy"]
    head = ["setting", "lossless", "tokens/forward", "forwards", *[f"{t} NLL" if t == "chat" else f"{t} %"
                                                                   for t in tasks], "accuracy %", "vs one/step"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    cell = lambda x, f: "–" if x is None else format(x, f)  # noqa: E731
    for s in results["settings"]:
        row = summary[s["label"]]
        delta = None if row["accuracy"] is None or base is None else row["accuracy"] - base
        lines.append("| " + " | ".join([s["label"] + (f" ({row['errors']} errors)" if row["errors"] else ""),
                                        "reference" if s is results["settings"][0] else
                                        "yes" if s["lossless"] else "no", cell(row["tokens_per_forward"], ".2f"),
                                        str(row["forwards"]), *[cell(row[t], ".3f" if t == "chat" else ".1f")
                                                                for t in tasks],
                                        cell(row["accuracy"], ".1f"), cell(delta, "+.1f")]) + " |")
    return "\n".join(lines)


def line_of(setting: dict) -> str:
    """The trade-off plot's line for a setting: its policy and its choices by name (order=left-to-right, decoder=
    credit), so that only numbers (threshold, steps, block size, drafts) move a point along a line."""
    return setting["policy"] + "".join(f" {k}={v}" for k, v in setting["options"].items() if isinstance(v, str))


def figures(results: dict) -> dict:
    from ..widgets.dllm_figures import tradeoff_figure

    summary = results["summary"]
    points = lambda key: [{"method": line_of(s), "setting": s["label"], "score": summary[s["label"]][key],  # noqa
                           "tokens_per_forward": summary[s["label"]]["tokens_per_forward"]}
                          for s in results["settings"] if summary[s["label"]][key] is not None
                          and summary[s["label"]]["tokens_per_forward"] is not None]
    base = summary[results["settings"][0]["label"]]
    out = {"accuracy": tradeoff_figure(points("accuracy"), base["accuracy"], "accuracy % (qa, copy, arithmetic)")}
    if "chat" in results["tasks"] and points("chat"):
        out["chat"] = tradeoff_figure(points("chat"), base["chat"], "chat NLL per token (lower is better)")
    return out


def save_plots(results: dict, out: Path, png: bool) -> list[Path]:
    return write_figures(figures(results), out, png, height=420)


def load_dllm(name: str, device, dtype):
    from ..api import Lab
    from ..dllm.model import spec_of

    lab = Lab(name, device=device, dtype=dtype)
    spec_of(lab.target, f"bench dllm --model {name!r}")  # not a diffusion LM: one line naming the fix
    if lab.tokenizer is None:
        raise LabError(f"--model {name!r} has no tokenizer: the tasks are text")
    return lab


def main(argv: list[str] | None = None, lab=None, judge=None, prompts: list[dict] | None = None) -> dict:
    """`judge`: a Lab of an autoregressive model, or "none" (tests pass tiny ones)."""
    ap = argparse.ArgumentParser(prog="python -m lab bench dllm")
    ap.add_argument("--model", default="dllm-default", help="a dLLM the lab loads (dllm-default, a train dllm folder)")
    ap.add_argument("--judge", default="default", help="the autoregressive model that judges chat (none: skip)")
    ap.add_argument("--device")
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--per-task", type=int, default=10)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--block-size", type=int, default=0,
                    help="every setting's block size unless it names its own (0: the model's default)")
    ap.add_argument("--policies", default="", help="comma-separated names or name:key=value; default: all")
    ap.add_argument("--suite", help="a JSONL of tasks (written by --write-suite) instead of building them")
    ap.add_argument("--write-suite", help="only build the tasks and write them to this JSONL")
    ap.add_argument("--merge", nargs="+", metavar="FILE",
                    help="results files over the same tasks: one table and plot, no runs (as bench spec --merge)")
    ap.add_argument("--out", default="results/dllm_bench.json")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--no-png", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if [t for t in tasks if t not in TASKS] or not tasks:
        raise LabError(f"--tasks {args.tasks!r}: use some of {', '.join(TASKS)}")
    if args.max_new_tokens < 1:
        raise LabError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.merge:
        return report(merged(args.merge, tasks, argv), Path(args.out), args)
    settings = choose_settings(args.policies, args.max_new_tokens)
    if args.block_size < 0:
        raise LabError(f"--block-size must be >= 0, got {args.block_size}")
    if args.block_size:
        infos = registry.load_all()
        settings = [(p, {"block_size": args.block_size, **o} if "block_size" in infos[p].options else o)
                    for p, o in settings]
    if prompts is None and args.suite:
        prompts = read_suite(args.suite)
    if args.write_suite:
        prompts = prompts if prompts is not None else build_tasks(args.per_task, tasks)
        Path(args.write_suite).write_text("".join(json.dumps(p) + "\n" for p in prompts))
        print(f"wrote {len(prompts)} tasks to {args.write_suite}")
        return {"prompts": prompts}
    dtype = getattr(torch, args.dtype) if args.dtype else None
    lab = lab if lab is not None else load_dllm(args.model, args.device, dtype)
    if judge is None and args.judge != "none":
        from ..api import Lab
        judge = Lab(args.judge, device=str(lab.target.device), dtype=dtype)
    judge = None if judge is None or judge == "none" else Judge(judge)
    skipped = sorted({s[0] for s in settings if s[0] in AR_VERIFIED})
    if skipped and (judge is None or judge.lab.tokenizer.get_vocab() != lab.tokenizer.get_vocab()):
        settings = [s for s in settings if s[0] not in AR_VERIFIED]
        print(f"{' and '.join(skipped)} skipped: needs an autoregressive verifier (--judge) with the dLLM's vocabulary")
    infos = registry.load_all()
    for name in dict.fromkeys(s[0] for s in settings if "filter" in infos[s[0]].options and not s[1].get("filter")):
        if not filters.shipped(name, lab.name):  # a learned policy with no filter for this model
            settings = [s for s in settings if s[0] != name]
            print(f"{name} skipped: no trained filter ships for {lab.name} (python -m lab train {name} --model "
                  f"{lab.name} --out DIR, then --policies {name}:filter=DIR)")
    prompts = prompts if prompts is not None else build_tasks(args.per_task, tasks)
    prompts = [p for p in prompts if p["task"] in tasks]
    labels = [label(*s) for s in settings]
    runs = []
    bar = tqdm(total=len(prompts) * len(settings), desc="dllm bench", disable=args.no_progress)
    interrupted = False
    try:
        for p in prompts:
            done = []
            for (policy, options), name in zip(settings, labels):
                bar.set_postfix_str(f"{p['task']}: {name}")
                row = {"id": p["id"], "task": p["task"], "setting": name}
                try:
                    row.update(run_one(lab, judge, p, policy, options, args.max_new_tokens))
                except LabError as err:
                    row["error"] = str(err)
                except Exception as err:  # one failing run is reported; the benchmark goes on
                    row["error"] = f"{type(err).__name__}: {err}"
                done.append(row)
                bar.update(1)
            runs += done
    except KeyboardInterrupt:  # Ctrl-C (or timeout -s INT): keep the prompts every setting finished
        interrupted = True
        finished = {r["id"] for r in runs}
        prompts = [p for p in prompts if p["id"] in finished]
        print(f"\ninterrupted: {len(prompts)} prompts finished every setting; writing those")
    bar.close()
    results = {"benchmark": "dllm", "model": lab.name, "judge": judge.lab.name if judge else None,
               "device": str(lab.target.device), "dtype": str(lab.target.dtype).removeprefix("torch."),
               "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "date": date.today().isoformat(),
               "command": "python -m lab bench dllm " + " ".join(argv or []),
               "max_new_tokens": args.max_new_tokens, "block_size": args.block_size or None, "temperature": 0.0,
               "tasks": tasks,
               "settings": [{"label": n, "policy": p, "options": o, "lossless": infos[p].lossless}
                            for (p, o), n in zip(settings, labels)],
               "prompts": [{k: p.get(k) for k in ("id", "task", "answer", "source")} for p in prompts],
               "summary": summarize(runs, labels, tasks), "runs": runs}
    if interrupted:
        results["interrupted"] = True
    results["best_within_1_point"] = best_within(results)
    return report(results, Path(args.out), args)


def merged(paths: list[str], tasks: list[str], argv: list[str] | None) -> dict:
    """--merge: the files' runs as one results dict, summarized as a bench run is."""
    results = merge(paths, tasks)
    results.update(date=date.today().isoformat(), command="python -m lab bench dllm " + " ".join(argv or []),
                   summary=summarize(results["runs"], [s["label"] for s in results["settings"]], results["tasks"]))
    results["best_within_1_point"] = best_within(results)
    for d in results["duplicates"]:
        print(f"{d['setting']} is also in {d['file']}: {d['same_texts']} of {d['tasks']} texts the same (kept the "
              "first file's)")
    return results


def report(results: dict, out: Path, args) -> dict:
    save(results, out, None if args.no_plots else lambda: figures(results), png=not args.no_png, height=420)
    print(f"\n{len(results['prompts'])} tasks x up to {results['max_new_tokens']} new tokens on {results['model']} "
          f"({results['device']}), temperature 0; accuracy: mean of {', '.join(t for t in SCORED)}; chat judged by "
          f"{results['judge'] or 'nobody'}")
    best = results.get("best_within_1_point")
    if best:
        print(f"most tokens per forward within 1 point of one token per step: {best['setting']} "
              f"({best['tokens_per_forward']:.2f} tokens/forward, accuracy {best['accuracy']:.1f}% vs "
              f"{best['baseline']:.1f}%)")
    print()
    print(markdown_table(results))
    return results


if __name__ == "__main__":
    main()
