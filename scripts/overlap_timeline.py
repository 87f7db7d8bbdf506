"""Do PEARL's and DuoDecoding's draft and target really run at the same time? A timeline measured on the device.

    python scripts/overlap_timeline.py --model default --device cuda --out DIR [--prompts 4] [--tokens 64]
    python scripts/overlap_timeline.py --tiny --device cpu --out DIR          (a tiny random model, for a try)

For a few real prompts (lab/data/prompts.jsonl, chat template) it runs greedy, then `pearl` and `duodecoding`
with the draft beside the target (on a GPU: pearl's draft on its own CUDA stream, duodecoding's on the CPU) and
the same methods with `parallel=False` (the draft drafts, then the target forwards, on the target's stream:
serialized), plus pearl with its draft thread kept on the target's stream (how it ran before it had a stream of
its own), and `specbranch` (branches drafted beside the verification) with its serialized twin; `--variants a,b`
runs only those (their serialized twins are added, for the ratio). specbranch's rounds also say how often a
prepared continuation was used (hit rate, by kind) and the draft forwards spent before the target's forward. Every round's target forward and draft forwards are timed on the device (CUDA events on the stream
each ran on; the host clock for a CPU draft) by the methods themselves (Step.info["timeline"]).

Writes DIR/overlap_timeline.json: device, date, command; per variant and prompt the rounds' target and draft
intervals (ms from the round's start), the overlap fraction (time both ran / time the draft ran), wall time per
token, the ratio to the serialized run and to greedy, and whether the tokens are greedy's. Prints a table last.
Draw it with `widgets.overlap_figure.overlap_timeline_figure` (plotly is not needed here).
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

from lab.api import Lab
from lab.speculative import overlap

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {  # name -> (method, options, the draft's own stream allowed)
    "pearl": ("pearl", {}, True),
    "pearl-one-stream": ("pearl", {}, False),
    "pearl-serial": ("pearl", {"parallel": False}, True),
    "duodecoding": ("duodecoding", {}, True),
    "duodecoding-serial": ("duodecoding", {"parallel": False}, True),
    "specbranch": ("specbranch", {}, True),
    "specbranch-serial": ("specbranch", {"parallel": False}, True),
}
SERIAL = {"pearl": "pearl-serial", "pearl-one-stream": "pearl-serial", "duodecoding": "duodecoding-serial",
          "specbranch": "specbranch-serial"}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run(lab_, method: str, prompt, tokens: int, device: str, stream: bool, **opts):
    """One generation, timed wall to wall (the device drained before and after)."""
    allowed = overlap.side_stream
    if not stream:  # the draft thread stays on the target's stream (its kernels queue behind the target's)
        overlap.side_stream = lambda *_: False
    try:
        sync(device)
        start = time.perf_counter()
        result = lab_.generate(method, prompt, max_new_tokens=tokens, **opts)
        sync(device)
        return result, time.perf_counter() - start
    finally:
        overlap.side_stream = allowed


def setup(args):
    """The Lab and the prompts: the default (or given) model with real chat prompts, or a tiny random model."""
    if args.tiny:
        from lab.models import tiny

        target = Lab(model_obj=tiny("llama", vocab_size=96, layers=4, hidden=64, seed=1).to(args.device),
                     tokenizer=None)
        target._drafts["default"] = target.target.view([0])
        return target, [[(s * 7 + i * 3) % 50 + 1 for i in range(12)] * 2 for s in range(args.prompts)], {}
    target = Lab(args.model, device=args.device)
    rows = [json.loads(line) for line in (ROOT / "lab" / "data" / "prompts.jsonl").read_text().splitlines()
            if line.strip()]
    chat = [r for r in rows if r.get("chat")] or rows
    return target, [r["prompt"] for r in chat[: args.prompts]], {"chat": True}


def overlap_fraction(rounds: list[dict]) -> float | None:
    draft = sum(r.get("draft_ms", 0.0) for r in rounds)
    return round(sum(r.get("overlap_ms", 0.0) for r in rounds) / draft, 4) if draft else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", required=True)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=3, help="runs of each variant on the first prompt first (graphs)")
    ap.add_argument("--tiny", action="store_true", help="a tiny random llama instead of --model (a quick CPU try)")
    ap.add_argument("--variants", default="", help=f"comma-separated, of {', '.join(VARIANTS)} (default: all)")
    args = ap.parse_args()
    chosen = [v for v in args.variants.split(",") if v] or list(VARIANTS)
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    chosen += [SERIAL[v] for v in chosen if v in SERIAL and SERIAL[v] not in chosen]
    variants = {v: VARIANTS[v] for v in VARIANTS if v in chosen}
    torch.manual_seed(0)
    target, prompts, opts = setup(args)
    device = str(target.target.device)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    out = {"device": name, "date": datetime.datetime.now().isoformat(timespec="seconds"),
           "command": " ".join(["python", *sys.argv]), "torch": torch.__version__, "model": target.name,
           "backend": target.target.describe().backend, "tokens": args.tokens, "prompts": len(prompts),
           "variants": {}}
    for _ in range(args.warmup):  # CUDA graphs are captured once a shape has been asked a few times
        run(target, "greedy", prompts[0], args.tokens, device, True, **opts)
        for method, options, stream in variants.values():
            try:
                run(target, method, prompts[0], args.tokens, device, stream, **options, **opts)
            except Exception:  # reported below, where it fails again
                pass
    greedy = []
    for prompt in prompts:
        result, wall = run(target, "greedy", prompt, args.tokens, device, True, **opts)
        greedy.append({"tokens": result.tokens, "wall_s": round(wall, 5),
                       "ms_per_token": round(1e3 * wall / max(1, len(result.tokens)), 4)})
    out["greedy"] = [{k: v for k, v in g.items() if k != "tokens"} for g in greedy]
    for variant, (method, options, stream) in variants.items():
        runs = []
        try:
            for prompt, ref in zip(prompts, greedy):
                result, wall = run(target, method, prompt, args.tokens, device, stream, **options, **opts)
                rounds = [s.info["timeline"] for s in result.trace.steps if not s.prefill and "timeline" in s.info]
                steps = [s for s in result.trace.steps if not s.prefill]
                hits = collections.Counter(s.info.get("kind") for s in steps if "hit" in s.info)
                runs.append({"identical": result.tokens == ref["tokens"], "new_tokens": len(result.tokens),
                             **({"hits": {str(k): n for k, n in hits.items()},
                                 "sequential_draft_forwards": sum(s.info.get("sequential", 0) for s in steps)}
                                if hits else {}),
                             "wall_s": round(wall, 5), "ms_per_token": round(1e3 * wall / max(1, len(result.tokens)), 4),
                             "draft_forwards": result.trace.draft_forwards, "overlap_fraction": overlap_fraction(rounds),
                             "rounds": rounds})
            out["variants"][variant] = {"method": method, "options": options, "draft_stream": stream, "runs": runs}
        except Exception as err:  # keep what the other variants measured
            out["variants"][variant] = {"method": method, "options": options, "error": repr(err),
                                        "traceback": traceback.format_exc()[-2000:]}
    table = []
    for variant, v in out["variants"].items():
        if "runs" not in v:
            table.append((variant, "error: " + v["error"][:80]))
            continue
        ms = statistics.median(r["ms_per_token"] for r in v["runs"])
        serial = out["variants"].get(SERIAL.get(variant, ""), {}).get("runs")
        v["summary"] = {
            "identical": all(r["identical"] for r in v["runs"]),
            "overlap_fraction": overlap_fraction([x for r in v["runs"] for x in r["rounds"]]),
            "median_ms_per_token": ms,
            "vs_serial": round(statistics.median(s["ms_per_token"] / r["ms_per_token"]
                                                 for r, s in zip(v["runs"], serial)), 4) if serial else None,
            "vs_greedy": round(statistics.median(g["ms_per_token"] / r["ms_per_token"]
                                                 for r, g in zip(v["runs"], greedy)), 4),
        }
        hits = sum((collections.Counter(r.get("hits", {})) for r in v["runs"]), collections.Counter())
        if hits:
            v["summary"]["hit_rate"] = round(1 - hits["None"] / sum(hits.values()), 4)
            v["summary"]["hits"] = dict(hits)
        table.append((variant, v["summary"]))
    path = Path(args.out)
    path.mkdir(parents=True, exist_ok=True)
    (path / "overlap_timeline.json").write_text(json.dumps(out, indent=1))
    print(f"{name}, {target.name}, {len(prompts)} prompts x {args.tokens} tokens -> {path / 'overlap_timeline.json'}")
    print(f"{'variant':20} {'greedy?':8} {'overlap':>8} {'ms/token':>9} {'speedup vs serial':>18} {'vs greedy':>10}")
    print(f"{'greedy':20} {'':8} {'':>8} {statistics.median(g['ms_per_token'] for g in greedy):9.3f}")
    for variant, s in table:
        if isinstance(s, str):
            print(f"{variant:20} {s}")
            continue
        frac = "-" if s["overlap_fraction"] is None else f"{s['overlap_fraction']:.2f}"
        vs = "-" if s["vs_serial"] is None else f"{s['vs_serial']:.2f}x"
        hit = f"  hit rate {s['hit_rate']:.2f}" if "hit_rate" in s else ""
        print(f"{variant:20} {str(s['identical']):8} {frac:>8} {s['median_ms_per_token']:9.3f} {vs:>18} "
              f"{s['vs_greedy']:9.2f}x{hit}")


if __name__ == "__main__":
    main()
