"""`python -m lab bench dllm` on a tiny dLLM with the default model's tokenizer: the scorers on right and wrong
answers, the task set, a whole run (JSON, table, plot), freedave scoring exactly like one-token-per-step decoding,
and one-line errors for a bad policy or model."""
from __future__ import annotations

import json
import re

import pytest
import torch

from lab import cli, models
from lab.bench import dllm as bench
from lab.bench import dllm_tasks as dt
from lab.dllm import models as dllm_models
from lab.errors import LabError

from .helpers import text_ar, text_dllm

torch.set_num_threads(1)


def test_span_scorer():
    gold = "to help you with your issue."
    assert dt.score_span("To help you with your issue", gold)["exact"]
    right = dt.score_span("The sentence ends: \"to help you, with your issue!\"", gold)
    assert right["score"] == 1.0 and right["contained"] and not right["exact"]
    assert dt.score_span("to help you with an issue", gold)["score"] == 0.0
    assert dt.score_span("xto help you with your issue", gold)["score"] == 0.0  # word for word, not characters
    assert dt.score_span("", gold)["score"] == 0.0


def test_exact_scorer():
    gold = "apple, cherry, grape"
    assert dt.score_exact("apple, cherry, grape", gold)["score"] == 1.0
    assert dt.score_exact("Here it is:\n\"apple,  cherry, grape.\"\n", gold)["score"] == 1.0
    assert dt.score_exact("apple, banana, grape", gold)["score"] == 0.0
    assert dt.score_exact("apple, cherry, grape, lemon", gold)["score"] == 0.0
    assert dt.score_exact("Apple, cherry, grape", gold)["score"] == 0.0  # exact means exact


def test_number_scorer():
    assert dt.score_number("42", "42")["score"] == 1.0
    assert dt.score_number("7 metres is 700 centimetres.\nBecause 7 x 100 = 700", "700")["score"] == 1.0
    assert dt.score_number("The answer is 1,000.", "1000")["score"] == 1.0
    assert dt.score_number("41", "42")["score"] == 0.0
    assert dt.score_number("no idea\n42", "42")["score"] == 0.0  # only the first line counts
    assert dt.score_number("", "42") == {"score": 0.0, "number": None}


def test_judge_nll_is_lower_for_what_the_judge_would_say():
    judge = text_ar()
    own = judge.generate("greedy", "What is 2 + 2?", chat=True, max_new_tokens=8).text
    scorer = dt.Judge(judge)
    mine = scorer.nll("What is 2 + 2?", own, ended=False)
    other = scorer.nll("What is 2 + 2?", "zebra quantum violet", ended=False)
    assert 0 < mine < other
    assert scorer.nll("What is 2 + 2?", "", ended=False) is None


def test_tasks_are_deterministic_and_answers_are_right():
    tasks = dt.build_tasks(7)
    assert tasks == dt.build_tasks(7)
    assert {t["task"] for t in tasks} == set(dt.TASKS) and len(tasks) == 28
    for t in tasks:
        if t["task"] == "qa":  # the answer is a span of the passage
            assert t["answer"] in t["prompt"].split("Passage:\n", 1)[1]
        elif t["task"] == "arithmetic":
            a, b = ([int(w) for w in re.findall(r"\d+", t["prompt"])] + [0])[:2]
            rule = {" + ": a + b, " - ": a - b, " times ": a * b, "centimetres": 100 * a, "minutes": 60 * a,
                    "grams": 1000 * a, "days": 7 * a}
            assert [int(t["answer"])] == [v for k, v in rule.items() if k in t["prompt"]]
        elif t["task"] == "copy":
            assert t["answer"] != t["prompt"].rsplit("\n\n", 1)[1]  # an edit was asked for
        else:
            assert t["answer"] is None


def test_the_bench_runs_end_to_end_and_freedave_scores_like_one_token_per_step(tmp_path, capsys):
    d, judge = text_dllm(), text_ar()
    tasks = dt.build_tasks(2)
    for t in tasks:  # answers one-token-per-step decoding gets right, so that scores can differ between settings
        if t["task"] in ("qa", "copy"):
            text = d.generate("llada", t["prompt"], chat=True, max_new_tokens=8, steps=0).text
            t["answer"] = next(line for line in text.splitlines() if line.strip())
    out = tmp_path / "bench.json"
    results = bench.main(["--per-task", "2", "--max-new-tokens", "8", "--out", str(out), "--no-png",
                          "--no-progress"], lab=d, judge=judge, prompts=tasks)
    printed = capsys.readouterr().out
    labels = [s["label"] for s in results["settings"]]
    assert labels[0] == "llada steps=0" and "freedave drafts=4" in labels and "deer draft_steps=1" in labels
    assert "ssd-dllm drafts=4" in labels and "apd mixture_weight=0.7" in labels
    learned = {"learn2pd", "tracelock"}  # no trained filter ships for this model: skipped, saying how to train one
    assert {s["policy"] for s in results["settings"]} == set(bench.diffusion_policies()) - learned  # every other
    assert all(f"{name} skipped: no trained filter ships for" in printed for name in learned)
    saved = json.loads(out.read_text())
    assert saved["command"].startswith("python -m lab bench dllm") and len(saved["runs"]) == 8 * len(labels)
    assert (tmp_path / "bench.html").exists() and "tokens per forward" in (tmp_path / "bench.html").read_text()
    for name in labels:
        mine = [r for r in saved["runs"] if r["setting"] == name]
        assert not [r for r in mine if "error" in r], name
        s = saved["summary"][name]
        assert s["forwards"] == sum(r["forwards"] for r in mine) > 0
        assert s["tokens_per_forward"] == round(sum(r["new_tokens"] for r in mine) / s["forwards"], 4)
    base, free = saved["summary"]["llada steps=0"], saved["summary"]["freedave drafts=4"]
    assert base["tokens_per_forward"] == 1.0
    assert base["qa"] == base["copy"] == 100.0 and base["chat"] > 0
    assert all(free[t] == base[t] for t in ("qa", "copy", "arithmetic", "chat", "accuracy"))
    for lossless in ("freedave drafts=4", "ssd-dllm drafts=4"):
        assert [r["text"] for r in saved["runs"] if r["setting"] == lossless] == \
            [r["text"] for r in saved["runs"] if r["setting"] == "llada steps=0"]
        assert saved["summary"][lossless]["forwards"] < base["forwards"]
    apd = saved["summary"]["apd mixture_weight=0.7"]  # the judge verified: one of its forwards per dLLM forward
    assert apd["draft_forwards"] == apd["forwards"] > 0
    best = saved["best_within_1_point"]  # lossless freedave at least; nothing that lost a point
    assert best["tokens_per_forward"] >= free["tokens_per_forward"] and best["accuracy"] >= base["accuracy"] - 1
    assert all(s["tokens_per_forward"] <= best["tokens_per_forward"] for s in saved["summary"].values()
               if s["accuracy"] >= base["accuracy"] - 1)
    assert min(saved["summary"][n]["copy"] for n in labels) < 100.0  # lossy settings lose points here
    table = printed.strip().splitlines()[-len(labels) - 2:]  # the Markdown table comes last
    assert table[0].startswith("| setting |") and all(line.count("|") == table[0].count("|") for line in table)
    assert [line.split("|")[1].strip() for line in table[2:]] == labels


def test_policies_option_and_bad_names():
    settings = bench.choose_settings("fast-dllm,dream:steps=3", 16)
    assert [bench.label(*s) for s in settings] == ["llada steps=0", "fast-dllm threshold=0.9",
                                                   "fast-dllm threshold=0.7", "fast-dllm threshold=0.5",
                                                   "fast-dllm factor=1.0", "dream steps=3"]
    with pytest.raises(LabError, match="unknown diffusion policy 'nope'"):
        bench.choose_settings("nope", 16)
    with pytest.raises(LabError, match="unknown diffusion policy 'greedy'"):  # registered, but not a dLLM policy
        bench.choose_settings("greedy", 16)
    with pytest.raises(LabError, match="has no option"):
        bench.choose_settings("fast-dllm:speed=3", 16)


def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    assert cli.main(["bench", "dllm", "--policies", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown diffusion policy 'nope'" in err
    monkeypatch.setattr(dllm_models, "SHIPPED", tmp_path / "nothing-here")  # an install without dllm-default
    assert cli.main(["bench", "dllm", "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dllm-default is not shipped yet" in err
    models.tiny("llama").save_pretrained(tmp_path / "ar")  # a model, but not a diffusion LM
    assert cli.main(["bench", "dllm", "--model", str(tmp_path / "ar"), "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs a diffusion LM" in err
    assert not (tmp_path / "x.json").exists()


def test_write_suite_then_run_it_elsewhere_without_a_judge(tmp_path, capsys):
    suite = tmp_path / "tasks.jsonl"
    bench.main(["--write-suite", str(suite), "--per-task", "1"])  # on a machine with the data packages
    assert [json.loads(line) for line in suite.read_text().splitlines()] == dt.build_tasks(1)
    results = bench.main(["--suite", str(suite), "--tasks", "arithmetic,copy", "--policies", "freedave,deer,apd",
                          "--max-new-tokens", "4", "--out", str(tmp_path / "b.json"), "--no-plots", "--no-progress"],
                         lab=text_dllm(), judge="none")
    assert [s["label"] for s in results["settings"]] == ["llada steps=0", "freedave drafts=4"]  # deer, apd: a judge
    assert [p["task"] for p in results["prompts"]] == ["copy", "arithmetic"] and results["judge"] is None
    (tmp_path / "spec.jsonl").write_text(json.dumps({"id": "x", "category": "chat", "prompt": "hi"}) + "\n")
    with pytest.raises(LabError, match="line 1 is not a dllm task"):  # a spec-bench suite by mistake
        bench.main(["--suite", str(tmp_path / "spec.jsonl")], lab=text_dllm(), judge="none")


def test_an_interrupted_bench_writes_the_prompts_every_setting_finished(tmp_path, monkeypatch, capsys):
    real, calls = bench.run_one, []

    def run_one(*args):
        calls.append(args[2]["id"])
        if len(calls) == 4:  # the second prompt's second setting: Ctrl-C
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(bench, "run_one", run_one)
    out = tmp_path / "b.json"
    results = bench.main(["--tasks", "arithmetic", "--per-task", "3", "--policies", "freedave", "--max-new-tokens", "4",
                          "--out", str(out), "--no-plots", "--no-progress"], lab=text_dllm(), judge="none")
    assert results["interrupted"] and [p["id"] for p in results["prompts"]] == [calls[0]]
    assert {r["id"] for r in results["runs"]} == {calls[0]} and len(results["runs"]) == 2
    assert json.loads(out.read_text())["interrupted"] and "interrupted: 1 prompts" in capsys.readouterr().out


def test_merge_joins_runs_over_the_same_tasks_and_checks_the_repeated_reference(tmp_path, capsys):
    d = text_dllm()
    common = ["--tasks", "arithmetic,copy", "--per-task", "2", "--max-new-tokens", "4", "--no-plots", "--no-progress"]
    a = bench.main([*common, "--policies", "freedave", "--out", str(tmp_path / "a.json")], lab=d, judge="none")
    b = bench.main([*common, "--policies", "fast-dllm:threshold=0.5", "--out", str(tmp_path / "b.json")], lab=d,
                   judge="none")
    capsys.readouterr()
    out = tmp_path / "m.json"
    merged = bench.main(["--merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--tasks", "arithmetic,copy",
                         "--max-new-tokens", "4", "--out", str(out), "--no-png"])
    printed = capsys.readouterr().out
    assert [s["label"] for s in merged["settings"]] == ["llada steps=0", "freedave drafts=4",
                                                         "fast-dllm threshold=0.5"]
    assert merged["summary"]["freedave drafts=4"] == a["summary"]["freedave drafts=4"]  # as its own run summed it
    assert merged["summary"]["fast-dllm threshold=0.5"] == b["summary"]["fast-dllm threshold=0.5"]
    assert merged["duplicates"] == [{"setting": "llada steps=0", "file": str(tmp_path / "b.json"), "same_texts": 4,
                                     "tasks": 4}]  # the reference ran twice, token for token the same
    assert "llada steps=0 is also in" in printed and "4 of 4 texts the same" in printed
    assert len(json.loads(out.read_text())["runs"]) == 12 and (tmp_path / "m.html").exists()
    c = json.loads((tmp_path / "b.json").read_text())  # one run's text differs: the check says so
    next(r for r in c["runs"] if r["setting"] == "llada steps=0")["text"] += " changed"
    c["runs"] = [r for r in c["runs"] if r["setting"] == "llada steps=0"] + \
        [r for r in c["runs"] if r["setting"] != "llada steps=0"]
    (tmp_path / "c.json").write_text(json.dumps(c))
    again = bench.merged([str(tmp_path / "a.json"), str(tmp_path / "c.json")], ["arithmetic", "copy"], None)
    assert again["duplicates"][0]["same_texts"] == 3
    c["runs"] = [r for r in c["runs"] if r["task"] != "copy" or r["setting"] != "fast-dllm threshold=0.5"][:-1]
    (tmp_path / "c.json").write_text(json.dumps(c))
    with pytest.raises(LabError, match="'fast-dllm threshold=0.5' ran 1 of the 4 tasks"):
        bench.merged([str(tmp_path / "a.json"), str(tmp_path / "c.json")], ["arithmetic", "copy"], None)
    c["max_new_tokens"] = 8
    (tmp_path / "c.json").write_text(json.dumps(c))
    with pytest.raises(LabError, match="max_new_tokens 8 is not 4"):
        bench.merged([str(tmp_path / "a.json"), str(tmp_path / "c.json")], ["arithmetic", "copy"], None)
    with pytest.raises(LabError, match="at least two"):
        bench.merged([str(tmp_path / "a.json")], ["arithmetic"], None)


def test_the_trade_off_plot_draws_a_line_per_policy_and_named_choice():
    settings = [("llada", {"steps": 0}), ("llada", {"steps": 4}), ("llada", {"remasking": "left_to_right"}),
                ("fast-dllm", {"threshold": 0.9}), ("fast-dllm", {"threshold": 0.5}),
                ("ssd-dllm", {"drafts": 8, "order": "left-to-right"}),
                ("ssd-dllm", {"drafts": 16, "order": "left-to-right", "lookup": 3})]
    results = {"tasks": ["qa"], "settings": [{"label": bench.label(*s), "policy": s[0], "options": s[1]}
                                             for s in settings],
               "summary": {bench.label(*s): {"accuracy": 50.0 - i, "tokens_per_forward": 1.0 + i}
                           for i, s in enumerate(settings)}}
    lines = {t.name: len(t.x) for t in bench.figures(results)["accuracy"].data}
    assert lines == {"llada": 2, "llada remasking=left_to_right": 1, "fast-dllm": 2,
                     "ssd-dllm order=left-to-right": 2}
