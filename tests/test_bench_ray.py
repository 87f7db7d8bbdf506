"""`bench spec --ray`: method x prompt shards on a local Ray cluster give the unsharded run's results (sampling on a
tiny model is deterministic on the CPU given each prompt's seed: the same tokens and forwards per method and prompt)."""
from __future__ import annotations

import json

import pytest

from lab.bench import distributed, spec
from lab.models import tiny

ray = pytest.importorskip("ray")


def test_shards_cover_every_method_and_prompt_once():
    prompts = [{"id": str(i)} for i in range(5)]
    got = distributed.shards(["greedy", "pld", "sps"], prompts, 2)
    assert [(m, first, [p["id"] for p in chunk]) for m, first, chunk in got] == [
        ("pld", 0, ["0", "1"]), ("pld", 2, ["2", "3"]), ("pld", 4, ["4"]),
        ("sps", 0, ["0", "1"]), ("sps", 2, ["2", "3"]), ("sps", 4, ["4"])]


@pytest.mark.slow
def test_ray_shards_give_the_unsharded_run(tmp_path):
    folder = tmp_path / "tiny"
    tiny("llama", vocab_size=96, layers=2, seed=3).save_pretrained(folder)
    suite = tmp_path / "suite.jsonl"
    rows = [{"id": f"p{i}", "prompt": [(7 * i + j) % 90 + 3 for j in range(6 + i)] * 2, "chat": False,
             "category": "copy" if i % 2 else "chat"} for i in range(5)]
    suite.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["--model", str(folder), "--suite", str(suite), "--methods", "pld,sps", "--max-new-tokens", "12",
              "--temperature", "1", "--warmup", "0", "--no-plots"]  # T > 0: each shard must seed as the whole run
    alone = spec.main([*common, "--out", str(tmp_path / "alone.json")])
    spread = spec.main([*common, "--out", str(tmp_path / "ray.json"), "--ray", "local", "--shard-prompts", "2"])
    key = lambda r: (r["method"], r["id"])  # noqa: E731
    mine = {key(r): r for r in alone["runs"]}
    theirs = {key(r): r for r in spread["runs"]}
    assert mine.keys() == theirs.keys() and len(mine) == len(spread["runs"]) == 15  # greedy, pld, sps on 5 prompts
    for k, r in mine.items():
        assert "error" not in r and "error" not in theirs[k]
        for field in ("new_tokens", "forwards", "draft_forwards", "stop"):
            assert r[field] == theirs[k][field], (k, field)
    assert all("node" in r and "pid" in r for r in spread["runs"])
    for method in ("greedy", "pld", "sps"):
        assert spread["summary"][method]["overall"]["tokens_per_forward"] == \
            alone["summary"][method]["overall"]["tokens_per_forward"]
    assert spread["ray"]["address"] == "local" and spread["ray"]["nodes"]
