"""CoT-decoding: the answer confidence Δ and branch selection by hand, planning, and the real engine's branches."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.answer_confidence import answer_confidence, answer_span, margin, token_offsets
from analysis.cot_decoding import choose
from analysis.curves import Votes
from analysis.methods import scaling_curves
from jobs.aggregate import aggregate_run
from jobs.cli import compose
from jobs.sample import plan_units, samples_per_problem, stop_texts
from problems.datasets import arith_problems
from storage.traces import open_traces

ROOT = Path(__file__).resolve().parents[1]
PIECES = ["The", " answer", " is", " 4", "2", ".", "<|im_end|>"]
TEXT = "The answer is 42."


def lp(*probs: float) -> list[float]:
    return [math.log(p) for p in probs]


def test_token_offsets_follow_the_text_and_give_special_tokens_no_span():
    spans = token_offsets(TEXT, PIECES)
    assert [TEXT[a:b] for a, b in spans] == PIECES[:-1] + [""]
    assert spans[-1] == (len(TEXT), len(TEXT))


def test_token_offsets_resync_after_a_piece_missing_from_the_text():
    spans = token_offsets("x é y", ["x", " \ufffd", "\ufffd", "é", " y"])  # two byte pieces, then the character
    assert spans[-1] == (3, 5) and spans[1] == spans[2] == (1, 1)


def test_delta_is_the_mean_margin_over_the_answer_tokens_only():
    tops = [lp(0.5, 0.4), lp(0.9, 0.1), lp(0.7, 0.2), lp(0.6, 0.3), lp(0.9, 0.05), lp(0.99, 0.01), lp(1.0)]
    delta = answer_confidence(TEXT, token_offsets(TEXT, PIECES), tops, "gsm8k")
    assert delta == pytest.approx(((0.6 - 0.3) + (0.9 - 0.05)) / 2)


def test_delta_uses_the_last_occurrence_of_the_answer_and_none_without_one():
    text = "42 is half of 84. The answer is 84."
    assert answer_span(text, "gsm8k") == (32, 34)
    assert answer_confidence("no number here", [(0, 14)], [lp(0.9, 0.1)], "gsm8k") is None


def test_margin_takes_the_two_most_likely_and_zero_for_a_missing_runner_up():
    assert margin(lp(0.2, 0.7, 0.1)) == pytest.approx(0.5)
    assert margin(lp(0.8)) == pytest.approx(0.8)


def test_max_and_agg_choose_differently():
    labels, deltas = np.array([0, 1, 1, -1]), np.array([0.9, 0.5, 0.6, 1.0])  # the unanswered branch has no say
    assert choose(labels, deltas, "max") == 0
    assert choose(labels, deltas, "agg") == 1  # 0.5 + 0.6 > 0.9
    assert choose(np.array([-1, -1]), np.array([0.9, 0.9]), "max") == -1


def test_cot_decoding_curves_use_the_top_k_branches_in_rank_order():
    problems = [
        Votes(np.array([1, 0, 0]), 0, deltas=np.array([0.9, 0.5, 0.6])),  # max: wrong at every k; agg: right from k=3
        Votes(np.array([0, 1, 0]), 0, deltas=np.array([0.2, 0.3, 0.0])),  # max and agg: right at k=1, wrong from k=2
    ]
    curves = scaling_curves(problems, ks=[1, 2, 3])  # every method whose inputs the votes hold: deltas, not weights
    assert [r["method"] for r in curves.rows[::3]] == ["maj", "pass", "cot_decoding_max", "cot_decoding_agg"]
    rows = {(r["method"], r["k"]): r["accuracy"] for r in curves.rows}
    assert [rows[("cot_decoding_max", k)] for k in (1, 2, 3)] == [0.5, 0.0, 0.0]
    assert [rows[("cot_decoding_agg", k)] for k in (1, 2, 3)] == [0.5, 0.0, 0.5]


def test_branches_per_problem_and_stop_texts_come_from_the_config():
    cfg = compose("decoding=cot_decoding", "prompt=plain", "sampling.top_k_branches=6", "sampling.n=3")
    assert samples_per_problem(cfg) == 6 and samples_per_problem(compose("sampling.n=3")) == 3
    assert stop_texts(cfg.prompt) == ("\nQ:",)
    assert stop_texts(compose("prompt=cot").prompt) == ()


def test_units_hold_whole_problems_and_resume_only_missing_branches():
    problems = arith_problems(5, 2, seed=0)
    prompts = {p.problem_id: p.question for p in problems}
    done = {problems[0].problem_id: {0, 1, 2, 3}, problems[1].problem_id: {0, 1}}
    units = list(plan_units(problems, prompts, 4, 0, 5, done, whole_problems=True))
    per_unit = [{r.problem_id for r in u.requests} for u in units]
    assert all(len(u.requests) >= 5 for u in units[:-1])
    assert len(set().union(*per_unit)) == sum(len(s) for s in per_unit) == 4  # no problem split across units
    assert sorted((r.problem_id, r.sample_idx) for u in units for r in u.requests)[:2] == [(problems[1].problem_id, 2), (problems[1].problem_id, 3)]


@pytest.mark.engine
def test_branches_on_the_top_k_first_tokens_and_resumes(tmp_path):
    run = tmp_path / "run"

    def sample(k: int) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "jobs.sample", f"run_dir={run}", "model=smollm2_135m", "decoding=cot_decoding", "prompt=plain",
             "dataset.limit=2", "sampling.max_tokens=32", "sampling.logprobs=3", f"sampling.top_k_branches={k}",
             "tracking=none"],
            cwd=ROOT, capture_output=True, text=True, timeout=900,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stderr

    sample(3)
    rows = open_traces(str(run)).to_table().sort_by([("problem_id", "ascending"), ("sample_idx", "ascending")]).to_pylist()
    assert len(rows) == 6 and {r["decoding"] for r in rows} == {"cot_decoding"}
    for problem in (rows[:3], rows[3:]):
        assert [r["branch_rank"] for r in problem] == [r["sample_idx"] for r in problem] == [0, 1, 2]
        first_step = problem[0]["top_logprobs"][0]  # the prompt's top-3 first tokens, the same for every branch
        assert all(r["top_logprobs"][0] == first_step for r in problem)
        assert [r["token_logprobs"][0] for r in problem] == pytest.approx(first_step)  # branch r took the r-th
        assert len({r["text"] for r in problem}) == 3 and {r["temperature"] for r in problem} == {0.0}
    for r in rows:
        assert len(r["token_logprobs"]) == r["num_tokens"] and all(len(top) == 3 for top in r["top_logprobs"])
        if r["answer_confidence"] is not None:
            assert 0.0 <= r["answer_confidence"] <= 1.0
    assert any(r["answer_confidence"] is not None for r in rows)

    shards = {p.name: p.stat().st_mtime_ns for p in (run / "traces").glob("*.parquet")}
    assert "2 samples (6 already present" in sample(4)  # one more branch per problem: only it is generated
    table = open_traces(str(run)).to_table().sort_by([("problem_id", "ascending"), ("sample_idx", "ascending")])
    assert table.num_rows == 8 and table["branch_rank"].to_pylist() == [0, 1, 2, 3] * 2
    assert all((run / "traces" / name).stat().st_mtime_ns == mtime for name, mtime in shards.items())

    result = aggregate_run(str(run), "gsm8k", "mean")
    methods = {r["method"] for r in result.curves}
    assert {"maj", "pass", "cot_decoding_max", "cot_decoding_agg"} <= methods
    assert 0.0 <= result.metrics["cot_decoding/max"] <= 1.0 and "cot_decoding/agg" in result.metrics
