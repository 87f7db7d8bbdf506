"""Train a small draft for the default model, after "FastDraft: How to Train Your Draft" (Zafrir et al., 2024).

    python -m lab train fastdraft --data train.jsonl --val val.jsonl --out DIR [--layers 0,1,29] [--steps 4000]
        [--minutes 9] [--batch 32] [--max-len 384] [--lr 6e-4] [--model default] [--device cuda] [--export DIR]
        [--init DIR]

FastDraft pre-trains a small model of the target's architecture and tokenizer, then aligns it on text the target
generated itself. Here the draft is a few decoder layers of the target's own shape started from target layers
(`--layers`, e.g. the first ones and the last; lab/drafts.py), with the target's embeddings and LM head shared
and frozen, so the alignment is the whole training: the data are the target's greedy answers to ShareGPT prompts
outside the benchmark's held-out set (`python -m lab train responses`), and the loss is the forward KL from the
target's next-token distribution to the draft's at every position of prompt and answer (distillation on
target-generated text, as in FastDraft's alignment and DistillSpec, gives acceptance under greedy and sampling).

Validation (`--val`, answers to held-out prompts) measures per-token acceptance where the draft is used, on the
answers: greedy (the draft's argmax is the target's greedy token) and at T = 1 (the expected acceptance
sum_v min(p, q)). A job stops after `--minutes` or at `--steps` and saves `DIR/checkpoint.pt`; the next job with
the same DIR resumes from it; `--init` starts a new schedule from an export's weights instead. `--export` writes
the shipped files: the draft's own weights in bf16 (files of at most 16 MiB) and a manifest with the recipe, data,
steps and validation numbers.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from contextlib import nullcontext
from datetime import date
from pathlib import Path

import torch

from ..drafts import draft_model, export_weights, manifest, own_state
from ..errors import LabError
from .responses import read

FILE_LIMIT = 16 * 2**20  # bytes per shipped file


def sequences(rows: list[dict], max_len: int) -> list[list[int]]:
    """Prompt + answer token ids of each row, cut to max_len."""
    return [(r["prompt"] + r["response"])[:max_len] for r in rows if r["response"]]


def batch_of(seqs: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and the mask of real positions (pads come last, so causal attention never sees them)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    real = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        real[i, :len(s)] = True
    return ids.to(device), real.to(device)


def distill_loss(target_logits: torch.Tensor, draft_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Forward KL(p_target || q_draft) per real position, averaged."""
    logp = target_logits[real].float().log_softmax(-1)
    logq = draft_logits[real].float().log_softmax(-1)
    return (logp.exp() * (logp - logq)).sum(-1).mean()


def autocast(device) -> object:
    return torch.autocast("cuda", dtype=torch.bfloat16) if torch.device(device).type == "cuda" else nullcontext()


@torch.no_grad()
def validate(target, draft, rows: list[dict], pad: int, batch: int = 32) -> dict:
    """Per-token acceptance on the answers of `rows`: greedy (argmax agreement) and at T=1 (sum min(p, q))."""
    device = next(target.parameters()).device
    agree = expected = count = 0.0
    for b in range(0, len(rows), batch):
        part = rows[b:b + batch]
        ids, real = batch_of([r["prompt"] + r["response"] for r in part], pad, device)
        answer = torch.zeros_like(real)
        for i, r in enumerate(part):  # positions whose next token is an answer token
            answer[i, len(r["prompt"]) - 1:len(r["prompt"]) + len(r["response"]) - 1] = True
        p = target(input_ids=ids).logits[answer].float().softmax(-1)
        with autocast(device):
            q = draft(input_ids=ids).logits[answer].float().softmax(-1)
        agree += float((p.argmax(-1) == q.argmax(-1)).sum())
        expected += float(torch.minimum(p, q).sum())
        count += p.shape[0]
    return {"greedy_acceptance": round(agree / max(count, 1), 4), "t1_acceptance": round(expected / max(count, 1), 4),
            "positions": int(count)}


def learning_rate(step: int, steps: int, peak: float, warmup: int = 100) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup)))))


def export(draft, folder: Path, about: dict) -> None:
    """The draft's own weights in bf16, in files of at most 16 MiB, and the manifest."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("draft-*.safetensors"):
        old.unlink()
    files, part, size = [], {}, 0
    state = {k: v.detach().to("cpu", torch.bfloat16).contiguous() for k, v in own_state(draft).items()}
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if part and size + nbytes > FILE_LIMIT - 2**20:
            files.append(part)
            part, size = {}, 0
        part[name], size = tensor, size + nbytes
    files.append(part)
    names = []
    for i, chunk in enumerate(files):
        names.append(f"draft-{i + 1:02d}.safetensors")
        save_file(chunk, str(folder / names[-1]))
    about = {**about, "files": names, "dtype": "bfloat16"}
    (folder / "manifest.json").write_text(json.dumps(about, indent=1) + "\n", encoding="utf-8")


def start_from(draft, folder: Path, layers: list[int]) -> dict:
    """Load an export's weights into `draft` (kept in fp32); returns what the new manifest says of them."""
    about = manifest(folder)
    if about is None or about["init_layers"] != layers:
        raise LabError(f"--init {folder}: no FastDraft export from layers {layers} there")
    state = export_weights(folder, about, draft)
    draft.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    return {"folder": str(folder), "steps": about.get("steps", 0), "jobs": about.get("jobs", []),
            "date": about.get("date"), "validation": about.get("validation")}


def train(target, tokenizer, train_rows: list[dict], val_rows: list[dict], out: Path, layers: list[int], *,
          steps: int, minutes: float, batch: int, max_len: int, lr: float, seed: int = 0, progress: bool = True,
          validate_every: int = 500, job: str = "", init: Path | None = None) -> tuple[object, dict]:
    """Run (or resume) one job; returns the draft (own weights in fp32) and the job's state. `init`, an export
    folder, starts a new job from that draft's weights instead of the target's layers (a second schedule)."""
    device = next(target.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer is not None and tokenizer.pad_token_id is not None else 0
    draft = draft_model(target, layers)
    for module in (*draft.model.layers, draft.model.norm):
        module.float().requires_grad_(True)
    params = [p for p in draft.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    state = {"step": 0, "log": [], "layers": layers, "seconds": 0.0}
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "checkpoint.pt"
    if checkpoint.is_file():
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        if saved["layers"] != layers:
            raise LabError(f"{checkpoint} is a draft from layers {saved['layers']}, not {layers}: use another --out")
        draft.load_state_dict(saved["own"], strict=False)
        optim.load_state_dict(saved["optim"])
        state = saved["state"]
        print(f"resumed at step {state['step']}", flush=True)
    elif init is not None:
        state["init"] = start_from(draft, init, layers)
    state.setdefault("jobs", []).append({"from_step": state["step"], "command": job})
    seqs = sequences(train_rows, max_len)
    if not seqs:
        raise LabError("no training sequences: the responses file is empty")
    start, last = time.time(), time.time()
    draft.train()
    while state["step"] < steps and time.time() - start < minutes * 60:
        step = state["step"]
        rng = torch.Generator().manual_seed(seed * 1_000_003 + step)  # the same batches after a resume
        pick = torch.randint(len(seqs), (batch,), generator=rng).tolist()
        ids, real = batch_of([seqs[i] for i in pick], pad, device)
        with torch.no_grad():
            teacher = target(input_ids=ids).logits
        with autocast(device):
            student = draft(input_ids=ids).logits
        loss = distill_loss(teacher, student, real)
        for group in optim.param_groups:
            group["lr"] = learning_rate(step, steps, lr)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        state["step"] = step + 1
        if progress and (time.time() - last > 20 or state["step"] == 1):
            print(f"step {state['step']}/{steps} loss {loss.item():.4f} {time.time() - start:.0f} s", flush=True)
            last = time.time()
        if val_rows and state["step"] % validate_every == 0:
            draft.eval()
            state["log"].append({"step": state["step"], "loss": round(loss.item(), 4),
                                 **validate(target, draft, val_rows, pad)})
            draft.train()
            print(json.dumps(state["log"][-1]), flush=True)
    draft.eval()
    state["seconds"] += time.time() - start
    torch.save({"own": own_state(draft), "optim": optim.state_dict(), "state": state, "layers": layers}, checkpoint)
    return draft, state


def main(argv: list[str] | None = None) -> None:
    from .. import models

    ap = argparse.ArgumentParser(prog="python -m lab train fastdraft")
    ap.add_argument("--data", required=True, help="responses JSONL (python -m lab train responses)")
    ap.add_argument("--val", help="responses JSONL of held-out prompts (python -m lab train responses --held-out)")
    ap.add_argument("--out", required=True, help="checkpoint folder (a job resumes from it)")
    ap.add_argument("--layers", default="0,1,29", help="target layers the draft starts from, in order")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--minutes", type=float, default=9.0, help="stop (and save) after this long")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=384)
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--validate-every", type=int, default=500)
    ap.add_argument("--model", default="default")
    ap.add_argument("--device")
    ap.add_argument("--export", help="write the shipped files (weights + manifest) here")
    ap.add_argument("--init", help="start from this export's weights (e.g. lab/data/fastdraft): a second schedule")
    args = ap.parse_args(argv)
    try:
        layers = [int(x) for x in args.layers.split(",")]
    except ValueError:
        raise LabError(f"--layers {args.layers!r}: give layer indices such as 0,1,29") from None
    if min(args.steps, args.batch, args.max_len) < 1 or args.minutes <= 0 or args.lr <= 0:
        raise LabError("--steps, --batch, --max-len, --minutes and --lr must be positive")
    target, tokenizer = models.load(args.model, args.device)
    out = Path(args.out)
    train_rows, val_rows = read(args.data), read(args.val) if args.val else []
    draft, state = train(target, tokenizer, train_rows, val_rows, out, layers, steps=args.steps,
                         minutes=args.minutes, batch=args.batch, max_len=args.max_len, lr=args.lr, seed=args.seed,
                         validate_every=args.validate_every,
                         job="python -m lab train fastdraft " + " ".join(argv or []),
                         init=Path(args.init) if args.init else None)
    pad = tokenizer.pad_token_id if tokenizer is not None and tokenizer.pad_token_id is not None else 0
    final = validate(target, draft, val_rows, pad) if val_rows else {}
    print(json.dumps({"step": state["step"], **final}), flush=True)
    if args.export:
        config = target.config.get_text_config()
        about = {
            "name": "fastdraft", "paper": "FastDraft: How to Train Your Draft",
            "recipe": "lab/train/fastdraft.py", "jobs": state["jobs"],
            "base": {"name": args.model if args.model != "default" else models.DEFAULT_NAME,
                     "architecture": type(target).__name__, "vocab_size": config.vocab_size,
                     "hidden_size": config.hidden_size, "num_layers": config.num_hidden_layers},
            "init_layers": layers, "shared": "embeddings and LM head (the target's own, frozen)",
            "data": {"train_answers": len(train_rows), "val_answers": len(val_rows),
                     "train_tokens": sum(len(s) for s in sequences(train_rows, args.max_len)),
                     "source": "the target's answers (greedy; sampled where sampled_answers counts them) to first "
                               "user turns of ShareGPT conversations outside lab.bench.suite's held-out set "
                               "(validation: inside it)",
                     "sampled_answers": {str(t): n for t, n in Counter(r.get("temperature") for r in train_rows
                                                                     if r.get("temperature")).items()}},
            "loss": "forward KL(target || draft) at every position, T = 1",
            "steps": state["step"] + state.get("init", {}).get("steps", 0), "batch": args.batch,
            "max_len": args.max_len, "lr": args.lr,
            "train_seconds": round(state["seconds"], 1), "device": str(next(target.parameters()).device),
            "torch": torch.__version__, "date": date.today().isoformat(),
            "validation": final, "validation_log": state["log"],
        }
        if "init" in state:  # this schedule's steps came after an earlier export's
            about["continued_from"] = state["init"]
        export(draft, Path(args.export), about)
        print(f"exported -> {args.export}")
