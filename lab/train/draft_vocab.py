"""`python -m lab train draft-vocab`: trim a FastDraft export's LM head to the target's most frequent tokens.

VocabTrim ("VOCABTRIM: Vocabulary Pruning for Efficient Speculative Decoding in LLMs", Goel et al., 2025) counts
the tokens the target produces on a calibration set and keeps the most frequent ones in the drafter's head. Here
the calibration set is a corpus of the target's own greedy answers (by default the one SAM's datastore ships,
lab/data/sam_corpus.json: first user turns of ShareGPT conversations outside the benchmark's held-out set), and
the kept tokens are written beside the draft (`vocab.json`) and named in its manifest with their coverage of the
corpus and, given held-out answers (`--val`, from `python -m lab train responses --held-out`), the draft's greedy
and T=1 acceptance with the whole head and with the trimmed one, measured side by side.
"""
from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

from ..errors import LabError

CORPUS = Path(__file__).resolve().parents[1] / "data" / "sam_corpus.json"


def corpus_tokens(tokenizer, path: Path) -> list[list[int]]:
    """The token ids of every answer: a responses JSONL's `response` ids (`python -m lab train responses`), or the
    tokenized texts of a corpus JSON (`{"answers": [{"text": ...}]}`, SAM's)."""
    if path.suffix == ".jsonl":
        from .responses import read

        return [r["response"] for r in read(path)]
    answers = json.loads(path.read_text(encoding="utf-8"))["answers"]
    return [tokenizer.encode(a["text"], add_special_tokens=False) for a in answers]


def main(argv: list[str] | None = None) -> None:
    from .. import drafts, models
    from ..vocab_trim import TrimmedLMHead, coverage, frequent_tokens
    from .fastdraft import validate
    from .responses import read

    ap = argparse.ArgumentParser(prog="python -m lab train draft-vocab")
    ap.add_argument("--draft", default=str(drafts.SHIPPED), help="a FastDraft export (default: the shipped one)")
    ap.add_argument("--keep", type=int, default=16384, help="how many of the most frequent tokens the head keeps")
    ap.add_argument("--corpus", default=str(CORPUS),
                    help="the target's answers to count: a responses JSONL or a SAM corpus JSON")
    ap.add_argument("--compare", default="", help="other head sizes to measure beside --keep (comma-separated)")
    ap.add_argument("--val", help="responses JSONL of held-out prompts: measure acceptance with both heads")
    ap.add_argument("--model", default="default")
    ap.add_argument("--device")
    ap.add_argument("--dry-run", action="store_true", help="measure only; write nothing")
    args = ap.parse_args(argv)
    try:
        others = [int(k) for k in args.compare.split(",") if k.strip()]
    except ValueError:
        raise LabError(f"--compare {args.compare!r}: give head sizes such as 8192,24576") from None
    if min([args.keep, *others]) < 1:
        raise LabError("--keep and --compare must be at least 1")
    folder = Path(args.draft)
    about = drafts.manifest(folder)
    if about is None:
        raise LabError(f"{folder} holds no FastDraft export (python -m lab train fastdraft --export)")
    target, tokenizer = models.load(args.model, args.device)
    if tokenizer is None and not args.corpus.endswith(".jsonl"):
        raise LabError(f"model {args.model!r} has no tokenizer: counting a corpus of texts needs one")
    answers = corpus_tokens(tokenizer, Path(args.corpus))
    eos = getattr(target.generation_config, "eos_token_id", None)
    eos = eos if isinstance(eos, list) else [eos]
    specials = (tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id) if tokenizer is not None else ()
    always = [t for t in (*eos, *specials) if t is not None]
    vocab = frequent_tokens(answers, args.keep, always)  # the end-of-text tokens too: a draft may end an answer
    sizes = {k: frequent_tokens(answers, k, always) for k in others}
    record = {"file": "vocab.json", "keep": args.keep, "tokens": int(vocab.numel()),
              "paper": "VOCABTRIM: Vocabulary Pruning for Efficient Speculative Decoding in LLMs",
              "counted": f"{sum(map(len, answers))} tokens of {len(answers)} answers in {Path(args.corpus).name}",
              "corpus_coverage": round(coverage(answers, vocab), 4),
              "command": "python -m lab train draft-vocab " + " ".join(argv or []), "date": date.today().isoformat()}
    if args.val:
        rows = read(args.val)
        pad = tokenizer.pad_token_id if tokenizer is not None and tokenizer.pad_token_id is not None else 0
        draft = drafts.load_fastdraft(target, folder, trim=False)
        record["val_answers"] = len(rows)
        record["val_coverage"] = round(coverage([r["response"] for r in rows], vocab), 4)
        record["full_head"] = validate(target, draft, rows, pad)
        draft.lm_head = TrimmedLMHead(target.lm_head.weight, vocab.to(target.device))
        record["trimmed_head"] = validate(target, draft, rows, pad)
        record["other_sizes"] = []
        for keep, ids in sizes.items():  # what the head would give at other sizes, for the choice of --keep
            draft.lm_head = TrimmedLMHead(target.lm_head.weight, ids.to(target.device))
            record["other_sizes"].append({"keep": keep, "tokens": int(ids.numel()),
                                          "corpus_coverage": round(coverage(answers, ids), 4),
                                          "val_coverage": round(coverage([r["response"] for r in rows], ids), 4),
                                          **validate(target, draft, rows, pad)})
    print(json.dumps(record, indent=1))
    if args.dry_run:
        return
    (folder / "vocab.json").write_text(json.dumps({"tokens": vocab.tolist()}) + "\n", encoding="utf-8")
    about["vocab"] = record
    (folder / "manifest.json").write_text(json.dumps(about, indent=1) + "\n", encoding="utf-8")
    print(f"{record['tokens']} tokens -> {folder / 'vocab.json'}")
