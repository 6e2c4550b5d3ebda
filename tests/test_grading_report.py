"""Aggregation reports only what was measured, grades words as words, and says how it graded.

Traces are written as replicas write them (`write_shard`), then aggregated by `jobs.aggregate`."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs.aggregate import aggregate_run, summary_table
from storage import rundir
from storage.traces import write_shard

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "Where is the Louvre? Answer Choices: (A) London (B) Paris (C) Rome"


def word_run(run_dir: str, logprobs: bool) -> None:
    """A last-letter task: p0 answered by anagrams of its gold but once, p1 by its gold in quotes and case."""
    rundir.prepare(run_dir, {"model": {"name": "released"}, "dataset": {"name": "file"}, "prompt": {"name": "cot"},
                             "sampling": {"n": 4}, "answer": {"format": "auto"}})
    texts = {"p0": ("snat", ["snta", "snta", "tans", "snat"]), "p1": ("lyla", ['"Lyla"', "LYLA", "layl", "lyla."])}
    for problem, (gold, said) in texts.items():
        rows = [{"problem_id": problem, "sample_idx": i, "gold": gold, "num_tokens": 5,
                 "text": f'The last letters are here.\nTherefore, the answer is {answer}',
                 "token_logprobs": [-0.1 * (i + 1)] * 5 if logprobs else None} for i, answer in enumerate(said)]
        write_shard(rows, run_dir, f"part-{problem}")


def test_a_word_task_is_graded_by_its_words_and_says_how(tmp_path):
    run_dir = str(tmp_path / "run")
    word_run(run_dir, logprobs=True)
    result = aggregate_run(run_dir, "auto", "mean")
    by = {(r["method"], r["k"]): r["accuracy"] for r in result.curves}
    assert by[("maj", 4)] == 0.5  # p0's majority is the anagram 'snta': wrong; p1's is right
    assert by[("pass", 1)] == pytest.approx((1 / 4 + 3 / 4) / 2)
    answers = result.answers.to_pydict()
    assert answers["correct"] == [False, False, False, True, True, True, False, True]
    assert set(answers["answer_type"]) == {"text"} and set(answers["graded_by"]) == {"exact"}
    grading = pq.read_table(f"{run_dir}/grading.parquet").to_pylist()
    assert grading == [{"answer_type": "text", "answers": 8, "correct": 4, "exact": 8, "symbolic": 0, "fell_back": 0}]
    assert "weighted_maj" in {r["method"] for r in result.curves}
    assert list(result.omitted) == ["greedy"]


def test_traces_without_logprobs_report_no_weighted_curve_and_say_why(tmp_path):
    run_dir = str(tmp_path / "run")
    word_run(run_dir, logprobs=False)
    result = aggregate_run(run_dir, "auto", "mean", top_percent=50)
    methods = {r["method"] for r in result.curves}
    assert methods == {"maj", "pass"}
    assert set(result.omitted) == {"weighted_maj", "weighted_maj_top50", "greedy"}
    assert "2 of 2 problems have answers without per-token logprobs" in result.omitted["weighted_maj"]
    table = summary_table(result)
    assert "weighted" not in table.split("note:")[0] and " 0.0%" not in table
    assert "note: weighted_maj not reported: 2 of 2 problems" in table
    assert f"note: greedy not reported: no greedy run in {run_dir}/greedy" in table
    curves = pq.read_table(f"{run_dir}/curves.parquet")
    assert set(curves["method"].to_pylist()) == {"maj", "pass"}
    assert json.loads(curves.schema.metadata[b"omitted"]) == result.omitted
    assert "accuracy/greedy" not in result.metrics


def test_choice_golds_may_be_the_options_text(tmp_path):
    run_dir = str(tmp_path / "run")
    rundir.prepare(run_dir, {"model": {"name": "released"}, "answer": {"format": "choice"}})
    said = ["The answer is (B).", "Answer: B) Paris", "the answer is Paris", "The answer is (C)."]
    write_shard([{"problem_id": "q0", "sample_idx": i, "gold": "Paris", "question": QUESTION, "text": text}
                 for i, text in enumerate(said)], run_dir, "part-0")
    result = aggregate_run(run_dir, "choice", "mean")
    answers = result.answers.to_pydict()
    assert answers["canonical"] == ["B", "B", "B", "C"] and answers["gold_key"] == ["B"] * 4
    assert answers["correct"] == [True, True, True, False]
    assert result.problems.to_pydict()["majority_answer"] == ["B"]
    assert "tokens" in result.omitted and "tokens/total" not in result.metrics  # the traces hold no num_tokens


def test_aggregate_prints_an_audit_per_answer_type(tmp_path):
    run_dir = str(tmp_path / "run")
    rundir.prepare(run_dir, {"model": {"name": "released"}, "answer": {"format": "auto"}})
    said = {"p0": ("snat", ["snta", "snat", "no answer here"]), "p1": ("yes", ["Yes.", "No", "**yes**"]),
            "p2": (r"\frac{\sqrt{2}}{2}", [r"\boxed{\sqrt{2}/2}", r"\boxed{\frac{1}{\sqrt{2}}}", r"\boxed{2}"])}
    for problem, (gold, texts) in said.items():
        write_shard([{"problem_id": problem, "sample_idx": i, "gold": gold,
                      "text": text if "boxed" in text or text == "no answer here" else f"The answer is {text}"}
                     for i, text in enumerate(texts)], run_dir, f"part-{problem}")
    done = subprocess.run([sys.executable, "-m", "jobs.aggregate", f"run_dir={run_dir}", "tracking=none",
                           "answer.audit=2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    audit = done.stdout.split("audit: ")[1].splitlines()[1:]
    kinds = [line.split()[0] for line in audit]
    assert kinds == ["number", "math", "math", "boolean", "boolean", "text", "text", "none"]
    assert "| 'snat'" in audit[-2] and "wrong, exact" in next(line for line in audit if "'snta'" in line)
    assert all("right, symbolic" in line for line in audit[1:3])
    grading = {r["answer_type"]: r for r in pq.read_table(f"{run_dir}/grading.parquet").to_pylist()}
    assert grading["math"] == {"answer_type": "math", "answers": 2, "correct": 2, "exact": 0, "symbolic": 2,
                               "fell_back": 0}
    assert grading["none"]["answers"] == 1 and grading["boolean"]["correct"] == 2
