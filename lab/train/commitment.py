"""Train the filter of a learned commitment policy (learn2pd, tracelock) for one dLLM, on the CPU in minutes.

    python -m lab train learn2pd|tracelock --model MODEL --out DIR [--prompts 48] [--val 0]
        [--data sharegpt | FILE.jsonl] [--max-new-tokens 64] [--block-size 0] [--labels final | persistent]
        [--hidden 0] [--epochs 500] [--lr 0.01] [--threshold 0.9] [--device cpu] [--seed 0]

1. Prompts: first user turns of ShareGPT conversations outside the benchmark's held-out set
   (`lab.bench.suite.held_out`; lab/train/responses.py picks them), in the chat template; or a JSONL file of
   {"prompt": text or token ids}. The last `--val` of them (default a fifth) are held apart for validation.
2. The reference: `llada steps=0` (one token per step, low confidence) on each prompt, up to `--max-new-tokens`,
   with the model's block size; at every forward the policy's own features of the block's masked positions
   (lab/dllm/policies/<policy>.py computes them, here and when decoding) and their predictions are recorded.
3. Labels (lab.dllm.filters.stability_labels): "final", the prediction is the token finally committed there
   (Learn2PD; TraceLock's future stability); "persistent", besides, no later prediction there differs.
4. The filter: an MLP (`--hidden` units, 0: the policy's default; one layer, no hidden: logistic regression)
   fitted full-batch with Adam on binary cross-entropy.
5. Validation on the held-out prompts: label accuracy (at 0.5), precision and recall at `--threshold`, and the
   policy itself: tokens per forward and how often its output is the reference's.

Writes DIR/<policy>.json (the filter, a few KB) and DIR/<policy>.manifest.json (recipe, data, numbers). To ship
the filter of dllm-default, copy both into lab/data/dllm-default/; elsewhere pass filter=DIR to the policy.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Callable

import torch

from ..errors import LabError


@dataclass(frozen=True)
class Recipe:
    policy: str
    features: Callable  # block size -> a featurizer: Round -> (x [n, f], the flat output index of each masked row)
    outputs: Callable[[int], int]  # block size -> outputs per row of x
    hidden: Callable[[int], int]  # block size -> the default hidden width


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like every other bad input
        raise LabError(f"{self.prog}: {message}")


def parse(argv: list[str], policy: str) -> argparse.Namespace:
    p = Parser(prog=f"python -m lab train {policy}")
    p.add_argument("--model", required=True, help="the dLLM: dllm-default, a `train dllm` folder, ...")
    p.add_argument("--out", required=True, help="folder for the filter and its manifest")
    p.add_argument("--prompts", type=int, default=48, help="prompts in all (training and validation)")
    p.add_argument("--val", type=int, default=0, help="of them, held out for validation (0: a fifth)")
    p.add_argument("--data", default="sharegpt", help="sharegpt, or a JSONL file of {\"prompt\": text or ids}")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--block-size", type=int, default=0, help="0: the model's own (block diffusion), else 32")
    p.add_argument("--labels", default="final", choices=("final", "persistent"))
    p.add_argument("--hidden", type=int, default=0, help="hidden units (0: the policy's default)")
    p.add_argument("--epochs", type=int, default=500)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--threshold", type=float, default=0.9, help="the policy's threshold, for validation")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.prompts < 2 or args.max_new_tokens < 1 or args.epochs < 1 or args.val < 0 or args.val >= args.prompts:
        raise LabError("need --prompts >= 2, 0 <= --val < --prompts, --max-new-tokens >= 1 and --epochs >= 1")
    if not 0 <= args.threshold <= 1 or not args.lr > 0 or args.hidden < 0 or args.block_size < 0:
        raise LabError("--threshold must be in [0, 1], --lr > 0, --hidden and --block-size >= 0")
    if args.data != "sharegpt" and not Path(args.data).is_file():
        raise LabError(f"--data {args.data}: no such file (use sharegpt or a JSONL file of prompts)")
    return args


# -- data ------------------------------------------------------------------------------------------------------
def prompts_of(tl, data: str, count: int) -> list[list[int]]:
    """Token ids of `count` prompts: ShareGPT questions outside the benchmark's held-out set, or a JSONL file."""
    if data == "sharegpt":
        from .responses import questions

        if tl.tokenizer is None:
            raise LabError("--data sharegpt needs a model with a tokenizer: give a JSONL file of token ids")
        return [tl.encode(q["question"], chat=True) for q in questions(count)]
    rows = [json.loads(line) for line in Path(data).read_text().splitlines() if line.strip()][:count]
    if not all(isinstance(r, dict) and isinstance(r.get("prompt"), (str, list)) for r in rows):
        raise LabError(f"--data {data}: each line needs a \"prompt\" (text or token ids)")
    return [tl.encode(r["prompt"], chat=isinstance(r["prompt"], str)) for r in rows]


def reference(tl, prompt: list[int], max_new_tokens: int, block_size: int, recipe: Recipe):
    """`llada steps=0` on `prompt`, recording the policy's features at every forward: (records, final tokens,
    trace), a record being (x, output index, masked positions, their predictions)."""
    from ..decoding import Call, Decoding, drive
    from ..dllm.loop import block_size_of, denoise
    from ..sampling import Sampling
    from ..trace import Trace

    dec = Decoding(tl.target.fork(), prompt, Sampling(), None, max_new_tokens, tl.eos, tl.tokenizer, Call(tl))
    size = block_size_of(dec, f"train {recipe.policy}", block_size)
    features, records = recipe.features(size), []

    def pick(r):
        x, index = features(r)
        records.append((x.cpu(), index.cpu(), [r.window[j] for j in r.block], [r.tokens[j] for j in r.block]))
        return r.scheduled(0)  # llada steps=0's own rule

    trace = Trace("llada")
    for _ in drive(dec, denoise(dec, pick, method="llada", block_size=block_size), trace, lambda tokens, i: ""):
        pass
    return records, list(dec.tokens), trace, size


def labelled(records: list, final: list[int], kind: str, outputs: int):
    """(x [n, f], flat output index [m], labels [m]) of one trajectory, unlabelled positions dropped."""
    from ..dllm.filters import stability_labels

    labels = stability_labels([dict(zip(pos, tok)) for _, _, pos, tok in records], dict(enumerate(final)), kind)
    xs, index, ys, offset = [], [], [], 0
    for (x, idx, pos, _), lab in zip(records, labels):
        keep = [i for i, p in enumerate(pos) if p in lab]
        xs.append(x)
        index += [offset + int(idx[i]) for i in keep]
        ys += [float(lab[pos[i]]) for i in keep]
        offset += x.shape[0] * outputs
    return torch.cat(xs), torch.tensor(index, dtype=torch.long), torch.tensor(ys)


def gather(parts: list, outputs: int):
    xs, idx, ys, offset = [], [], [], 0
    for x, i, y in parts:
        xs.append(x)
        idx.append(i + offset)
        ys.append(y)
        offset += x.shape[0] * outputs
    return torch.cat(xs), torch.cat(idx), torch.cat(ys)


# -- the filter --------------------------------------------------------------------------------------------------
def fit(x: torch.Tensor, index: torch.Tensor, y: torch.Tensor, outputs: int, hidden: int, epochs: int, lr: float,
        seed: int, meta: dict):
    """An MLP fitted full-batch on binary cross-entropy at the labelled outputs; returns (Filter, final loss)."""
    from ..dllm.filters import Filter

    torch.manual_seed(seed)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-3) if x.shape[0] > 1 else torch.ones(x.shape[1])
    widths = [x.shape[1], *([hidden] if hidden else []), outputs]
    linears = [torch.nn.Linear(a, b) for a, b in zip(widths, widths[1:])]
    net = torch.nn.Sequential(*[m for lin in linears for m in (lin, torch.nn.ReLU())][:-1])
    optim = torch.optim.Adam(net.parameters(), lr=lr)
    z = (x - mean) / std
    for _ in range(epochs):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(z).flatten()[index], y)
        optim.zero_grad()
        loss.backward()
        optim.step()
    layers = [(lin.weight.detach().clone(), lin.bias.detach().clone()) for lin in linears]
    return Filter(layers, mean, std, meta), float(loss.detach())


def scores(filt, x, index, y, threshold: float) -> dict:
    """Label accuracy at 0.5, and precision / recall / acceptance at the policy's threshold."""
    with torch.no_grad():
        s = torch.sigmoid(filt.logits(x)).flatten()[index]
    right, accept = (s >= 0.5) == (y > 0.5), s >= threshold
    hits = (accept & (y > 0.5)).sum()
    return {"positions": len(y), "stable_share": round(float(y.mean()), 4) if len(y) else None,
            "label_accuracy": round(float(right.float().mean()), 4) if len(y) else None,
            "precision_at_threshold": round(float(hits / accept.sum()), 4) if accept.any() else None,
            "recall_at_threshold": round(float(hits / (y > 0.5).sum()), 4) if (y > 0.5).any() else None,
            "accepted_share": round(float(accept.float().mean()), 4) if len(y) else None}


# -- the job ---------------------------------------------------------------------------------------------------------
def main(argv: list[str], recipe: Recipe) -> dict:
    from .. import registry
    from ..api import Lab
    from ..dllm.model import spec_of

    args = parse(argv, recipe.policy)
    began = time.perf_counter()
    tl = Lab(args.model, device=args.device)
    spec_of(tl.target, f"train {recipe.policy} --model {args.model!r}")
    prompts = prompts_of(tl, args.data, args.prompts)
    if len(prompts) < 2:
        raise LabError(f"--data {args.data}: needs at least 2 prompts (got {len(prompts)})")
    held = args.val or max(1, len(prompts) // 5)
    train, val = prompts[:-held], prompts[-held:]
    runs = []
    for n, prompt in enumerate(prompts, 1):
        records, final, trace, size = reference(tl, prompt, args.max_new_tokens, args.block_size, recipe)
        runs.append((labelled(records, final, args.labels, recipe.outputs(size)), final, trace))
        print(f"reference {n}/{len(prompts)}: {len(final)} tokens, {trace.forwards} forwards, "
              f"{time.perf_counter() - began:.0f} s", flush=True)
    outputs, hidden = recipe.outputs(size), args.hidden or recipe.hidden(size)
    x, index, y = gather([r[0] for r in runs[:len(train)]], outputs)
    vx, vindex, vy = gather([r[0] for r in runs[len(train):]], outputs)
    if not len(y):
        raise LabError("no labelled positions: the reference runs committed nothing")
    info = registry.get(recipe.policy)
    meta = {"policy": recipe.policy, "model": args.model, "block_size": size, "features": features_of(recipe, size),
            "labels": args.labels, "hidden": hidden}
    fitted = time.perf_counter()
    filt, loss = fit(x, index, y, outputs, hidden, args.epochs, args.lr, args.seed, meta)
    fit_s = time.perf_counter() - fitted
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{recipe.policy}.json"
    filt.save(weights)
    policy = {"new_tokens": 0, "forwards": 0, "same_output": 0, "reference_forwards": 0}
    for prompt, (_, final, ref) in zip(val, runs[len(train):]):
        got = tl.generate(recipe.policy, prompt, max_new_tokens=args.max_new_tokens, filter=str(weights),
                          threshold=args.threshold, block_size=args.block_size).trace
        policy["new_tokens"] += got.new_tokens
        policy["forwards"] += got.forwards
        policy["reference_forwards"] += ref.forwards
        policy["same_output"] += got.tokens == final
    validation = {**scores(filt, vx, vindex, vy, args.threshold), "prompts": len(val),
                  "tokens_per_forward": round(policy["new_tokens"] / max(policy["forwards"], 1), 4),
                  "forwards": policy["forwards"], "reference_forwards": policy["reference_forwards"],
                  "same_output_as_reference": round(policy["same_output"] / len(val), 4)}
    manifest = {
        "policy": recipe.policy, "paper": info.paper,
        "recipe": f"lab/train/{recipe.policy}.py, lab/train/commitment.py",
        "command": f"python -m lab train {recipe.policy} " + " ".join(argv),
        "model": args.model, "block_size": size, "max_new_tokens": args.max_new_tokens,
        "labels": args.labels, "reference": "llada steps=0 (one token per step, low confidence), temperature 0",
        "filter": {"features": meta["features"], "widths": [x.shape[1], *([hidden] if hidden else []), outputs],
                   "parameters": sum(w.numel() + b.numel() for w, b in filt.layers), "threshold": args.threshold},
        "data": {"source": args.data, "held_out": "ShareGPT first turns outside lab.bench.suite.held_out (the "
                                                  "benchmark's set); validation: the last --val of them"
                 if args.data == "sharegpt" else "the last --val prompts of the file",
                 "train_prompts": len(train), "val_prompts": len(val), "train_positions": len(y)},
        "training": {"epochs": args.epochs, "lr": args.lr, "loss": round(loss, 5), "seed": args.seed,
                     "train": scores(filt, x, index, y, args.threshold), "fit_seconds": round(fit_s, 1)},
        "validation": validation, "seconds": round(time.perf_counter() - began, 1),
        "device": str(tl.target.device), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "date": date.today().isoformat(), "files": {weights.name: weights.stat().st_size},
    }
    (out / f"{recipe.policy}.manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(json.dumps({"validation": validation}), flush=True)
    print(f"wrote {weights} ({weights.stat().st_size / 1024:.1f} KB) and {out / (recipe.policy + '.manifest.json')}; "
          f"use it with {recipe.policy}:filter={out}", flush=True)
    return manifest


def features_of(recipe: Recipe, size: int) -> list[str]:
    return list(recipe.features(size).names)
