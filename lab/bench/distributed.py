"""The speculative benchmark fanned out over a Ray cluster: method x prompt shards, merged into one result.

    python -m lab bench spec --ray ADDRESS [--shard-prompts 4] ...

ADDRESS is a running cluster (`auto`, or `ray://HOST:10001`) or `local` (a Ray started on this machine for the run).
Every node needs decoding-lab installed and the model reachable under the same name (the default model, a hub id in
its cache, or a path that exists on every node). A shard is one method and a chunk of prompts: one Ray task runs
greedy and the method on them in one worker process, so each speedup is against the greedy run beside it, on the same
device (`run_bench`'s rule); a worker loads the model once and keeps it for the shards that follow. A shard asks Ray
for one GPU when the run asks for a CUDA device. The merge keeps each method's runs with the greedy runs of its own
shards (`merge`), and the report is the one an unsharded run writes.
"""
from __future__ import annotations

import os
import socket

from ..errors import LabError
from ..metrics import BASELINE, summarize

_LABS: dict[tuple, object] = {}  # per worker process: (model, device, dtype) -> Lab


def worker_lab(model: str, device: str | None, dtype: str | None):
    """The worker's Lab for this model, loaded at its first shard."""
    key = (model, device, dtype)
    if key not in _LABS:
        import torch

        from ..api import Lab

        _LABS[key] = Lab(model, device=device, dtype=getattr(torch, dtype) if dtype else None)
    return _LABS[key]


def run_shard(runner, model: str, device: str | None, dtype: str | None, prompts: list[dict], method: str,
              first: int, options: dict) -> list[dict]:
    """Greedy and `method` on `prompts` (global indices first.. for the seeds), as `runner` (`spec.run_bench`, passed
    in by the benchmark that fans out) records them."""
    lab = worker_lab(model, device, dtype)
    runs = runner(lab, prompts, [method], progress=False, first=first, **options)
    where = {"node": socket.gethostname(), "pid": os.getpid(), "device": str(lab.target.device)}
    return [{**r, **where} for r in runs]


def shards(methods: list[str], prompts: list[dict], size: int) -> list[tuple[str, int, list[dict]]]:
    """(method, index of the chunk's first prompt, chunk) for every method and chunk of `size` prompts."""
    if size < 1:
        raise LabError(f"--shard-prompts must be >= 1, got {size}")
    names = [m for m in methods if m != BASELINE] or [BASELINE]
    return [(m, i, prompts[i:i + size]) for m in names for i in range(0, len(prompts), size)]


def merge(per_method: dict[str, list[dict]]) -> tuple[list[dict], dict]:
    """(runs, summary) from each method's shard runs (its greedy runs beside its own): a method's metrics come from
    its own shards; greedy's from the greedy runs of the first method's shards (one per prompt)."""
    first = next(iter(per_method.values()))
    greedy = [r for r in first if r["method"] == BASELINE]
    runs, summary = list(greedy), {BASELINE: summarize(greedy)[BASELINE]}
    for method, rows in per_method.items():
        if method == BASELINE:
            continue
        summary[method] = summarize(rows)[method]
        runs += [r for r in rows if r["method"] == method]
    return runs, summary


def run(address: str, runner, model: str, device: str | None, dtype: str | None, prompts: list[dict],
        methods: list[str], size: int, options: dict, progress: bool = True) -> tuple[list[dict], dict, list[str]]:
    """Run every shard on the cluster at `address` with `runner` (`spec.run_bench`); (runs, summary, the nodes that
    ran them)."""
    try:
        import ray
    except ImportError:
        raise LabError("--ray needs Ray: pip install 'decoding-lab[cluster]'") from None
    from tqdm.auto import tqdm

    started = not ray.is_initialized()
    if started:
        kwargs = dict(include_dashboard=False, log_to_driver=False)
        ray.init(**kwargs) if address == "local" else ray.init(address=address, **kwargs)
    try:
        gpus = 1 if device and device.startswith("cuda") else 0
        task = ray.remote(num_gpus=gpus, max_retries=0)(run_shard)
        pending = {task.remote(runner, model, device, dtype, chunk, method, first, options): method
                   for method, first, chunk in shards(methods, prompts, size)}
        per_method: dict[str, list[dict]] = {m: [] for m in dict.fromkeys(pending.values())}
        bar = tqdm(total=len(pending), desc="ray shards", disable=not progress)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            method = pending.pop(done[0])
            per_method[method] += ray.get(done[0])
            bar.update(1)
        bar.close()
    finally:
        if started:
            ray.shutdown()
    order = {p["id"]: i for i, p in enumerate(prompts)}
    for rows in per_method.values():
        rows.sort(key=lambda r: order[r["id"]])
    runs, summary = merge(per_method)
    return runs, summary, sorted({r["node"] for rows in per_method.values() for r in rows})
