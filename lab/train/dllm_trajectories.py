"""A dLLM's own one-token-per-step decodings, batched: the data of self-distillation for parallel decoding.

    python -m lab train dllm-trajectories --prompts pairs.jsonl.gz --out trajectories.jsonl.gz [--model dllm-default]
        [--count 8000] [--length 64] [--block 8] [--batch 128] [--device cuda] [--dtype float32] [--minutes 3]
        [--order confidence|left-to-right]

dParallel ("dParallel: Learnable Parallel Decoding for dLLMs", Chen et al., 2025) distils a dLLM on its own
semi-autoregressive trajectories: the answer it writes one token per step (low-confidence remasking, greedy) is the
target that every masked position should reach in fewer steps. This module writes those answers, in batches (one
decoding per prompt through the lab's loop is a forward per token per prompt; here one forward decodes a step of
`--batch` prompts). Each step re-runs prompt + finished blocks causally and the current block both ways, with the
training recipe's visibility rule (lab.train.dllm.dense_mask) and its shifted rows, so a row is exactly what
lab.dllm.Denoiser computes with block attention: the result is `llada steps=0` with that block size, token for
token up to floating-point ties (tests/dllm/test_trajectories.py checks it on tiny models); `--order left-to-right`
writes `llada remasking=left_to_right`'s answers instead.

Input: a JSONL(.gz) of {"prompt": ids, ...} (e.g. `python -m lab train dllm-data`'s pairs: the answers there are
ignored). Output: {"prompt", "response", "kind"}, the response cut after its first end-of-text token.
"""
from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import torch

from ..errors import LabError
from ..dllm import rules
from .dllm import CLEAN, NOISY, PAD, dense_mask


@torch.no_grad()
def decode(model, prompts: list[list[int]], length: int, block: int, mask_id: int, eos: set[int],
           shift: bool = True, order: str = "confidence") -> list[list[int]]:
    """One-token-per-step low-confidence greedy decoding of every prompt at once (block attention, shifted
    logits unless `shift` is False), committing the surest masked position of the block each step, or the left-most
    (`order="left-to-right"`: llada remasking=left_to_right): each answer up to and including its first end-of-text
    token (or `length` tokens)."""
    device = next(model.parameters()).device
    B = len(prompts)
    canvas = torch.full((B, length), mask_id, dtype=torch.long)
    for s in range(0, length, block):
        e = min(s + block, length)
        m = e - s
        for _ in range(m):
            ids, kind, pos, start, blk = [], [], [], [], []
            for b, prompt in enumerate(prompts):  # clean prompt + finished blocks, then the block being decoded
                clean = list(prompt) + canvas[b, :s].tolist()
                C = len(clean)
                ids.append(clean + canvas[b, s:e].tolist())
                kind.append([CLEAN] * C + [NOISY] * m)
                pos.append(list(range(C + m)))
                start.append([0] * C + [C] * m)
                blk.append([-1] * C + [0] * m)
            T = max(len(r) for r in ids)
            pad = lambda rows, value: torch.tensor([r + [value] * (T - len(r)) for r in rows], device=device)  # noqa: E731
            p = pad(pos, 0)
            mask = dense_mask({"kind": pad(kind, PAD), "pos": p, "start": pad(start, 0), "block": pad(blk, -1)})
            hidden = model.get_decoder()(input_ids=pad(ids, 0), position_ids=p, attention_mask=mask,
                                         use_cache=False).last_hidden_state
            lengths = torch.tensor([len(r) for r in ids], device=device)
            rows = (lengths - m)[:, None] - int(shift) + torch.arange(m, device=device)[None]  # shifted: the row before
            logits = model.get_output_embeddings()(hidden.gather(1, rows[..., None].expand(-1, -1, hidden.shape[-1])))
            logits = logits.float()
            logits[..., mask_id] = float("-inf")
            token = logits.argmax(-1)
            conf = rules.confidence(logits, token)  # the loop's measure: the token's probability, in float64
            masked = (canvas[:, s:e] == mask_id).to(device)
            if order == "left-to-right":  # the left-most masked position: rank by position instead
                conf = -torch.arange(m, device=device, dtype=conf.dtype).expand_as(conf)
            conf = torch.where(masked, conf, torch.full_like(conf, float("-inf")))
            j = conf.argmax(-1)  # the surest masked position (the left-most of equals)
            chosen = token.gather(1, j[:, None])[:, 0]
            live = masked.any(-1)
            canvas[live.cpu(), (s + j)[live].cpu()] = chosen[live].cpu()
        if all(any(t in eos for t in row) for row in canvas[:, :e].tolist()):
            break  # every answer has ended
    out = []
    for row in canvas.tolist():
        row = [t for t in row if t != mask_id]
        end = next((i for i, t in enumerate(row) if t in eos), None)
        out.append(row if end is None else row[:end + 1])
    return out


def read_prompts(path: Path, count: int) -> list[dict]:
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    rows = [json.loads(line) for line in text.split("\n") if line.strip()]
    for n, row in enumerate(rows, 1):
        if not isinstance(row.get("prompt"), list):
            raise LabError(f"{path}:{n}: each line needs a \"prompt\" token id list")
    return rows[:count] if count else rows


def main(argv: list[str]) -> None:
    from .. import models
    from ..dllm import models as dllm_models
    from .dllm import Parser

    p = Parser(prog="python -m lab train dllm-trajectories", description=__doc__.splitlines()[0])
    p.add_argument("--prompts", required=True, help="a JSONL(.gz) of {prompt: ids, kind?}")
    p.add_argument("--out", required=True, help="a .jsonl or .jsonl.gz file of {prompt, response, kind}")
    p.add_argument("--model", default="dllm-default", help="a block-diffusion model (dllm-default or a trained folder)")
    p.add_argument("--count", type=int, default=0, help="the first N prompts (0: all)")
    p.add_argument("--length", type=int, default=64, help="new tokens at most")
    p.add_argument("--block", type=int, default=0, help="block size (0: the model's)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default="float32", choices=("bfloat16", "float16", "float32"))
    p.add_argument("--minutes", type=float, default=0, help="stop after this long and write what is done (0: no limit)")
    p.add_argument("--order", default="confidence", choices=("confidence", "left-to-right"),
                   help="which masked position one-token-per-step decoding commits next: the surest or the left-most")
    args = p.parse_args(argv)
    if not Path(args.prompts).is_file():
        raise LabError(f"--prompts {args.prompts}: no such file")
    if min(args.length, args.batch) < 1 or args.block < 0 or args.count < 0:
        raise LabError("--length and --batch must be >= 1, --block and --count >= 0")
    rows = read_prompts(Path(args.prompts), args.count)
    model, _ = dllm_models.load(args.model, models.check_device(args.device), getattr(torch, args.dtype))
    spec = model.dllm
    if spec.attention != "block":
        raise LabError(f"{args.model} decodes with {spec.attention} attention: trajectories need a block-diffusion model")
    block = args.block or spec.block_size or 8
    eos_id = model.generation_config.eos_token_id
    eos = set(eos_id if isinstance(eos_id, (list, tuple)) else [eos_id])
    window = 8 * args.batch  # in file order, sorted by length within windows: similar lengths share a batch, and a
    order = [i for w in range(0, len(rows), window)  # stopped run still covers the file's mix
             for i in sorted(range(w, min(w + window, len(rows))), key=lambda i: len(rows[i]["prompt"]))]
    answers: dict[int, list[int]] = {}
    began = time.perf_counter()
    for n in range(0, len(order), args.batch):
        chunk = order[n:n + args.batch]
        for i, answer in zip(chunk, decode(model, [rows[i]["prompt"] for i in chunk], args.length, block,
                                           spec.mask_id, eos, spec.shift, args.order)):
            answers[i] = answer
        print(f"{len(answers)}/{len(rows)} prompts, {time.perf_counter() - began:.0f} s", flush=True)
        if args.minutes and time.perf_counter() - began > 60 * args.minutes:
            print(f"stopped after {args.minutes} minutes", flush=True)
            break
    lines = [json.dumps({"prompt": rows[i]["prompt"], "response": answers[i], "kind": rows[i].get("kind", "")})
             for i in range(len(rows)) if i in answers]
    out = Path(args.out)
    text = "".join(line + "\n" for line in lines)
    out.write_bytes(gzip.compress(text.encode(), 6) if out.suffix == ".gz" else text.encode())
    ended = sum(bool(a) and a[-1] in eos for a in answers.values())
    print(f"wrote {len(lines)} trajectories to {out} (block {block}, {ended} ended with EOS) in "
          f"{time.perf_counter() - began:.0f} s", flush=True)
