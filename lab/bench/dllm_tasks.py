"""The task set of `python -m lab bench dllm` and its scorers (see lab/bench/dllm.py for what each task asks).

Prompts come from installed packages only and are deterministic: held-out ShareGPT answers (lab.bench.suite's
held-out set) as passages and sentences, ShareGPT first turns for chat, seeded templates for the rest. Each task is a
dict: id, task, prompt, answer (None for chat) and source; `--write-suite` writes them as JSONL.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

import torch

from ..errors import LabError

TASKS = ("qa", "copy", "arithmetic", "chat")
SCORED = ("qa", "copy", "arithmetic")  # accuracy tasks; chat is judged by NLL


# -- scorers ----------------------------------------------------------------------------------------------------
def _words(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def score_span(output: str, answer: str) -> dict:
    """qa: exact (the whole output is the answer) or contained (the answer's words appear, in a row, in it)."""
    out, gold = _words(output), _words(answer)
    exact = bool(gold) and out == gold
    contained = bool(gold) and f" {gold} " in f" {out} "
    return {"score": float(exact or contained), "exact": exact, "contained": contained}


def _line(text: str) -> str:
    text = " ".join(text.split()).strip("\"'`“”‘’ ")
    return text[:-1].rstrip() if text.endswith(".") else text


def score_exact(output: str, answer: str) -> dict:
    """copy: some line of the output is the answer (spaces, outer quotes and one final period aside)."""
    gold = _line(answer)
    exact = any(_line(line) == gold for line in output.splitlines() if line.strip())
    return {"score": float(exact), "exact": exact}


def score_number(output: str, answer: str) -> dict:
    """arithmetic: the last number of the output's first non-empty line equals the answer."""
    first = next((line for line in output.splitlines() if line.strip()), "")
    numbers = re.findall(r"-?\d+(?:\.\d+)?", first.replace(",", ""))
    got = numbers[-1] if numbers else None
    right = got is not None and float(got) == float(answer)
    return {"score": float(right), "number": got}


SCORERS = {"qa": score_span, "copy": score_exact, "arithmetic": score_number}


class Judge:
    """Per-token NLL of an answer under an autoregressive Lab, given the prompt (chat-templated)."""

    def __init__(self, lab):
        self.lab = lab

    def nll(self, prompt: str, answer: str, ended: bool) -> float | None:
        ids = self.lab.encode(prompt, chat=True)
        tok = self.lab.tokenizer
        answer_ids = list(tok(answer, add_special_tokens=False)["input_ids"]) if answer else []
        if ended and tok.eos_token_id is not None:
            answer_ids.append(tok.eos_token_id)  # the dLLM chose to stop here: the judge weighs that too
        if not answer_ids:
            return None
        backend = self.lab.target.fork()
        first = backend.prefill(ids)
        logits = torch.cat([first[None], backend.forward(answer_ids[:-1]).logits]) if len(answer_ids) > 1 \
            else first[None]
        logp = logits.double().log_softmax(-1).gather(-1, torch.tensor(answer_ids, device=logits.device)[:, None])
        return round(float(-logp.mean()), 5)


# -- the task set -----------------------------------------------------------------------------------------------
WORDS = ("apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "plum", "orange", "melon", "red", "blue",
         "green", "yellow", "black", "white", "cat", "dog", "horse", "mouse", "tiger", "zebra", "Paris", "London",
         "Rome", "Berlin", "Madrid", "Vienna")
REPLACEMENTS = ("purple", "window", "seven", "river", "garden", "silver")
ARITHMETIC = (
    ("What is {a} + {b}? Answer with the number only.", lambda r: (r.randint(10, 99), r.randint(10, 99)),
     lambda a, b: a + b),
    ("What is {a} - {b}? Answer with the number only.", lambda r: (r.randint(50, 99), r.randint(10, 49)),
     lambda a, b: a - b),
    ("What is {a} times {b}? Answer with the number only.", lambda r: (r.randint(2, 12), r.randint(2, 12)),
     lambda a, b: a * b),
    ("How many centimetres are in {a} metres? Answer with the number only.", lambda r: (r.randint(2, 9), 0),
     lambda a, b: 100 * a),
    ("How many minutes are in {a} hours? Answer with the number only.", lambda r: (r.randint(2, 9), 0),
     lambda a, b: 60 * a),
    ("How many grams are in {a} kilograms? Answer with the number only.", lambda r: (r.randint(2, 9), 0),
     lambda a, b: 1000 * a),
    ("How many days are in {a} weeks? Answer with the number only.", lambda r: (r.randint(2, 9), 0),
     lambda a, b: 7 * a),
)


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text.replace("\n", " ")) if s.strip()]


def qa_prompts(n: int, records=None) -> list[dict]:
    """`records` ({id, answer} dicts): the passages; default the held-out ShareGPT retrieval bucket."""
    from .suite import _digest, _plain, sharegpt_pool

    out = []
    for r in sharegpt_pool()["retrieval"] if records is None else records:
        passage = r["answer"]
        if not (200 <= len(passage) <= 900 and _plain(passage, 0.99)):
            continue
        candidates = [s for s in _sentences(passage) if 8 <= len(s.split()) <= 30
                      and re.fullmatch(r"[A-Za-z0-9 ,;:'\"()\-.!?]+", s) and passage.count(s) == 1]
        if not candidates:
            continue
        sentence = candidates[_digest(r["id"])[3] % len(candidates)].split()
        k = min(4, len(sentence) // 2)
        start, rest = " ".join(sentence[:k]), " ".join(sentence[k:])
        prompt = (f"Passage:\n{passage}\n\nQuestion: in the passage, how does the sentence that begins with "
                  f"\"{start}\" end? Answer with the rest of that sentence, copied from the passage.")
        out.append({"id": f"qa/{r['id']}", "task": "qa", "prompt": prompt, "answer": rest,
                    "source": f"sharegpt:{r['id']}"})
        if len(out) == n:
            break
    return out


def copy_prompts(n: int, records=None, salt: str = "") -> list[dict]:
    """`records`: where the sentences come from (default the held-out translation bucket); `salt` changes the
    seeded lists (training data uses its own)."""
    from .suite import _first_sentence, _plain, sharegpt_pool

    sentences = iter([(r["id"], s) for r in (sharegpt_pool()["translation"] if records is None else records)
                      if _plain(r["answer"], 0.99) and (s := _first_sentence(r["answer"]))])
    out = []
    for i in range(n):
        rnd = random.Random(f"decoding-lab/dllm-copy/{salt}{i}")
        if i % 2 == 0:  # a list with one edit
            items = rnd.sample(WORDS, rnd.randint(4, 7))
            kind, target = rnd.choice(("replace", "remove", "append")), rnd.choice(items)
            new = rnd.choice([w for w in WORDS if w not in items])
            edited = ([new if w == target else w for w in items] if kind == "replace"
                      else [w for w in items if w != target] if kind == "remove" else items + [new])
            edit = {"replace": f"replace \"{target}\" with \"{new}\"", "remove": f"remove \"{target}\"",
                    "append": f"add \"{new}\" at the end"}[kind]
            prompt = f"Copy this list, but {edit}. Answer with the list only.\n\n{', '.join(items)}"
            out.append({"id": f"copy/list-{salt}{i}", "task": "copy", "prompt": prompt, "answer": ", ".join(edited),
                        "source": f"template:list-{kind}"})
            continue
        rid, sentence = next(sentences, (None, None))
        if sentence is None:
            break
        words = sentence.split()
        choices = [w for w in words if w.isalpha() and len(w) >= 4 and words.count(w) == 1]
        target, new = rnd.choice(choices or [words[0]]), rnd.choice(REPLACEMENTS)
        edited = " ".join(new if w == target else w for w in words)
        prompt = (f"Copy this sentence, but replace the word \"{target}\" with \"{new}\". Answer with the sentence "
                  f"only.\n\n{sentence}")
        out.append({"id": f"copy/{rid}", "task": "copy", "prompt": prompt, "answer": edited,
                    "source": f"sharegpt:{rid}"})
    return out


def arithmetic_prompts(n: int, salt: str = "") -> list[dict]:
    out = []
    for i in range(n):
        rnd = random.Random(f"decoding-lab/dllm-arithmetic/{salt}{i}")
        template, numbers, solve = ARITHMETIC[i % len(ARITHMETIC)]
        a, b = numbers(rnd)
        out.append({"id": f"arithmetic/{salt}{i}", "task": "arithmetic", "prompt": template.format(a=a, b=b),
                    "answer": str(solve(a, b)), "source": f"template:{i % len(ARITHMETIC)}"})
    return out


def build_tasks(per_task: int = 10, tasks=TASKS) -> list[dict]:
    """`per_task` prompts of each task: dicts with id, task, prompt, answer (None for chat) and source."""
    from .suite import _sharegpt_prompts

    if per_task < 1:
        raise LabError(f"--per-task must be >= 1, got {per_task}")
    rows: list[dict] = []
    for task in tasks:
        if task == "chat":
            rows += [{"id": p["id"], "task": "chat", "prompt": p["prompt"], "answer": None, "source": p["source"]}
                     for p in _sharegpt_prompts("chat", per_task)]
        else:
            rows += {"qa": qa_prompts, "copy": copy_prompts, "arithmetic": arithmetic_prompts}[task](per_task)
    return rows


def read_suite(path: str) -> list[dict]:
    """Tasks written by --write-suite; anything else is a one-line error before a model loads."""
    try:
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as err:
        raise LabError(f"--suite {path}: {err}") from None
    for n, row in enumerate(rows, 1):
        if not (isinstance(row, dict) and row.get("task") in TASKS and isinstance(row.get("prompt"), str)
                and (row["task"] == "chat" or isinstance(row.get("answer"), str))):
            raise LabError(f"--suite {path}: line {n} is not a dllm task (id, task, prompt, answer): write the file "
                           "with python -m lab bench dllm --write-suite")
    if not rows:
        raise LabError(f"--suite {path} holds no tasks")
    return rows
