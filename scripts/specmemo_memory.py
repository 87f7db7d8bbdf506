"""Does SpecMemo's tree stay inside its memory budget on the device? Each step's CUDA peak against the budget.

    python scripts/specmemo_memory.py --model default --device cuda --out DIR [--prompts 4] [--tokens 64]
    python scripts/specmemo_memory.py --tiny --device cpu --out DIR          (a tiny random model, for a try)

For a few real prompts (lab/data/prompts.jsonl, chat template) it runs greedy, then `specmemo` at several memory
budgets (2, 8, 32 MB by default) on the HF backend and on the fast backend (static cache and CUDA graphs, allocated
up front: there the budget picks the bucket a step runs in). On CUDA every step's allocator peak above the memory
in use when the step began is measured by the method itself (Step.info["memory_measured"], next to the model's
estimate "memory_bytes"), and the node budget is calibrated on it; on the CPU nothing is measured (modelled only).
The first steps run on the model's node budget, so a step over the budget before calibration is expected; the
check is `over_after_calibration`: steps whose peak went over after the first measured one. Steps that made a
one-off allocation (a graph captured for a new bucket, a cache made: memory that stays allocated, Step.info
"memory_one_off") are counted apart (`one_off_steps`, `max_one_off_bytes`), as the method does.

Writes DIR/specmemo_memory.json: device, date, command; per backend and budget the per-step measured peak bytes,
retained bytes, the model's estimate, node budget and tree size, tokens per forward, whether the tokens are
greedy's, and the largest measured peak against the budget; and what the gauge costs a step (us). Prints a table.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import traceback
from pathlib import Path

import torch

from lab.api import Lab

ROOT = Path(__file__).resolve().parent.parent
MB = 2**20


def setup(args):
    """One Lab per backend sharing the model, and the prompts: real chat prompts, or a tiny random model."""
    if args.tiny:
        from lab.models import tiny
        model = tiny("llama", vocab_size=96, layers=4, hidden=64, seed=1).to(args.device)
        labs = {kind: Lab(model_obj=model, tokenizer=None, backend=kind) for kind in args.backends}
        for lab_ in labs.values():
            lab_._drafts["default"] = lab_.target.view([0])
        return labs, [[(s * 7 + i * 3) % 50 + 1 for i in range(12)] * 2 for s in range(args.prompts)], {}
    first = Lab(args.model, device=args.device, backend=args.backends[0])
    labs = {args.backends[0]: first}
    for kind in args.backends[1:]:
        labs[kind] = Lab(model_obj=first.model, tokenizer=first.tokenizer, backend=kind)
        labs[kind].name = first.name
    rows = [json.loads(line) for line in (ROOT / "lab" / "data" / "prompts.jsonl").read_text().splitlines()
            if line.strip()]
    chat = [r for r in rows if r.get("chat")] or rows
    return labs, [r["prompt"] for r in chat[: args.prompts]], {"chat": True}


def plain_peak(lab_, prompt, tokens: int, device: str, opts) -> tuple[list[int], int | None]:
    """Greedy's tokens and its whole run's allocator peak (prefill included) above the memory in use before."""
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    result = lab_.generate("greedy", prompt, max_new_tokens=tokens, **opts)
    return result.tokens, (torch.cuda.max_memory_allocated() - base) if cuda else None


def one_run(lab_, prompt, tokens: int, mb: float, max_nodes: int, reference: list[int], opts) -> dict:
    result = lab_.generate("specmemo", prompt, max_new_tokens=tokens, memory_mb=mb, max_nodes=max_nodes, **opts)
    steps = [s for s in result.trace.steps if not s.prefill]
    one_off = [bool(s.info.get("memory_one_off")) for s in steps]  # a graph captured, a cache made in the step
    measured = [None if o else s.info["memory_measured"] for s, o in zip(steps, one_off)]
    first = next((i for i, m in enumerate(measured) if m is not None), len(steps))
    budget = mb * MB
    return {"identical": result.tokens == reference, "new_tokens": len(result.tokens),
            "tokens_per_forward": round(result.trace.tokens_per_forward, 4),
            "source": steps[0].info["memory_source"] if steps else None,
            "measured_peak_bytes": measured, "retained_bytes": [s.info["memory_retained"] for s in steps],
            "estimate_bytes": [s.info["memory_bytes"] for s in steps],
            "node_budget": [s.info["node_budget"] for s in steps], "tree_size": [len(s.proposed) for s in steps],
            "max_measured_bytes": max((m for m in measured if m is not None), default=None),
            "max_measured_after_calibration": max((m for m in measured[first + 1:] if m is not None), default=None),
            "one_off_steps": sum(one_off),
            "max_one_off_bytes": max((s.info["memory_measured"] for s, o in zip(steps, one_off) if o), default=None),
            "over_budget_steps": sum(m is not None and m > budget for m in measured),
            "over_after_calibration": sum(m is not None and m > budget for m in measured[first + 1:])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", required=True)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--budgets", type=float, nargs="+", default=[2, 8, 32], help="MB (2**20 bytes) per step")
    ap.add_argument("--max-nodes", type=int, default=64)
    ap.add_argument("--backends", nargs="+", default=None, help="hf and fast (fast only on a GPU by default)")
    ap.add_argument("--tiny", action="store_true", help="a tiny random llama instead of --model (a quick CPU try)")
    args = ap.parse_args()
    if args.backends is None:
        args.backends = ["hf", "fast"] if args.device.startswith("cuda") else ["hf"]
    if args.tiny:
        args.budgets = [b / 256 for b in args.budgets]  # the tiny model's rows are ~500x smaller than the default's
    torch.manual_seed(0)
    labs, prompts, opts = setup(args)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    some = next(iter(labs.values()))
    out = {"device": name, "date": datetime.datetime.now().isoformat(timespec="seconds"),
           "command": " ".join(["python", *sys.argv]), "torch": torch.__version__, "model": some.name,
           "tokens": args.tokens, "prompts": len(prompts), "max_nodes": args.max_nodes, "budgets_mb": args.budgets,
           "backends": {}}
    if args.device.startswith("cuda"):  # what the gauge costs a step: host-side allocator counters, no sync
        from lab.speculative.drafters.specmemo import Gauge
        gauge, start = Gauge(args.device), time.perf_counter()
        for _ in range(1000):
            gauge.open()
            gauge.close()
        out["gauge_us_per_step"] = round((time.perf_counter() - start) * 1e3, 3)
    table = []
    for kind, lab_ in labs.items():
        entry = out["backends"][kind] = {"greedy_peak_bytes": [], "budgets": {}}
        try:
            for _ in range(3):  # the fast backend captures a graph once a shape has been asked a few times
                lab_.generate("greedy", prompts[0], max_new_tokens=args.tokens, **opts)
                for mb in args.budgets:
                    lab_.generate("specmemo", prompts[0], max_new_tokens=args.tokens, memory_mb=mb,
                                  max_nodes=args.max_nodes, **opts)
            references = []
            for prompt in prompts:
                tokens, peak = plain_peak(lab_, prompt, args.tokens, args.device, opts)
                references.append(tokens)
                entry["greedy_peak_bytes"].append(peak)
            for mb in args.budgets:
                runs = [one_run(lab_, p, args.tokens, mb, args.max_nodes, ref, opts)
                        for p, ref in zip(prompts, references)]
                peaks = [r["max_measured_bytes"] for r in runs if r["max_measured_bytes"] is not None]
                after = [r["max_measured_after_calibration"] for r in runs
                         if r["max_measured_after_calibration"] is not None]
                summary = {"budget_bytes": int(mb * MB), "identical": all(r["identical"] for r in runs),
                           "tokens_per_forward": round(sum(r["tokens_per_forward"] for r in runs) / len(runs), 3),
                           "mean_tree_size": round(sum(sum(r["tree_size"]) for r in runs)
                                                   / max(1, sum(len(r["tree_size"]) for r in runs)), 2),
                           "max_measured_bytes": max(peaks, default=None),
                           "max_measured_after_calibration": max(after, default=None),
                           "over_budget_steps": sum(r["over_budget_steps"] for r in runs),
                           "over_after_calibration": sum(r["over_after_calibration"] for r in runs),
                           "one_off_steps": sum(r["one_off_steps"] for r in runs),
                           "steps": sum(len(r["tree_size"]) for r in runs)}
                entry["budgets"][str(mb)] = {"summary": summary, "runs": runs}
                table.append((kind, mb, summary))
        except Exception as err:  # keep what the other backend measured
            entry["error"], entry["traceback"] = repr(err), traceback.format_exc()[-2000:]
            table.append((kind, None, {"error": repr(err)}))
    path = Path(args.out)
    path.mkdir(parents=True, exist_ok=True)
    (path / "specmemo_memory.json").write_text(json.dumps(out, indent=1))
    print(f"{name}, {some.name}, {len(prompts)} prompts x {args.tokens} tokens -> {path / 'specmemo_memory.json'}")
    if "gauge_us_per_step" in out:
        print(f"gauge (reset + read the allocator's peak): {out['gauge_us_per_step']} us a step")
    print(f"{'backend':8} {'budget MB':>9} {'greedy?':8} {'tok/fwd':>8} {'tree':>6} {'max peak MB':>12} "
          f"{'after calib.':>13} {'over / steps':>13} {'over after':>11} {'one-off':>8}")
    for kind, mb, s in table:
        if "error" in s:
            print(f"{kind:8} error: {s['error'][:100]}")
            continue
        mbs = lambda b: "-" if b is None else f"{b / MB:.3f}"  # noqa: E731
        print(f"{kind:8} {mb:9.4g} {str(s['identical']):8} {s['tokens_per_forward']:8.3f} {s['mean_tree_size']:6.2f} "
              f"{mbs(s['max_measured_bytes']):>12} {mbs(s['max_measured_after_calibration']):>13} "
              f"{s['over_budget_steps']:>6} / {s['steps']:<5} {s['over_after_calibration']:>11} "
              f"{s['one_off_steps']:>8}")


if __name__ == "__main__":
    main()
