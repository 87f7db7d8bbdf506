"""A corpus of text for the drafters that start from one: SAM decoding's static suffix automaton, ADED's tri-grams.

"default" is lab/data/sam_corpus.json: the default model's own greedy answers to ShareGPT prompts outside the
benchmark's held-out set (made by `python -m lab train responses --corpus`). Any other value is the path of a JSON file of the
same shape ({"answers": [{"text": ...}, ...]}) or of a plain text file (one document). Each document is tokenised
once per tokenizer and kept; a model without a tokenizer has no default corpus.
"""
from __future__ import annotations

import json
import threading
import weakref
from pathlib import Path

from ..errors import LabError

DEFAULT = Path(__file__).resolve().parent.parent / "data" / "sam_corpus.json"
_DOCUMENTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # tokenizer -> {path: token lists}
_LOCK = threading.Lock()


def corpus_path(spec: str) -> Path | None:
    """The file a corpus option names ('' is none), checked."""
    if not spec:
        return None
    path = DEFAULT if spec == "default" else Path(spec).expanduser()
    if not path.is_file():
        raise LabError(f"corpus {spec!r} not found: give the path of a text or JSON file, 'default' or ''")
    return path.resolve()


def documents(spec: str, tokenizer, method: str) -> list[list[int]]:
    """The corpus as token lists, one per document; [] for no corpus, or for 'default' without a tokenizer."""
    path = corpus_path(spec)
    if path is None:
        return []
    if tokenizer is None:
        if spec == "default":
            return []
        raise LabError(f"{method}: a corpus needs a tokenizer: load a model with one, or pass corpus=''")
    with _LOCK:
        known = _DOCUMENTS.setdefault(tokenizer, {})
        if path not in known:
            if path.suffix == ".json":
                texts = [a["text"] for a in json.loads(path.read_text(encoding="utf-8"))["answers"]]
            else:
                texts = [path.read_text(encoding="utf-8")]
            known[path] = [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        return known[path]
