"""Confidence-weighted votes (DeepConf): the top-η% filter within each draw, on fixed traces and on real logprobs."""

import itertools
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from analysis.confidence import filter_top
from analysis.curves import Votes, vote_at_k_mc
from analysis.errors import ConfigError
from analysis.methods import scaling_curves
from jobs.aggregate import aggregate_run
from jobs.cli import compose
from jobs.config import validate
from storage.traces import open_traces, write_shard

ROOT = Path(__file__).resolve().parents[1]


def filtered_vote_exact(labels: np.ndarray, weights: np.ndarray, right: int, k: int, eta: float) -> float:
    """Mean over every k-subset (in index order) of the tie credit of its top-η% weighted vote."""
    credits = []
    for draw in itertools.combinations(range(len(labels)), k):
        kept = filter_top(weights[list(draw)], eta)
        votes: dict[int, float] = {}
        for i, w in zip(draw, kept):
            if labels[i] >= 0:
                votes[labels[i]] = votes.get(labels[i], 0.0) + w
        top = max(votes.values(), default=0.0)
        tied = [c for c, v in votes.items() if v >= top * (1 - 1e-9)] if top > 0 else []
        credits.append(1 / len(tied) if right in tied else 0.0)
    return float(np.mean(credits))


def test_filter_top_works_row_by_row():
    kept = filter_top(np.array([[0.1, 0.5, 0.3, 0.9], [4.0, 3.0, 2.0, 1.0]]), 50)
    assert kept.tolist() == [[0, 0.5, 0, 0.9], [4.0, 3.0, 0, 0]]


def test_the_filter_applies_within_each_draw_by_hand():
    labels, weights = np.array([0, 0, 1]), np.array([0.2, 0.3, 0.9])
    # k=2 keeps the more confident of the pair: {0,1} -> class 0, {0,2} and {1,2} -> class 1.
    # k=3 keeps ceil(1.5) = 2: 0.3 for class 0 against 0.9 for class 1.
    estimate, stderr = vote_at_k_mc([labels], 0, [1, 2, 3], 30_000, np.random.default_rng(0), [weights], top_percent=50)
    assert estimate == pytest.approx([2 / 3, 1 / 3, 0.0], abs=4 * stderr.max() + 1e-9)
    assert estimate[-1] == 0.0 and stderr[-1] == 0.0
    plain, _ = vote_at_k_mc([labels], 0, [3], 10, np.random.default_rng(0), [weights])
    assert plain[0] == 0.0  # unfiltered: 0.5 against 0.9


@pytest.mark.parametrize("eta", [10, 40, 75])
def test_filtered_vote_matches_brute_force(eta):
    rng = np.random.default_rng(eta)
    labels = np.array([0, 1, 1, 2, 0, -1, 1, 0])
    weights = rng.uniform(0.1, 2.0, len(labels))
    ks = [1, 2, 3, 5, 8]
    estimate, stderr = vote_at_k_mc([labels], 0, ks, 20_000, np.random.default_rng(1), [weights], top_percent=eta)
    exact = [filtered_vote_exact(labels, weights, 0, k, eta) for k in ks]
    assert np.all(np.abs(estimate - exact) <= 4 * stderr + 1e-9)


def test_filtered_curve_sits_on_the_same_k_grid_and_100_percent_changes_nothing():
    problems = [Votes(np.array([0, 1, 1, 0, 2]), 0, np.array([0.9, 0.2, 0.3, 0.8, 0.1])),
                Votes(np.array([1, 1, 0, -1, 0]), 1, np.array([0.5, 0.6, 0.4, 0.0, 0.7]))]
    curves = scaling_curves(problems, top_percent=50, n_boot=200)
    by = {(r["method"], r["k"]): r["accuracy"] for r in curves.rows}
    assert {m for m, _ in by} == {"maj", "pass", "weighted_maj", "weighted_maj_top50"}
    assert {k for m, k in by if m == "weighted_maj_top50"} == {k for m, k in by if m == "maj"} == {1, 2, 4, 5}
    full = scaling_curves(problems, top_percent=100, n_boot=200).per_problem
    assert np.array_equal(full["weighted_maj_top100"].values, full["weighted_maj"].values)
    unweighted = [Votes(p.labels, p.correct_class) for p in problems]
    assert "weighted_maj_top50" not in {r["method"] for r in scaling_curves(unweighted, top_percent=50).rows}


def test_top_percent_and_cot_decoding_settings_are_validated():
    validate(compose("answer.top_percent=10"))
    for bad in ("answer.top_percent=0", "answer.top_percent=101"):
        with pytest.raises(ConfigError, match=r"^answer.top_percent="):
            validate(compose(bad))
    with pytest.raises(ConfigError, match=r"^sampling.max_tokens=1: must be >= 2 with decoding=cot_decoding"):
        validate(compose("decoding=cot_decoding", "sampling.max_tokens=1"))


def confident(p: float, steps: int = 3) -> dict:
    """Logprob columns of a trace whose every step has top-2 probabilities (p, 1 - p)."""
    return {"token_logprobs": [math.log(p)] * steps, "top_logprobs": [[math.log(p), math.log(1 - p)]] * steps}


def test_confident_minority_outvotes_an_unsure_majority_on_fixed_traces(tmp_path):
    run = str(tmp_path)
    texts = [("The answer is 5.", 0.98), ("The answer is 5.", 0.98), ("The answer is 6.", 0.6),
             ("The answer is 6.", 0.6), ("The answer is 6.", 0.6)]
    rows = [{"problem_id": "p", "sample_idx": i, "text": t, "gold": "5", "num_tokens": 3, **confident(p)}
            for i, (t, p) in enumerate(texts)]
    write_shard(rows, run, "part-a")
    result = aggregate_run(run, "gsm8k", "mean", top_percent=40)
    by = {(r["method"], r["k"]): r["accuracy"] for r in result.curves}
    assert by[("maj", 5)] == 0.0  # three votes for 6
    assert by[("weighted_maj", 5)] == 1.0  # 2 x 3.93 for 5 against 3 x 0.74 for 6
    assert by[("weighted_maj_top40", 5)] == 1.0  # the two most confident are both 5
    conf = pq.read_table(f"{run}/answers.parquet")["confidence"].to_pylist()
    assert conf[0] == pytest.approx(-(math.log(0.98) + math.log(0.02)) / 2)


@pytest.mark.engine
def test_real_logprobs_give_top_k_per_token_and_confidence_weights(tmp_path):
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "jobs.sample", f"run_dir={run}", "model=smollm2_135m", "dataset.limit=2", "sampling.n=2",
         "sampling.max_tokens=32", "sampling.logprobs=5", "tracking=none"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = open_traces(str(run)).to_table().to_pylist()
    assert len(rows) == 4
    for row in rows:
        assert len(row["top_logprobs"]) == len(row["token_logprobs"]) == row["num_tokens"]
        for sampled, top in zip(row["token_logprobs"], row["top_logprobs"]):
            assert len(top) == 5 and top == sorted(top, reverse=True) and sampled <= top[0] + 1e-6
    rows.sort(key=lambda r: (r["problem_id"], r["sample_idx"]))
    by_hand = [-np.mean([np.mean(top) for top in r["top_logprobs"]]) for r in rows]  # -mean of top-5 logprobs
    result = aggregate_run(str(run), "number", "mean", top_percent=50)
    assert pq.read_table(f"{run}/answers.parquet")["confidence"].to_numpy() == pytest.approx(by_hand, rel=1e-5)
    assert min(by_hand) > 0 and {"weighted_maj", "weighted_maj_top50"} <= {r["method"] for r in result.curves}
