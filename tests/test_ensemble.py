"""Votes across models: shared classes, ensemble@k against brute force, and the job on fixed answer tables."""

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.curves import vote_at_k_mc
from analysis.ensemble import EnsembleProblem, ensemble_curve, ensemble_problem, member_weights
from analysis.errors import ConfigError
from jobs.cli import compose
from jobs.config import validate_ensemble
from jobs.ensemble import EnsembleError, ensemble

ROOT = Path(__file__).resolve().parents[1]


def brute_force(problem: EnsembleProblem, k: int, weights: list[float]) -> float:
    """Mean tie credit over every choice of k samples from each model."""
    credits = []
    for draw in itertools.product(*(itertools.combinations(labels, k) for labels in problem.labels)):
        votes: dict[int, float] = {}
        for weight, labels in zip(weights, draw):
            for label in labels:
                if label >= 0:
                    votes[label] = votes.get(label, 0.0) + weight
        top = max(votes.values(), default=0.0)
        tied = [c for c, v in votes.items() if v >= top * (1 - 1e-9)] if top > 0 else []
        credits.append(1 / len(tied) if problem.correct_class in tied else 0.0)
    return float(np.mean(credits))


def test_answers_of_all_models_share_classes():
    problem = ensemble_problem([["18", "3/4", None], ["0.75", "7"]], "3/4", "number")
    a, b = problem.labels
    assert a[1] == b[0] == problem.correct_class and a[2] == -1
    assert len({a[0], a[1], b[1]}) == 3


@pytest.mark.parametrize("weights", [[1.0, 1.0], [1.0, 3.0]])
def test_ensemble_at_k_matches_brute_force(weights):
    problem = EnsembleProblem([np.array([0, 0, 1, 2]), np.array([1, 2, -1, 1])], correct_class=1)
    ks = [1, 2, 3, 4]
    estimate, stderr = vote_at_k_mc(problem.labels, problem.correct_class, ks, 20_000, np.random.default_rng(0),
                                    member_weights(problem, weights))
    exact = [brute_force(problem, k, weights) for k in ks]
    assert np.all(np.abs(estimate - exact) <= 4 * stderr + 1e-12)
    assert estimate[-1] == exact[-1] and stderr[-1] == 0  # every sample drawn: one vote, no noise


def test_weights_change_the_winner():
    problem = EnsembleProblem([np.array([0, 0]), np.array([1, 1])], correct_class=1)
    equal, _ = vote_at_k_mc(problem.labels, 1, [2], 10, np.random.default_rng(0), member_weights(problem, [1.0, 1.0]))
    heavy, _ = vote_at_k_mc(problem.labels, 1, [2], 10, np.random.default_rng(0), member_weights(problem, [1.0, 2.0]))
    assert equal[0] == 0.5 and heavy[0] == 1.0


def test_curve_counts_every_model_s_samples_in_k():
    problems = [EnsembleProblem([np.array([0, 1, 0, 0]), np.array([0, 0, 1, 1])], 0),
                EnsembleProblem([np.array([1, 1, 1, 0]), np.array([2, 2, 2, 2])], 0)]
    rows = ensemble_curve(problems, seed=0)
    assert [(r["k"], r["k_per_model"]) for r in rows] == [(2, 1), (4, 2), (8, 4)]
    assert rows[-1]["accuracy"] == pytest.approx((1.0 + 0.0) / 2) and rows[-1]["stderr"] == 0
    assert all(r["ci_low"] <= r["accuracy"] <= r["ci_high"] for r in rows)
    with pytest.raises(ValueError, match="3 model weights for 2 models"):
        ensemble_curve(problems, model_weights=[1, 1, 1])


def write_answers(run_dir: Path, answers: dict[str, list], gold: str = "5", gold_key: str | None = "5") -> str:
    """An aggregated run's answers.parquet: problem id -> canonical answer per sample, and the gold with its key."""
    rows = [{"problem_id": pid, "sample_idx": i, "canonical": key, "gold": gold,
             **({"gold_key": gold_key} if gold_key else {})}
            for pid, keys in answers.items() for i, key in enumerate(keys)]
    run_dir.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), run_dir / "answers.parquet")
    return str(run_dir)


def test_ensemble_job_marginalizes_over_both_runs(tmp_path):
    a = write_answers(tmp_path / "a", {"p1": ["5", "5", "4", "4"], "p2": ["3", "3", "3", "5"]})
    b = write_answers(tmp_path / "b", {"p2": ["5", "5", "5", "1"], "p1": ["4", "4", "4", "4"]})
    rows = ensemble([a, b], "gsm8k", None, seed=0)
    full = {r["run"]: r for r in rows if r["k"] == 4 and r["method"] in ("maj", "ensemble")}
    assert full["a"]["accuracy"] == 0.25 and full["b"]["accuracy"] == 0.5  # a: p1 ties 2:2; b: p2 wins 3:1
    top = next(r for r in rows if r["run"] == "ensemble" and r["k"] == 8)
    assert top["accuracy"] == 0.5  # p1: 2 votes for 5 against 6 for 4; p2: 4 for 5 against 3 for 3
    weighted = ensemble([a, b], "gsm8k", [3.0, 1.0], seed=0)
    assert next(r for r in weighted if r["run"] == "ensemble" and r["k"] == 8)["accuracy"] == 0.0  # p2: 9 for 3, 6 for 5


def test_ensemble_needs_the_same_problems_and_aggregated_runs(tmp_path):
    a = write_answers(tmp_path / "a", {"p1": ["5"], "p2": ["5"]})
    b = write_answers(tmp_path / "b", {"p1": ["5"]})
    with pytest.raises(EnsembleError, match=rf"runs {a} and {b} hold different problems \(1 only in {a}, 0 only in {b}\)"):
        ensemble([a, b], "gsm8k", None, seed=0)
    with pytest.raises(EnsembleError, match="python -m jobs.aggregate run_dir="):
        ensemble([a, str(tmp_path / "missing")], "gsm8k", None, seed=0)


@pytest.mark.parametrize("overrides, message", [
    (["run_dirs=[a,b]", "weights=[1.0]"], r"^weights=\[1.0\]: one weight per run \(2 runs\)$"),
    (["run_dirs=[a]"], r"^run_dirs=\['a'\]: an ensemble needs at least two runs$"),
    (["run_dirs=[a,b]", "answer.format=latex"], r"^answer.format='latex': must be one of"),
])
def test_ensemble_config_is_checked_before_any_run_is_read(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_ensemble(compose(*overrides, "out=x", config_name="ensemble"))


@pytest.mark.parametrize("scheme", ["", "file://"])  # a URI goes through pyarrow's filesystem layer, as s3:// would
def test_ensemble_command_writes_curves_and_plot(tmp_path, scheme):
    a = scheme + write_answers(tmp_path / "a", {"p1": ["5", "4"], "p2": ["5", "5"]})
    b = scheme + write_answers(tmp_path / "b", {"p1": ["5", "5"], "p2": ["1", "2"]})
    result = subprocess.run(
        [sys.executable, "-m", "jobs.ensemble", f"run_dirs=[{a},{b}]", f"out={scheme}{tmp_path}/ens", "tracking=none"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ensemble" in result.stdout and "a maj" in result.stdout
    table = pq.read_table(tmp_path / "ens" / "curves.parquet")
    assert set(table["run"].to_pylist()) == {"ensemble", "a", "b"}
    assert (tmp_path / "ens" / "curves.png").stat().st_size > 0


def test_ensemble_grades_against_the_gold_key_of_the_aggregation(tmp_path):
    """A choice task whose gold is the option's text: aggregation keyed it as the letter, and so does the ensemble."""
    a = write_answers(tmp_path / "a", {"p1": ["B", "B"]}, gold="Paris", gold_key="B")
    b = write_answers(tmp_path / "b", {"p1": ["B", "C"]}, gold="Paris", gold_key="B")
    rows = ensemble([a, b], "choice", None, seed=0)
    assert next(r for r in rows if r["run"] == "ensemble" and r["k"] == 4)["accuracy"] == 1.0
    old = write_answers(tmp_path / "old", {"p1": ["5"]}, gold_key=None)
    with pytest.raises(EnsembleError, match=r"answers.parquet without a gold_key column; run `python -m jobs.aggregate"):
        ensemble([a, old], "choice", None, seed=0)
