"""The speculative benchmark: an offline, deterministic, held-out suite; metrics that follow their definitions;
a runner that rotates methods, survives a failing one and checks exact match with greedy."""
from __future__ import annotations

import io
import json

import pytest

from lab.bench import run as bench_run
from lab.bench import spec, suite
from lab.errors import LabError

from .conftest import tiny_lab, use_draft


# -- the suite ----------------------------------------------------------------------------------------------
def test_stream_json_array_stops_cleanly_at_a_truncated_record():
    records = [{"id": f"r{i}", "text": "a ], [ {tricky} \" string" * i, "n": [i, {"x": i}]} for i in range(6)]
    text = json.dumps(records, indent=2)
    cut = text.index('"r5"')  # the file ends inside the last record, as ShareGPT's does
    for chunk in (7, 64, 1 << 20):  # record boundaries fall inside chunks and between them
        got = list(suite.stream_json_array(io.StringIO(text[:cut]), chunk_chars=chunk))
        assert got == records[:5]
    assert list(suite.stream_json_array(io.StringIO(text), chunk_chars=5)) == records


def test_held_out_is_per_conversation_and_about_a_tenth():
    ids = [f"conv{i:05d}" for i in range(5000)]
    share = sum(suite.held_out(i) for i in ids) / len(ids)
    assert 0.07 < share < 0.13
    for i in ids[:200]:  # the segments of one long conversation fall on the same side
        assert suite.held_out(f"{i}_0") == suite.held_out(f"{i}_7") == suite.held_out(i)


@pytest.fixture(scope="module")
def small_suite():
    return suite.build_suite(3)


def test_suite_has_every_category_and_is_deterministic(small_suite):
    assert [r["category"] for r in small_suite] == [c for c in suite.CATEGORIES for _ in range(3)]
    assert len({r["id"] for r in small_suite}) == len(small_suite)
    assert suite.build_suite(3) == small_suite
    bigger = suite.build_suite(5)
    for c in suite.CATEGORIES:  # asking for more only appends
        assert [r for r in bigger if r["category"] == c][:3] == [r for r in small_suite if r["category"] == c]
    assert all(r["prompt"].strip() and isinstance(r["chat"], bool) for r in small_suite)


def test_sharegpt_prompts_are_held_out_and_built_from_their_record(small_suite):
    pool = {r["id"]: r for rows in suite.sharegpt_pool().values() for r in rows}
    for row in small_suite:
        if not row["source"].startswith("sharegpt:"):
            continue
        rid = row["source"].split(":", 1)[1]
        assert suite.held_out(rid)
        record = pool[rid]
        if row["category"] == "chat":
            assert row["prompt"] == record["question"]
        elif row["category"] in ("summarization", "retrieval"):
            assert record["answer"] in row["prompt"]  # the text the output may copy is in the prompt
        else:
            assert row["prompt"].split(": ", 1)[1] in record["answer"].replace("\n", " ")
    sources = [r["source"] for r in small_suite if r["source"].startswith("sharegpt:")]
    assert len(sources) == len(set(sources))  # no record serves two categories


def test_copy_prompts_are_opt_in_and_hold_a_held_out_answer_to_copy(small_suite):
    copy = suite.build_suite(4, ["copy"])
    assert "copy" not in suite.CATEGORIES and [r["category"] for r in copy] == ["copy"] * 4
    answers = {r["id"]: r["answer"] for r in suite.sharegpt_pool()["chat"]}
    for row in copy:
        rid = row["source"].split(":", 1)[1]
        assert suite.held_out(rid) and row["prompt"].endswith(answers[rid])
    assert {r["prompt"].split(".", 1)[0] for r in copy} == {t.split(".", 1)[0] for t in suite.COPY_TEMPLATES}


def test_code_prompts_are_humaneval_completions(small_suite):
    code = [r for r in small_suite if r["category"] == "code"]
    assert all(r["source"].startswith("humaneval:HumanEval/") and not r["chat"] and "def " in r["prompt"]
               for r in code)


def test_bad_suite_requests_name_the_fix():
    with pytest.raises(LabError, match="unknown categories"):
        suite.build_suite(1, ["poetry"])
    with pytest.raises(LabError, match=">= 1"):
        suite.build_suite(0)


# -- metrics ------------------------------------------------------------------------------------------------
def record(pid, method, accepted, depth, wall, forwards, tokens=10, category="c", exact=True, prefill=0.0):
    return {"id": pid, "category": category, "method": method, "new_tokens": tokens, "forwards": forwards,
            "draft_forwards": 0, "wall_s": wall, "prefill_s": prefill, "stop": "length", "accepted": accepted,
            "depth": depth, "size": depth, "exact": exact}


def test_tau_is_one_plus_the_per_position_acceptance():
    runs = [record("a", "greedy", [], [], 1.0, 9), record("a", "m", [0, 3, 1, 4, 2, 0], [4] * 6, 0.5, 6),
            record("b", "greedy", [], [], 1.0, 9), record("b", "m", [2, 2, 5], [5] * 3, 0.5, 3, category="d")]
    s = spec.summarize(runs)["m"]
    for group in ("c", "d", "overall"):
        curve = s[group]["position_acceptance"]
        assert s[group]["tau"] == pytest.approx(1 + sum(curve), abs=1e-3)
        assert all(x >= y for x, y in zip(curve, curve[1:]))  # reaching depth i+1 implies reaching depth i
    assert s["c"]["position_acceptance"][0] == pytest.approx(4 / 6, abs=1e-3)  # steps with >= 1 accepted


def test_solve_alpha_inverts_the_expected_accepted_length():
    for gamma in (1, 3, 5.5):
        for alpha in (0.0, 0.2, 0.55, 0.9):
            tau = spec.expected_speedup(alpha, gamma, 0.0)
            assert spec.solve_alpha(tau, gamma) == pytest.approx(alpha, abs=1e-6)


def test_speedup_and_draft_cost_follow_the_times():
    forward_s, cost, prefill = 0.1, 0.25, 0.3  # greedy: 10 tokens in 10 forwards of 0.1 s after the prefill
    depth = [4, 4, 2]
    wall = prefill + 4 * forward_s + cost * sum(depth) * forward_s  # 4 verification forwards + the drafting
    greedy_wall = prefill + 10 * forward_s  # a Trace's wall time includes its prefill
    runs = [record("a", "greedy", [], [], greedy_wall, 10, prefill=prefill),
            record("a", "m", [3, 1, 2], depth, wall, 4, prefill=prefill)]
    s = spec.summarize(runs)["m"]["overall"]
    assert s["speedup"] == pytest.approx((10 / wall) / (10 / greedy_wall), rel=1e-3)
    assert s["draft_cost"] == pytest.approx(cost, rel=1e-3)
    assert s["tokens_per_forward"] == pytest.approx(10 / 4)


def test_the_median_speedup_is_per_prompt_and_shrugs_off_one_stall():
    """Greedy stalls on one of three prompts (a first-use compile): the summed speedup says the method is faster,
    the median of the per-prompt speedups that it is slower on a typical prompt."""
    runs = []
    for pid, greedy_wall in (("a", 1.0), ("b", 1.0), ("c", 9.0)):
        runs += [record(pid, "greedy", [], [], greedy_wall, 10), record(pid, "m", [1], [2], 1.25, 5)]
    s = spec.summarize(runs)["m"]["overall"]
    assert s["speedup"] == pytest.approx((30 / 3.75) / (30 / 11.0), rel=1e-3) and s["speedup"] > 1
    assert s["speedup_median"] == pytest.approx(0.8, rel=1e-3)


def test_markdown_table_lists_methods_and_categories():
    runs = [record("a", "greedy", [], [], 1.0, 9, category="chat"), record("a", "m", [1], [2], 0.5, 5, category="chat"),
            record("b", "greedy", [], [], 1.0, 9, category="code"),
            record("b", "m", [1], [2], 0.5, 5, category="code", exact=False)]
    results = {"summary": spec.summarize(runs), "categories": ["chat", "code"], "lossless": {"greedy": True}}
    lines = spec.markdown_table(results).splitlines()
    assert lines[0].split(" | ")[2:4] == ["chat", "code"]
    assert lines[2].startswith("| greedy |") and lines[3].startswith("| m |")
    assert lines[3].endswith("| 50% |") and "2.00x" in lines[3]
    assert lines[0].split(" | ")[4:6] == ["overall", "median"] and lines[3].split(" | ")[4:6] == ["2.00x", "2.00x"]


# -- running ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_lab():
    tl = tiny_lab("llama", vocab_size=96, seed=1)
    use_draft(tl, tl.target.view([0]))
    return tl


def prompts(n=3):
    return [{"id": f"p{i}", "category": "ab"[i % 2], "prompt": [(i * 7 + j * 3) % 50 + 1 for j in range(12)] * 2,
             "chat": False} for i in range(n)]


def test_run_bench_rotates_methods_and_survives_a_failing_one(small_lab, monkeypatch):
    order = []
    generate = small_lab.generate

    def spy(name, prompt, **kwargs):
        order.append(name)
        if name == "sps" and kwargs["max_new_tokens"] > 4:
            raise RuntimeError("broken drafter")
        return generate(name, prompt, **kwargs)

    monkeypatch.setattr(small_lab, "generate", spy)
    runs = spec.run_bench(small_lab, prompts(3), ["pld", "sps"], max_new_tokens=12, progress=False)
    timed = order[3:]  # after one warm-up run per method
    assert [timed[0], timed[3], timed[6]] == ["greedy", "pld", "sps"]  # each prompt starts with another method
    assert len(runs) == 9
    pld = [r for r in runs if r["method"] == "pld"]
    assert all(r["exact"] is True and r["new_tokens"] == 12 for r in pld)  # lossless: greedy's tokens
    assert any(r["accepted"] and max(r["accepted"]) > 0 for r in pld)  # repeated prompts let lookup drafts land
    assert all(r["error"] == "RuntimeError: broken drafter" for r in runs if r["method"] == "sps")
    summary = spec.summarize(runs)
    assert summary["sps"]["overall"]["errors"] == 3 and summary["pld"]["overall"]["exact_match"] == 1.0


def test_warm_every_prompt_runs_each_method_untimed_on_every_prompt_first(small_lab, monkeypatch):
    """On a GPU each new context length captures graphs on first use: the warm-up covers every prompt at full
    length before any timed run."""
    calls = []
    generate = small_lab.generate

    def spy(name, prompt, **kwargs):
        calls.append((name, tuple(prompt), kwargs["max_new_tokens"]))
        return generate(name, prompt, **kwargs)

    monkeypatch.setattr(small_lab, "generate", spy)
    ps = prompts(3)
    spec.run_bench(small_lab, ps, ["pld"], max_new_tokens=12, progress=False, warm_every_prompt=True)
    warm, timed = calls[:6], calls[6:]
    assert warm == [(m, tuple(p["prompt"]), 12) for m in ("greedy", "pld") for p in ps]
    assert len(timed) == 6 and {c[0] for c in timed} == {"greedy", "pld"}


def test_main_checks_methods_before_running():
    with pytest.raises(LabError, match="unknown method"):
        spec.main(["--methods", "no-such-drafter"], lab=object(), prompts=prompts(1))
    with pytest.raises(LabError, match="method.key=value"):
        spec.main(["--methods", "pld", "--opt", "length=3"], lab=object(), prompts=prompts(1))
    assert bench_run.BENCHMARKS["spec"] == "lab.bench.spec"


def test_main_writes_json_and_html_and_prints_the_table_last(small_lab, tmp_path, capsys):
    out = tmp_path / "bench.json"
    spec.main(["--methods", "pld", "--max-new-tokens", "8", "--opt", "pld.length=4", "--out", str(out),
               "--no-png"], lab=small_lab, prompts=prompts(2))
    results = json.loads(out.read_text())
    assert results["methods"] == ["greedy", "pld"] and results["options"] == {"pld": {"length": 4}}
    assert set(results["summary"]["pld"]) == {"a", "b", "overall"}
    assert all("tokens" not in r for r in results["runs"])
    assert out.with_suffix(".html").exists()
    printed = capsys.readouterr().out.rstrip().splitlines()
    assert printed[-2].startswith("| greedy |") and printed[-1].startswith("| pld |")


def test_a_run_split_by_method_merges_into_one_report(small_lab, tmp_path, capsys):
    """Long GPU runs go in parts (one command under ten minutes each): each keeps its own greedy beside it."""
    suite_file = tmp_path / "suite.jsonl"
    suite_file.write_text("".join(json.dumps(p) + "\n" for p in prompts(2)))
    parts = []
    for method in ("pld", "jacobi"):
        parts.append(tmp_path / f"{method}.json")
        spec.main(["--methods", method, "--max-new-tokens", "6", "--suite", str(suite_file), "--out", str(parts[-1]),
                   "--no-plots"], lab=small_lab)
    merged = spec.main(["--merge", *map(str, parts), "--out", str(tmp_path / "all.json"), "--no-plots"])
    alone = [json.loads(p.read_text()) for p in parts]
    assert merged["methods"] == ["greedy", "pld", "jacobi"]
    assert merged["summary"]["pld"] == alone[0]["summary"]["pld"]
    assert merged["summary"]["jacobi"] == alone[1]["summary"]["jacobi"]  # against its own file's greedy
    assert [r["method"] for r in merged["runs"]].count("greedy") == 2  # greedy's runs of the first file only
    assert capsys.readouterr().out.rstrip().splitlines()[-1].startswith("| ")
    other = json.loads(parts[1].read_text())
    other["max_new_tokens"] = 7
    parts[1].write_text(json.dumps(other))
    with pytest.raises(LabError, match="share their prompts"):
        spec.merge(list(map(str, parts)))
