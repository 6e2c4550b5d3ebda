"""Replay of adaptive self-consistency on stored samples: how many samples a stopping rule would have
used per problem, and whether its final majority vote is right.

Per problem, each order of its n stored samples (the stored order, and `orders` seeded random
permutations) is read in rounds: the rule (analysis/stopping.py) is asked after `min_samples`
samples, then after every `batch` more, and sampling ends when it says stop or at `max_samples`
(default: n). The final vote is the plain majority of the samples used, scored as maj@k is: a tie
among t classes that includes the right one scores 1/t, no answer at all scores 0.

Budget-fixed mode (`budget_replay`): a total of B samples for the whole dataset goes, a batch at a
time, round the problems whose vote is not yet decided, against uniform maj@(B / problems) on the same orders.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from analysis.curves import Votes, bootstrap_ci
from analysis.stopping import FITS, Rule, beta_probability


@dataclass(frozen=True)
class Schedule:
    """When the rule is asked: after min_samples, then every batch samples, up to max_samples (None: n)."""

    min_samples: int
    max_samples: Optional[int]
    batch: int


def checkpoints(schedule: Schedule, n: int) -> np.ndarray:
    """The sample counts at which the rule is asked, the budget (max_samples, at most n) last."""
    budget = min(schedule.max_samples or n, n)
    first = min(schedule.min_samples, budget)
    return np.unique(np.r_[np.arange(first, budget, schedule.batch), budget])


def sample_orders(n: int, orders: int, rng: np.random.Generator) -> np.ndarray:
    """(orders + 1, n) sample indices: the stored order first, then `orders` random permutations."""
    return np.vstack([np.arange(n)[None, :], rng.permuted(np.tile(np.arange(n), (orders, 1)), axis=1)])


def vote_scores(labels: np.ndarray, right: int) -> np.ndarray:
    """Score of the majority vote of every prefix of each row of `labels` (rows, t): (rows, t + 1), column
    j the first j samples; ties among t classes holding the right one score 1/t."""
    classes = max(int(labels.max(initial=-1)) + 1, 1)
    onehot = (labels[..., None] == np.arange(classes)).astype(np.int64)
    counts = np.concatenate([np.zeros((len(labels), 1, classes), np.int64), onehot.cumsum(axis=1)], axis=1)
    top = counts.max(axis=2)
    tied = (counts == top[..., None]).sum(axis=2)
    if right < 0:
        return np.zeros(top.shape)
    return np.where((top > 0) & (counts[..., right] == top), 1.0 / tied, 0.0)


def replay_problem(problem: Votes, rule: Rule, params: dict[str, Any], schedule: Schedule,
                   order_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Samples used and final-vote score for each order (a row of sample indices) of one problem, and the
    full budget's vote score (the same on every order)."""
    n = len(problem.labels)
    asks = checkpoints(schedule, n)
    budget = int(asks[-1])
    labels = problem.labels[order_rows]
    weights = None if problem.weights is None else problem.weights[order_rows]
    used = np.empty(len(order_rows), np.int64)
    for row in range(len(order_rows)):
        used[row] = next((t for t in asks[:-1] if rule(labels[row, :t], None if weights is None else weights[row, :t],
                                                       budget=budget, **params)), budget)
    scores = vote_scores(labels[:, :budget], problem.correct_class)
    return used, scores[np.arange(len(order_rows)), used], float(scores[0, budget])


def fitted(rule: Rule, params: dict[str, Any], problems: Sequence[Votes],
           reference: Optional[Sequence[np.ndarray]]) -> Callable[[int], dict[str, Any]]:
    """A rule's parameters for problem i. A rule with a fit (stopping.FITS) gets its prior: fitted on `reference`
    (another run's answer labels, one array per problem) when given, else on the other half of `problems` (those
    of the other index parity), so that no problem's own samples shape the prior it is stopped by."""
    fit = FITS.get(rule)
    if fit is None:
        return lambda index: params
    if reference is not None:
        prior = fit(reference)
        return lambda index: {**params, "prior": prior}
    halves = [fit([p.labels for j, p in enumerate(problems) if j % 2 != parity]) for parity in (0, 1)]
    return lambda index: {**params, "prior": halves[index % 2]}


def replay(problems: Sequence[Votes], rules: Sequence[tuple[str, Rule, dict[str, Any]]], schedule: Schedule,
           orders: int, seed: int, reference: Optional[Sequence[np.ndarray]] = None) -> list[dict[str, Any]]:
    """One row per (rule, problem index): samples_used and correct averaged over `orders` random orders,
    the same on the stored order (samples_used_stored, correct_stored), the full budget's vote score
    (correct_full) and n. Every rule sees the same orders (seeded per problem), so differences between
    rules are paired. A rule with a prior gets it from `reference`, else from the other half (`fitted`)."""
    rows = []
    params_of = [fitted(rule, params, problems, reference) for _, rule, params in rules]
    for index, problem in enumerate(problems):
        n = len(problem.labels)
        order_rows = sample_orders(n, orders, np.random.default_rng([seed, index]))
        for (label, rule, _), params in zip(rules, params_of):
            used, correct, full = replay_problem(problem, rule, params(index), schedule, order_rows)
            rows.append({"rule": label, "problem": index, "samples_used": float(used[1:].mean()),
                         "correct": float(correct[1:].mean()), "samples_used_stored": int(used[0]),
                         "correct_stored": float(correct[0]), "correct_full": full, "n": n})
    return rows


def summarize(rows: Sequence[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """Per rule: accuracy and samples per problem (random orders and stored order), savings 1 - used / n,
    and the accuracy change against the full budget's vote (`delta`) with its paired bootstrap 95% interval
    over problems (`delta_low`, `delta_high`)."""
    out = []
    for label in dict.fromkeys(r["rule"] for r in rows):
        mine = [r for r in rows if r["rule"] == label]
        used = np.array([r["samples_used"] for r in mine])
        n = np.array([r["n"] for r in mine], dtype=float)
        change = np.array([[r["correct"] - r["correct_full"]] for r in mine])
        (low,), (high,) = bootstrap_ci(change, seed=seed)
        out.append({"rule": label, "accuracy": float(np.mean([r["correct"] for r in mine])),
                    "delta": float(change.mean()), "delta_low": float(low), "delta_high": float(high),
                    "samples_per_problem": float(used.mean()), "savings": float(1 - used.sum() / n.sum()),
                    "accuracy_stored": float(np.mean([r["correct_stored"] for r in mine])),
                    "samples_per_problem_stored": float(np.mean([r["samples_used_stored"] for r in mine]))})
    return out


DECIDED = 0.8  # budget mode: a vote is decided at Beta P(p1 > p2) > 0.8; chosen on held-apart runs (docs/adaptive.md)


def allocate(problems: Sequence[Votes], total: int, min_samples: int, batch: int, order_rows: Sequence[np.ndarray],
             order: int) -> np.ndarray:
    """Budget-fixed mode on one order (row `order` of each problem's order_rows): every problem gets min_samples,
    then `batch` more at a time go round the problems whose vote is not yet decided (Beta criterion P(p1 > p2) at
    most DECIDED), fewest samples first, the least decided first among equals; decided problems get more only once
    none is undecided. Ends when `total` samples are spent or every problem has all its samples. Returns the samples
    each problem got."""
    sizes = np.array([len(p.labels) for p in problems])
    used = np.minimum(min_samples, sizes)
    spent = int(used.sum())
    if spent > total:
        raise ValueError(f"adaptive.budget={total}: below adaptive.min_samples={min_samples} x {len(problems)} problems")
    labels = [p.labels[rows[order]] for p, rows in zip(problems, order_rows)]

    def turn(i: int) -> tuple[bool, int, float, int]:  # the smallest takes the next batch
        drawn = labels[i][: used[i]]
        votes = np.sort(np.bincount(drawn[drawn >= 0], minlength=2))[::-1]
        p = beta_probability(votes[0], votes[1])
        return p > DECIDED, int(used[i]), p, i

    heap = [turn(i) for i in range(len(problems)) if used[i] < sizes[i]]
    heapq.heapify(heap)
    while spent < total and heap:
        i = heapq.heappop(heap)[-1]
        more = min(batch, sizes[i] - used[i], total - spent)
        used[i] += more
        spent += more
        if used[i] < sizes[i]:
            heapq.heappush(heap, turn(i))
    return used


def budget_replay(problems: Sequence[Votes], total: int, min_samples: int, batch: int, orders: int,
                  seed: int) -> dict[str, float]:
    """Accuracy at a total budget of `total` samples, allocated by `allocate`, against the uniform maj@k with
    k = total // problems on the same orders (means over random orders, and the stored order), and the change
    (`delta`) with its paired bootstrap 95% interval over problems (`delta_low`, `delta_high`)."""
    order_rows = [sample_orders(len(p.labels), orders, np.random.default_rng([seed, i])) for i, p in enumerate(problems)]
    scores = [vote_scores(p.labels[rows], p.correct_class) for p, rows in zip(problems, order_rows)]
    k = np.minimum(total // len(problems), [len(p.labels) for p in problems])
    allocated, uniform = np.empty((orders + 1, len(problems))), np.empty((orders + 1, len(problems)))
    for order in range(orders + 1):
        used = allocate(problems, total, min_samples, batch, order_rows, order)
        allocated[order] = [s[order, u] for s, u in zip(scores, used)]
        uniform[order] = [s[order, kk] for s, kk in zip(scores, k)]
    change = (allocated[1:] - uniform[1:]).mean(axis=0)[:, None]  # per problem, over the random orders
    (low,), (high,) = bootstrap_ci(change, seed=seed)
    return {"budget": float(total), "samples_per_problem": total / len(problems), "uniform_k": float(total // len(problems)),
            "accuracy": float(allocated[1:].mean()), "uniform_accuracy": float(uniform[1:].mean()),
            "delta": float(change.mean()), "delta_low": float(low), "delta_high": float(high),
            "accuracy_stored": float(allocated[0].mean()), "uniform_accuracy_stored": float(uniform[0].mean())}


def budget_line(b: dict[str, float]) -> str:
    """One budget's result: the allocator against uniform maj@k, and the paired change."""
    return (f"budget {b['budget']:.0f} samples ({b['samples_per_problem']:.2f} per problem): undecided first "
            f"{100 * b['accuracy']:.1f}%, uniform maj@{b['uniform_k']:.0f} {100 * b['uniform_accuracy']:.1f}%, "
            f"change {100 * b['delta']:+.1f} points [paired 95% CI {100 * b['delta_low']:+.1f}, "
            f"{100 * b['delta_high']:+.1f}] (stored order: {100 * b['accuracy_stored']:.1f}% vs "
            f"{100 * b['uniform_accuracy_stored']:.1f}%)")


def rules_table(summary: list[dict[str, Any]], maj: list[dict[str, Any]]) -> str:
    """Per rule: accuracy and samples per problem (random orders, stored order), savings; maj@n last."""
    full = max(maj, key=lambda r: r["k"])
    lines = [f"{'adaptive rule':<20}{'accuracy':>10}{'samples':>10}{'savings':>10}{'stored acc':>12}{'stored smp':>12}"
             "  vs full budget [paired 95% CI]"]
    for s in summary:
        lines.append(f"{s['rule']:<20}{100 * s['accuracy']:>9.1f}%{s['samples_per_problem']:>10.2f}"
                     f"{100 * s['savings']:>9.1f}%{100 * s['accuracy_stored']:>11.1f}%{s['samples_per_problem_stored']:>12.2f}"
                     f"  {100 * s['delta']:+.1f} [{100 * s['delta_low']:+.1f}, {100 * s['delta_high']:+.1f}]")
    lines.append(f"{'maj@' + str(full['k']) + ' (full budget)':<20}{100 * full['accuracy']:>9.1f}%{full['k']:>10.2f}"
                 f"{0.0:>9.1f}%")
    return "\n".join(lines)
