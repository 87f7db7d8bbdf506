"""`python -m lab bench dllm --merge A.json B.json ...`: one table and one trade-off plot from bench runs made at
different times or on different machines over the same tasks (a GPU run of every policy and a later CPU run of one
new setting, say).

The first file's first setting stays the reference. Every file must hold runs of the same task ids at the same
`max_new_tokens`, or the merge is refused in one line. A setting that appears in more than one file is kept from
the first, and the merge reports whether the later copies produced the same texts, a check that the runs are
comparable (float32 on a CPU and a GPU gives the same tokens for this model).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import LabError
from .dllm_tasks import TASKS


def _load(path: str) -> dict:
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise LabError(f"--merge {path}: {err}") from None
    if results.get("benchmark") != "dllm" or not isinstance(results.get("runs"), list):
        raise LabError(f"--merge {path} is not a `bench dllm` results file")
    return results


def _ids(results: dict, setting: str, tasks: list[str]) -> set[str]:
    return {r["id"] for r in results["runs"] if r["setting"] == setting and r["task"] in tasks}


def merge(paths: list[str], tasks: list[str]) -> dict:
    """One results dict (settings, prompts, runs, `merged_from`, `duplicates`) from bench dllm files; the summary
    and best setting are left to the caller (lab.bench.dllm.summarize / best_within)."""
    if len(paths) < 2:
        raise LabError("--merge needs at least two results files")
    files = [(path, _load(path)) for path in paths]
    first = files[0][1]
    tasks = [t for t in tasks if t in TASKS]
    reference = first["settings"][0]["label"]
    ids = _ids(first, reference, tasks)
    if not ids:
        raise LabError(f"--merge {paths[0]}: its reference {reference!r} has no runs of {', '.join(tasks)}")
    settings, runs, duplicates, seen = [], [], [], {}
    for path, results in files:
        if results.get("max_new_tokens") != first.get("max_new_tokens"):
            raise LabError(f"--merge {path}: max_new_tokens {results.get('max_new_tokens')} is not "
                           f"{first.get('max_new_tokens')} as in {paths[0]}")
        for s in results["settings"]:
            mine = [r for r in results["runs"] if r["setting"] == s["label"] and r["id"] in ids]
            if {r["id"] for r in mine} != ids:
                raise LabError(f"--merge {path}: {s['label']!r} ran {len({r['id'] for r in mine})} of the "
                               f"{len(ids)} tasks of {paths[0]}; merge only runs over the same tasks")
            if s["label"] in seen:
                earlier = {r["id"]: r.get("text") for r in seen[s["label"]]}
                same = sum(r.get("text") is not None and earlier[r["id"]] == r["text"] for r in mine)  # failed: none
                duplicates.append({"setting": s["label"], "file": path, "same_texts": same, "tasks": len(ids)})
                continue
            seen[s["label"]] = mine
            settings.append({**s, "file": path, "device": results.get("device")})
            runs += mine
    order = {p: i for i, p in enumerate(r["id"] for r in first["runs"] if r["setting"] == reference)}
    runs.sort(key=lambda r: order.get(r["id"], 0))  # prompt by prompt, as a bench run writes them
    return {"benchmark": "dllm", "model": first.get("model"), "judge": first.get("judge"),
            "device": ", ".join(dict.fromkeys(str(r.get("device")) for _, r in files)),
            "dtype": ", ".join(dict.fromkeys(str(r.get("dtype")) for _, r in files)),
            "max_new_tokens": first.get("max_new_tokens"), "temperature": 0.0, "tasks": tasks,
            "merged_from": [{"file": path, "command": r.get("command"), "device": r.get("device"),
                             "date": r.get("date")} for path, r in files],
            "duplicates": duplicates, "settings": settings,
            "prompts": [p for p in first.get("prompts", []) if p["id"] in ids], "runs": runs}
