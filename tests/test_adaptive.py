"""Adaptive self-consistency: each stopping rule stops where its formula says; replay matches brute force."""

import re
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient
from scipy import integrate

from analysis.adaptive import Schedule, allocate, budget_replay, replay, sample_orders, summarize
from analysis.curves import Votes
from analysis.stopping import RULES, beta_probability, variants
from jobs.cli import compose
from tests.test_mlflow_server import run_module, synthetic_run

BIG = 1000  # a budget far away: curtailment never triggers


def first_stop(rule: str, labels, weights=None, budget: int = BIG, **params) -> int | None:
    """The first number of samples after which `rule` says stop (asked after every sample), or None."""
    labels = np.asarray(labels)
    w = None if weights is None else np.asarray(weights, dtype=float)
    return next((t for t in range(1, len(labels) + 1)
                 if RULES[rule](labels[:t], None if w is None else w[:t], budget=budget, **params)), None)


def test_esc_stops_only_at_the_end_of_a_window_whose_answers_all_agree():
    # windows of 3: (0,1,0) disagree; (0,0,0) agree -> stop after 6, not at 5 where the last 3 already agree
    assert first_stop("esc", [0, 1, 0, 0, 0, 0, 1, 1], window=3) == 6
    assert first_stop("esc", [0, 0, -1, 0, 0, 0], window=3) == 6  # a no-answer sample breaks agreement
    assert first_stop("esc", [-1, -1, -1, 1, 2, 1], window=3) is None  # no-answers agree with nothing


def test_beta_stops_where_the_closed_form_posterior_first_exceeds_the_threshold():
    # b = 0: P = 1 - 2^-(a+1): 0.9375 at a = 3, 0.96875 at a = 4 -> stop after 4 samples at threshold 0.95
    assert beta_probability(4, 0) == pytest.approx(1 - 2**-5)
    assert first_stop("beta", [0] * 8, threshold=0.95) == 4
    # b = 1: P = 1 - (a + 3) / 2^(a + 2): a = 5 gives 0.9375, a = 6 gives 0.9648 -> stop after 7 samples
    assert beta_probability(6, 1) == pytest.approx(1 - 9 / 256) == pytest.approx(quad_probability(6, 1))
    assert first_stop("beta", [0, 1, 0, 0, 0, 0, 0, 0], threshold=0.95) == 7
    # a third class does not count: only the top two; no-answer samples never vote
    assert first_stop("beta", [2, 1, 0, 0, 0, 0, 0, 0, 0], threshold=0.95) == 8  # a = 6, b = 1 (not 2) after 8
    assert first_stop("beta", [-1, -1, 0, 0, 0, 0], threshold=0.95) == 6
    assert first_stop("beta", [-1] * 6, threshold=0.5) is None


def quad_probability(a: float, b: float) -> float:
    """Adaptive-Consistency's Beta criterion as its reference code integrates it: P(p1 > p2 | a, b)."""
    f = lambda x: x**a * (1 - x) ** b
    return integrate.quad(f, 0.5, 1)[0] / integrate.quad(f, 0, 1)[0]


def dirichlet_exact(alpha: tuple[float, float, float]) -> float:
    """P(p0 > p1 and p0 > p2) under Dirichlet(alpha), by numerical integration of the density."""
    from scipy.special import gammaln

    norm = np.exp(gammaln(sum(alpha)) - sum(gammaln(a) for a in alpha))
    density = lambda p1, p0: norm * p0 ** (alpha[0] - 1) * p1 ** (alpha[1] - 1) * (1 - p0 - p1) ** (alpha[2] - 1)
    value, _ = integrate.dblquad(density, 1 / 3, 1, lambda p0: max(0.0, 1 - 2 * p0), lambda p0: min(p0, 1 - p0))
    return value


def test_dirichlet_stops_where_the_exact_posterior_probability_first_exceeds_the_threshold():
    params = {"threshold": 0.95, "draws": 4096, "seed": 0}
    assert first_stop("dirichlet", [0] * 8, **params) == 4  # one class seen: 1 - 2^-(a+1), as beta
    # leader a, one runner-up vote, the unseen class: Dirichlet(a + 1, 2, 1). With the threshold halfway
    # between the exact probabilities at a = 4 and a = 5, the rule must stop at a = 5, after 6 samples
    low, high = dirichlet_exact((5, 2, 1)), dirichlet_exact((6, 2, 1))
    threshold = (low + high) / 2
    assert (high - low) / 2 > 4 * np.sqrt(threshold * (1 - threshold) / 4096)  # 4 Monte Carlo standard errors
    assert first_stop("dirichlet", [1] + [0] * 12, **{**params, "threshold": threshold}) == 6


def test_confident_stops_when_the_budget_cannot_change_the_vote_or_on_weighted_votes():
    # budget 5: after 3 agreeing samples the lead 3 exceeds the 2 samples left; the Beta part alone needs 4
    assert first_stop("confident", [0] * 5, budget=5, threshold=0.95) == 3
    assert first_stop("confident", [0] * 5, threshold=0.95) == 4
    # weights [1, 3, 3, 1] scaled to mean 1 over the samples so far: (a, b) = (1, 0), (1.5, 0.5), (18/7, 3/7)
    # give P = 0.75, 0.712, 0.857 by the paper's integral -> stop after 3 at threshold 0.8; unweighted (2, 1)
    # gives 1 - 5/16 = 0.6875 there, and (2, 2) gives 0.5 after 4: it never stops
    assert [round(quad_probability(a, b), 3) for a, b in ((1, 0), (1.5, 0.5), (18 / 7, 3 / 7))] == [0.75, 0.712, 0.857]
    assert first_stop("confident", [1, 0, 0, 1], [1, 3, 3, 1], threshold=0.8) == 3
    assert first_stop("confident", [1, 0, 0, 1], None, threshold=0.8) is None
    assert first_stop("confident", [-1] * 6, budget=6, threshold=0.5) is None  # nothing answered: go on


def test_variants_expand_list_valued_parameters_and_name_an_unknown_rule():
    found = variants({"esc": {"window": 4}, "beta": {"threshold": [0.9, 0.99]}})
    assert [(label, params) for label, _, params in found] == [
        ("esc", {"window": 4}), ("beta-0.9", {"threshold": 0.9}), ("beta-0.99", {"threshold": 0.99})]
    with pytest.raises(ValueError, match="adaptive.rules.nope"):
        variants({"nope": {}})
    with pytest.raises(ValueError, match=r"adaptive.rules.beta: .*thresh.*\['threshold'\]"):
        variants({"beta": {"thresh": 0.9}})
    with pytest.raises(ValueError, match="adaptive.rules.dirichlet: .*draws"):
        variants({"dirichlet": {"threshold": 0.9}})


def brute_force(problem: Votes, order: np.ndarray, rule, params, schedule: Schedule) -> tuple[int, float]:
    """Samples used and score on one order, sample by sample as an online run would."""
    n = len(problem.labels)
    budget = min(schedule.max_samples or n, n)
    labels = problem.labels[order]
    weights = None if problem.weights is None else problem.weights[order]
    t = min(schedule.min_samples, budget)
    while t < budget and not rule(labels[:t], None if weights is None else weights[:t], budget=budget, **params):
        t = min(t + schedule.batch, budget)
    votes = Counter(int(x) for x in labels[:t] if x >= 0)
    if not votes:
        return t, 0.0
    top = max(votes.values())
    winners = [c for c, v in votes.items() if v == top]
    return t, (1 / len(winners) if problem.correct_class in winners else 0.0)


def test_replay_equals_a_brute_force_loop_over_the_same_orders():
    rng = np.random.default_rng(5)
    problems = [Votes(rng.integers(-1, 3, size=n), int(rng.integers(-1, 3)), rng.random(n) if n % 2 else None)
                for n in (6, 9, 12, 12)]
    rules = variants({"esc": {"window": 3}, "beta": {"threshold": [0.6, 0.9]}, "confident": {"threshold": 0.7},
                      "dirichlet": {"threshold": 0.8, "draws": 512, "seed": 1}})
    for schedule in (Schedule(1, None, 1), Schedule(2, 10, 3)):
        rows = replay(problems, rules, schedule, orders=7, seed=3)
        assert len(rows) == len(problems) * len(rules)
        for row in rows:
            problem = problems[row["problem"]]
            _, rule, params = next(r for r in rules if r[0] == row["rule"])
            n = len(problem.labels)
            orders = np.vstack([np.arange(n), np.random.default_rng([3, row["problem"]]).permuted(
                np.tile(np.arange(n), (7, 1)), axis=1)])
            results = [brute_force(problem, order, rule, params, schedule) for order in orders]
            assert row["samples_used_stored"] == results[0][0] and row["correct_stored"] == results[0][1]
            assert row["samples_used"] == pytest.approx(np.mean([u for u, _ in results[1:]]))
            assert row["correct"] == pytest.approx(np.mean([c for _, c in results[1:]]))
            assert row["correct_full"] == brute_force(problem, np.arange(n), lambda *a, **k: False, {}, schedule)[1]
    summary = summarize(rows)
    beta = next(s for s in summary if s["rule"] == "beta-0.9")
    mine = [r for r in rows if r["rule"] == "beta-0.9"]
    assert beta["savings"] == pytest.approx(1 - sum(r["samples_used"] for r in mine) / sum(r["n"] for r in mine))
    change = [r["correct"] - r["correct_full"] for r in mine]
    assert beta["delta"] == pytest.approx(np.mean(change))
    assert beta["delta_low"] <= beta["delta"] <= beta["delta_high"] and beta["delta_low"] < beta["delta_high"]


def test_a_fixed_budget_goes_round_the_undecided_problems():
    problems = [Votes(np.zeros(8, np.int64), 0), Votes(np.array([0, 1] * 4), 1)]
    rows = [sample_orders(8, 50, np.random.default_rng([0, i])) for i in range(2)]
    # stored order, 1 each (P(p1 > p2) 0.75: undecided), then p0 (the first of equals) -> 2 agreeing, 0.875 > 0.8:
    # decided; every later sample goes to p1 ([0,1] 0.5, [0,1,0] 0.6875, ...), which ends with 6
    assert allocate(problems, 8, 1, 1, rows, 0).tolist() == [2, 6]
    # a problem whose answers all differ never gets decided, but takes only its turn: p2 gets its share
    spread = [problems[0], Votes(np.arange(8), 0), Votes(np.array([1, 0] * 4), 1)]
    assert allocate(spread, 9, 1, 1, rows + rows[:1], 0).tolist() == [2, 4, 3]  # least decided first: [2, 6, 1]
    assert allocate(problems, 100, 1, 3, rows, 0).tolist() == [8, 8]  # more budget than samples: all of them
    result = budget_replay(problems, 8, 1, 1, orders=50, seed=0)
    assert result["uniform_k"] == 4 and result["accuracy_stored"] == 0.75  # p0 right, p1 a 3-3 tie scores 1/2
    # uniform maj@4 on the random orders: p0 always 1; p1 scores 1 with three 1s of four, 1/2 on a 2-2 tie, else 0
    p1 = [(lambda c: 1.0 if c > 2 else 0.5 if c == 2 else 0.0)(int((problems[1].labels[r[:4]] == 1).sum())) for r in rows[1][1:]]
    assert result["uniform_accuracy"] == pytest.approx((1 + np.mean(p1)) / 2)
    assert result["delta"] == pytest.approx(result["accuracy"] - result["uniform_accuracy"])  # paired, per problem
    assert result["delta_low"] <= result["delta"] <= result["delta_high"]
    with pytest.raises(ValueError, match="adaptive.budget=3: below adaptive.min_samples=2"):
        budget_replay(problems, 3, 2, 1, orders=50, seed=0)


def test_adaptive_defaults_to_none_and_a_list_of_rules_composes():
    assert compose("run_dir=x", config_name="aggregate").adaptive.rules == {}
    cfg = compose("run_dir=x", "adaptive=[esc,beta]", config_name="aggregate")
    assert set(cfg.adaptive.rules) == {"esc", "beta"} and cfg.adaptive.max_samples is None


def test_aggregate_replays_rules_writes_adaptive_parquet_and_logs_metrics(tmp_path):
    run_dir, uri = str(tmp_path / "run"), f"sqlite:///{tmp_path}/mlflow.db"
    synthetic_run(run_dir, n=8)  # p0: 8 x right; p1: never right, 8 and 9 alternate; p2: 4 right then 8/9
    done = run_module("jobs.aggregate", f"run_dir={run_dir}", "adaptive=[esc,beta]", "adaptive.rules.esc.window=4",
                      "adaptive.budget=[12,16]", f"tracking.uri={uri}", "tracking.experiment=adaptive")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = pq.read_table(tmp_path / "run" / "adaptive.parquet").to_pylist()
    assert {k for k in rows[0]} >= {"rule", "problem_id", "samples_used", "correct", "n"}
    by = {(r["rule"], r["problem_id"]): r for r in rows}
    assert len(by) == 6 and all(r["n"] == 8 for r in rows)
    assert by["beta", "p0"]["samples_used"] == 4 and by["beta", "p0"]["correct"] == 1  # 4 agreeing: P = 0.969
    assert by["esc", "p0"]["samples_used"] == 4 and by["esc", "p1"]["correct"] == 0
    assert "adaptive rule" in done.stdout and "maj@8 (full budget)" in done.stdout
    assert (tmp_path / "run" / "adaptive.png").stat().st_size > 0

    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("adaptive").experiment_id])
    beta = [r for r in rows if r["rule"] == "beta"]
    assert run.data.metrics["adaptive/beta/samples_per_problem"] == pytest.approx(np.mean([r["samples_used"] for r in beta]))
    assert run.data.metrics["adaptive/beta/accuracy"] == pytest.approx(np.mean([r["correct"] for r in beta]))
    assert run.data.metrics["adaptive/esc/savings"] == pytest.approx(
        1 - np.mean([r["samples_used"] for r in rows if r["rule"] == "esc"]) / 8)
    assert "adaptive.png" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "budget 12 samples (4.00 per problem)" in done.stdout and "uniform maj@4" in done.stdout
    assert "budget 16 samples (5.33 per problem)" in done.stdout and "paired 95% CI" in done.stdout
    for budget in (12, 16):
        assert 0 <= run.data.metrics[f"adaptive/budget{budget}/accuracy"] <= 1
        assert f"adaptive/budget{budget}/delta" in run.data.metrics


def test_aggregate_names_a_budget_above_the_stored_samples(tmp_path):
    synthetic_run(str(tmp_path / "run"), n=4)
    done = run_module("jobs.aggregate", f"run_dir={tmp_path}/run", "adaptive=beta", "adaptive.max_samples=9",
                      "tracking.enabled=false")
    assert done.returncode == 2 and "adaptive.max_samples=9: problem p0 has only 4 stored samples" in done.stderr
    assert not (tmp_path / "run" / "adaptive.parquet").exists()


def test_vote_gain_is_what_enumerating_the_samples_left_gives():
    from itertools import product

    from analysis.stopping import SharePrior, vote_gain

    prior = SharePrior((0.6, 0.9), (0.3, 0.7))
    for a, b, left in ((2, 0, 3), (2, 1, 4), (1, 1, 2), (3, 0, 2), (1, 0, 0)):
        right_now = right_later = total = 0.0
        for share, weight in zip(prior.shares, prior.weights):
            for leader_likelier in (True, False):  # which of the two answers has share θ
                p = share if leader_likelier else 1 - share  # the leader's share
                mass = weight * p**a * (1 - p) ** b
                total += mass
                right_now += mass * leader_likelier
                for draws in product((0, 1), repeat=left):  # 1: a vote for the leader
                    chance = np.prod([p if d else 1 - p for d in draws])
                    ahead = (a + sum(draws)) - (b + left - sum(draws))  # the leader's final lead
                    picked = (ahead > 0) == leader_likelier if ahead else 0.5
                    right_later += mass * chance * picked
        assert vote_gain(a, b, left, prior) == pytest.approx((right_later - right_now) / total, abs=1e-12)


def test_aggregate_names_a_prior_run_without_traces_and_a_bad_budget(tmp_path):
    synthetic_run(str(tmp_path / "run"), n=4)
    for key, message in ((f"adaptive.prior_run={tmp_path}/nowhere", "adaptive.prior_run='{}/nowhere': holds no traces/"),
                         ("adaptive.budget=[8,0]", "adaptive.budget=[8, 0]: must be an integer >= 1, a list of them")):
        done = run_module("jobs.aggregate", f"run_dir={tmp_path}/run", "adaptive=eb", key, "tracking.enabled=false")
        assert done.returncode == 2 and message.format(tmp_path) in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "run" / "adaptive.parquet").exists()


def test_eb_learns_from_the_run_how_much_agreement_is_enough():
    from analysis.stopping import SharePrior, fit_share_prior, share_probability

    even = SharePrior(tuple(np.linspace(0.5005, 0.9995, 1000)), tuple(np.full(1000, 1e-3)))
    for a, b in ((3, 0), (4, 1), (6, 2), (2, 2)):
        assert share_probability(a, b, even) == pytest.approx(beta_probability(a, b), abs=1e-3)
    rng = np.random.default_rng(0)  # 70% of problems agree 97.5% of the time, 30% split 60/40
    runs = [rng.random(40) < (0.975 if i % 10 < 7 else 0.6) for i in range(300)]
    agreeing = fit_share_prior([np.where(run, 0, 1) for run in runs])
    mass = lambda low, high: sum(w for s, w in zip(agreeing.shares, agreeing.weights) if low <= s <= high)
    assert 0.62 < mass(0.9, 1) < 0.75 and 0.2 < mass(0.55, 0.7) < 0.35  # the two kinds, near their proportions
    split = fit_share_prior([np.where(run, 0, 1) for run in runs[7::10]])  # a run of split problems only
    # where most problems agree, 3 agreeing samples are enough; where all split, 3 agreeing are not
    assert first_stop("eb", [0] * 40, budget=40, loss=0.02, prior=agreeing) == 3
    assert first_stop("eb", [0] * 40, budget=40, loss=0.02, prior=split) == 5
    assert first_stop("beta", [0] * 40, threshold=0.95) == 4  # the uniform prior's answer, whatever the run
    assert first_stop("eb", [0, 0, 1], budget=3, loss=1e-9, prior=agreeing) == 2  # 2 > 0 + 1 left: decided
    assert first_stop("eb", [-1, -1, -1], budget=40, loss=0.5, prior=agreeing) is None  # nothing answered: go on


def test_a_fitted_rule_s_replay_prior_comes_from_the_other_half_of_the_problems_only():
    from analysis.adaptive import fitted
    from analysis.stopping import RULES, fit_share_prior

    problems = [Votes(np.array([0] * 8 if i % 2 else [0, 1] * 4), 0) for i in range(6)]
    params = fitted(RULES["eb"], {"loss": 0.01}, problems, None)
    assert params(0)["prior"] == fit_share_prior([p.labels for p in problems[1::2]])  # the odd ones: all agree
    assert params(1)["prior"] == fit_share_prior([p.labels for p in problems[0::2]])  # the even ones: split
    reference = [np.array([0, 1, 2, 0])]
    assert fitted(RULES["eb"], {}, problems, reference)(3)["prior"] == fit_share_prior(reference)
    assert fitted(RULES["beta"], {"threshold": 0.9}, problems, None)(0) == {"threshold": 0.9}


def test_bench_stopping_tunes_each_rule_on_one_run_and_reports_it_on_another(tmp_path):
    from benchmarks.bench_adaptive import write_run

    write_run(str(tmp_path / "tune"), 40, 12, seed=1, mix="agreeing")
    write_run(str(tmp_path / "eval"), 40, 12, seed=0, mix="agreeing")
    done = run_module("benchmarks.bench_stopping", "--tune", str(tmp_path / "tune"), "--on", f"eval={tmp_path}/eval",
                      "--budgets", "4")
    assert done.returncode == 0, done.stderr[-3000:]
    tuned = dict(re.findall(r"confidences: (\w+) \w+=([\d.]+) ", done.stdout))
    assert set(tuned) == {"esc", "beta", "confident", "eb"}
    rows = re.findall(r"^\| (\w+)-([\d.]+) \| ([\d.]+) \| ", done.stdout, flags=re.M)
    assert {(rule, value) for rule, value, _ in rows} == set(tuned.items())  # each replayed at its tuned variant
    assert all(0 < float(used) <= 12 for _, _, used in rows)
    assert re.search(r"^budget 4 per problem: allocator [\d.]+, uniform maj@4 [\d.]+, change [+-]", done.stdout, re.M)
