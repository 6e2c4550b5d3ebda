"""Scaling curves: exact maj@k against brute force, Monte Carlo against exact, pass@k, CIs, plots."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from analysis.curves import (
    Votes,
    bootstrap_ci,
    class_counts,
    k_grid,
    maj_at_k_exact,
    maj_curve,
    majority_vote,
    n_permutations,
    pass_at_k,
    vote_at_k_mc,
)
from analysis.methods import scaling_curves
from analysis.plots import curves_figure, save_figure, tokens_figure


def vote_credit(drawn: np.ndarray, correct_class: int, weights: np.ndarray | None = None) -> float:
    """1/t if the right class is among the t top (weighted) classes of the drawn labels, else 0."""
    answered = drawn >= 0
    if weights is None:
        weights = np.ones(len(drawn))
    totals: dict[int, float] = {}
    for label, w in zip(drawn[answered], weights[answered]):
        totals[int(label)] = totals.get(int(label), 0.0) + float(w)
    if not totals or max(totals.values()) <= 0:
        return 0.0
    top = max(totals.values())
    tied = [c for c, v in totals.items() if math.isclose(v, top, rel_tol=1e-9)]
    return 1 / len(tied) if correct_class in tied else 0.0


def brute_force_maj(labels: np.ndarray, correct_class: int, k: int) -> float:
    """maj@k as the mean vote credit over every k-subset."""
    subsets = itertools.combinations(range(len(labels)), k)
    credits = [vote_credit(labels[list(s)], correct_class) for s in subsets]
    return sum(credits) / len(credits)


def count_vector_maj(counts: list[int], no_answer: int, k: int) -> Fraction:
    """maj@k for the class counts[0], exactly, by enumerating the draw counts of each class."""
    sizes = counts + [no_answer]
    n = sum(sizes)
    total = Fraction(0)
    for draw in itertools.product(*(range(min(c, k) + 1) for c in sizes[:-1])):
        rest = k - sum(draw)
        if not 0 <= rest <= no_answer:
            continue
        ways = math.prod(math.comb(c, x) for c, x in zip(sizes, (*draw, rest)))
        top = max(draw)
        if top > 0 and draw[0] == top:
            total += Fraction(ways, draw.count(top))
    return total / math.comb(n, k)


def test_k_grid():
    assert k_grid(1) == [1]
    assert k_grid(2) == [1, 2]
    assert k_grid(8) == [1, 2, 4, 8]
    assert k_grid(10) == [1, 2, 4, 8, 10]
    assert k_grid(1024)[-3:] == [256, 512, 1024]


@pytest.mark.parametrize("seed", range(6))
def test_exact_maj_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    for _ in range(12):
        n = int(rng.integers(1, 13))
        labels = rng.integers(-1, int(rng.integers(1, 5)), size=n)
        correct = int(rng.choice(labels)) if rng.random() < 0.9 else -1
        c_r, others = class_counts(labels, correct)
        for k in range(1, n + 1):
            assert maj_at_k_exact(c_r, others, n, k) == pytest.approx(brute_force_maj(labels, correct, k), abs=1e-12)


def test_exact_maj_with_ties_and_no_answers():
    labels = np.array([0, 0, 1, 1, 2, 2, -1, -1, -1, 3])
    for correct in (0, 3):
        c_r, others = class_counts(labels, correct)
        for k in range(1, 11):
            assert maj_at_k_exact(c_r, others, 10, k) == pytest.approx(brute_force_maj(labels, correct, k), abs=1e-12)


@pytest.mark.parametrize("counts,no_answer", [([20, 18, 9, 3], 10), ([9, 15, 15, 1, 1], 19), ([30, 2, 2, 2], 24)])
def test_exact_maj_matches_count_enumeration(counts, no_answer):
    n = sum(counts) + no_answer
    for k in k_grid(n) + [n - 1, 23]:
        expected = float(count_vector_maj(counts, no_answer, k))
        assert maj_at_k_exact(counts[0], np.array(counts[1:]), n, k) == pytest.approx(expected, abs=1e-12)


def test_exact_maj_trivial_cases():
    assert maj_at_k_exact(0, np.array([5, 3]), 10, 4) == 0.0
    assert maj_at_k_exact(3, np.array([5]), 10, 1) == pytest.approx(0.3)
    assert maj_at_k_exact(5, np.array([5, 2]), 12, 12) == 0.5
    assert maj_at_k_exact(10, np.array([], dtype=int), 10, 6) == pytest.approx(1.0)


def test_exact_maj_large_n_is_finite_and_matches_monte_carlo():
    # C(1024, 512) overflows float64; the exact path works with probabilities throughout.
    rng = np.random.default_rng(1)
    labels = rng.choice([-1, 0, 1, 2, 3, 4], size=1024, p=[0.1, 0.33, 0.3, 0.17, 0.05, 0.05])
    c_r, others = class_counts(labels, 1)
    ks = [2, 16, 128, 512]
    exact = np.array([maj_at_k_exact(c_r, others, 1024, k) for k in ks])
    mean, se = vote_at_k_mc([labels], 1, ks, 4000, np.random.default_rng(2))
    assert np.all(np.isfinite(exact)) and np.all((exact >= 0) & (exact <= 1))
    assert np.all(np.abs(mean - exact) <= 4 * se + 1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_monte_carlo_agrees_with_exact(seed):
    rng = np.random.default_rng(seed)
    labels = rng.choice([-1, 0, 1, 2, 3], size=64, p=[0.15, 0.35, 0.3, 0.15, 0.05])
    ks = k_grid(64)
    c_r, others = class_counts(labels, 1)
    exact = np.array([maj_at_k_exact(c_r, others, 64, k) for k in ks])
    mean, se = vote_at_k_mc([labels], 1, ks, 3000, np.random.default_rng(seed + 10))
    assert np.all(se[:-1] > 0) and se[-1] == 0  # k = n: every permutation gives the same vote
    assert np.all(np.abs(mean - exact) <= 4 * se + 1e-12)


def test_maj_curve_exposes_the_path_used():
    rng = np.random.default_rng(3)
    problems = [Votes(rng.choice([-1, 0, 1, 2], size=32), int(rng.integers(0, 3))) for _ in range(5)]
    ks = k_grid(32)
    exact = maj_curve(problems, ks, max_work=math.inf)
    estimated = maj_curve(problems, ks, seed=4, max_work=0)
    assert not exact.estimated.any() and np.all(exact.stderr == 0)
    # k = 1 and k = n are closed forms, never estimated; everything else is with max_work=0.
    assert not estimated.estimated[:, [0, -1]].any() and estimated.estimated[:, 1:-1].all()
    assert np.all(np.abs(estimated.values - exact.values) <= 4 * estimated.stderr + 1e-12)


def test_n_permutations_meets_the_standard_error_target():
    for n_estimated, n_problems in [(1, 1), (200, 1319), (1319, 1319), (3, 40)]:
        r = n_permutations(n_estimated, n_problems)
        assert math.sqrt(0.25 * n_estimated / r) / n_problems <= 0.001


@pytest.mark.parametrize("n", range(1, 13))
def test_pass_at_k_matches_closed_form(n):
    for c in range(n + 1):
        expected = [1 - Fraction(math.comb(n - c, k), math.comb(n, k)) for k in range(1, n + 1)]
        got = pass_at_k(n, c, range(1, n + 1))
        assert got == pytest.approx([float(e) for e in expected], abs=1e-12)


def test_pass_at_k_is_stable_for_large_n():
    ks = k_grid(10_000)
    for c in (0, 1, 7, 5_000, 10_000):
        values = pass_at_k(10_000, c, ks)
        assert np.all(np.isfinite(values)) and np.all((values >= 0) & (values <= 1))
        assert np.all(np.diff(values) >= -1e-15)
    assert pass_at_k(10_000, 1, [1])[0] == pytest.approx(1e-4, rel=1e-12)
    assert pass_at_k(10_000, 1, [10_000])[0] == 1.0


def test_weighted_maj_with_equal_weights_matches_maj():
    rng = np.random.default_rng(5)
    labels = rng.choice([-1, 0, 1, 2], size=48, p=[0.2, 0.35, 0.3, 0.15])
    ks = k_grid(48)
    c_r, others = class_counts(labels, 0)
    exact = np.array([maj_at_k_exact(c_r, others, 48, k) for k in ks])
    mean, se = vote_at_k_mc([labels], 0, ks, 3000, np.random.default_rng(6), weights=[np.full(48, 0.1)])
    assert np.all(np.abs(mean - exact) <= 4 * se + 1e-12)


def test_weighted_maj_at_n_is_the_weighted_vote():
    rng = np.random.default_rng(7)
    for _ in range(20):
        labels = rng.choice([-1, 0, 1, 2], size=15)
        weights = rng.random(15) * (rng.random(15) < 0.8)
        for correct in (0, 1):
            mean, se = vote_at_k_mc([labels], correct, [15], 3, np.random.default_rng(0), [weights])
            assert mean[0] == pytest.approx(vote_credit(labels, correct, weights)) and se[0] == 0


def test_weighted_ties_count_within_tolerance():
    labels = np.array([0, 1, 1])
    weights = np.array([0.3, 0.1, 0.2])  # 0.1 + 0.2 != 0.3 in floating point
    mean, _ = vote_at_k_mc([labels], 0, [3], 2, np.random.default_rng(0), [weights])
    assert mean[0] == pytest.approx(0.5)


def test_majority_vote():
    assert majority_vote(np.array([2, 2, 1, 1, -1, 3])) == (1, pytest.approx(2 / 5))  # tie: smallest id
    assert majority_vote(np.array([-1, -1])) == (-1, 0.0)
    assert majority_vote(np.array([0, 1, 1]), weights=np.array([3.0, 1.0, 1.0])) == (0, pytest.approx(0.6))
    assert majority_vote(np.array([0, 1]), weights=np.array([0.0, 0.0])) == (-1, 0.0)


def test_bootstrap_ci():
    rng = np.random.default_rng(8)
    values = rng.random((400, 3))
    low, high = bootstrap_ci(values, seed=1)
    assert np.all(low <= values.mean(axis=0)) and np.all(values.mean(axis=0) <= high)
    again = bootstrap_ci(values, seed=1)
    assert np.array_equal(low, again[0]) and np.array_equal(high, again[1])
    few_low, few_high = bootstrap_ci(values[:50], seed=1)
    assert np.all(high - low < few_high - few_low)


def make_problems(count: int, n: int, seed: int, weights: bool = False) -> list[Votes]:
    rng = np.random.default_rng(seed)
    problems = []
    for _ in range(count):
        labels = rng.choice([-1, 0, 1, 2, 3], size=n, p=[0.1, 0.4, 0.25, 0.15, 0.1])
        problems.append(Votes(labels, int(rng.integers(-1, 3)), rng.random(n) if weights else None))
    return problems


def test_scaling_curves_rows():
    problems = make_problems(30, 16, seed=9, weights=True)
    curves = scaling_curves(problems, seed=0)
    assert curves.ks == [1, 2, 4, 8, 16]
    assert [(r["method"], r["k"]) for r in curves.rows] == [(m, k) for m in ("maj", "pass", "weighted_maj") for k in curves.ks]
    for row in curves.rows:
        assert row["ci_low"] <= row["accuracy"] <= row["ci_high"]
        assert 0 <= row["stderr"] < 0.001
    by = {(r["method"], r["k"]): r for r in curves.rows}
    assert by[("maj", 1)]["accuracy"] == pytest.approx(by[("pass", 1)]["accuracy"])
    assert by[("pass", 16)]["accuracy"] >= by[("maj", 16)]["accuracy"]
    assert curves.per_problem["maj"].values.shape == (30, 5)
    again = scaling_curves(problems, seed=0)
    assert again.rows == curves.rows


def test_scaling_curves_validates_input():
    problems = make_problems(3, 8, seed=10) + make_problems(1, 4, seed=11)
    assert scaling_curves(problems).ks == [1, 2, 4]  # the grid of the smallest n
    with pytest.raises(ValueError, match="every k"):
        scaling_curves(problems, ks=[1, 8])
    with pytest.raises(ValueError, match="needs weights"):
        scaling_curves(problems, methods=("weighted_maj",))
    with pytest.raises(ValueError, match="unknown methods"):
        scaling_curves(problems, methods=("best",))
    with pytest.raises(ValueError, match="no problems"):
        scaling_curves([])


def read_back(figure, path):
    """The pixels of `figure` saved as a PNG at `path` (height, width, channels)."""
    import matplotlib.image

    return matplotlib.image.imread(save_figure(figure, path))


def test_curves_figure_draws_each_method_at_k_with_its_interval_and_the_greedy_line(tmp_path):
    curves = scaling_curves(make_problems(10, 8, seed=12, weights=True), top_percent=50)
    figure = curves_figure(curves.rows, "m / d / p", greedy=0.4)
    assert read_back(figure, tmp_path / "curves.png").shape[:2] == (540, 840)  # 7 x 4.5 inches at 120 dpi
    [ax] = figure.axes
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel(), ax.get_xscale()) == \
        ("m / d / p", "samples per problem (k)", "accuracy (%)", "log")
    methods = ["maj", "pass", "weighted_maj", "weighted_maj_top50"]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {f"{m}@k" for m in methods} | {"greedy"}
    for method in methods:
        rows = [r for r in curves.rows if r["method"] == method]
        assert list(lines[f"{method}@k"].get_xdata()) == curves.ks == [1, 2, 4, 8]
        assert list(lines[f"{method}@k"].get_ydata()) == pytest.approx([100 * r["accuracy"] for r in rows])
    assert list(lines["greedy"].get_ydata()) == [40.0, 40.0]
    assert len(ax.collections) == len(methods)  # one shaded interval per method
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [f"{m}@k" for m in methods] + ["greedy"]


def test_curves_figure_overlays_runs_with_a_greedy_line_each(tmp_path):
    rows = scaling_curves(make_problems(10, 8, seed=12), methods=("maj",)).rows
    runs = [{**r, "run": "a"} for r in rows] + [{**r, "run": "b", "accuracy": r["accuracy"] / 2} for r in rows]
    figure = curves_figure(runs, "two runs", greedy={"a": 0.4, "b": 0.2}, label_key=("run", "method"))
    assert read_back(figure, tmp_path / "runs.png").shape[:2] == (540, 840)
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    assert set(lines) == {"a / maj@k", "b / maj@k", "greedy / a", "greedy / b"}
    assert list(lines["b / maj@k"].get_ydata()) == pytest.approx([50 * r["accuracy"] for r in rows])
    assert list(lines["greedy / b"].get_ydata()) == [20.0, 20.0]


def test_the_tokens_plot_puts_each_k_at_k_samples_worth_of_tokens(tmp_path):
    rows = [r for r in scaling_curves(make_problems(10, 8, seed=12)).rows if r["method"] == "maj"]
    figure = tokens_figure(rows, 25.0, "t", greedy=(30.0, 0.4))
    assert read_back(figure, tmp_path / "tokens.png").shape[:2] == (540, 840)
    [ax] = figure.axes
    maj, greedy = ax.get_lines()
    assert maj.get_label() == "maj@k" and greedy.get_label() == "greedy"
    assert list(maj.get_xdata()) == [25.0 * r["k"] for r in rows] and list(greedy.get_xdata()) == [30.0]
    assert list(maj.get_ydata()) == pytest.approx([100 * r["accuracy"] for r in rows])
    assert list(greedy.get_ydata()) == [40.0]
    assert (ax.get_title(), ax.get_xlabel(), ax.get_xscale()) == ("t", "generated tokens per problem", "log")
