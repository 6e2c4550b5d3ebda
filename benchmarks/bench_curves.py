"""Benchmark: maj@k and pass@k curves, with CIs, for 1,319 problems x 1,024 samples (target: under 10 s).

    python -m benchmarks.bench_curves [--problems 1319] [--samples 1024] [--seed 0] [--compare 200]

Synthetic answers, a mix like a real run's: most problems dominated by the right answer, some by a
wrong one, a quarter flat; Zipf-like tails of up to 200 distinct answers; 0-30% no answer. Prints the
total time of `scaling_curves`, then the time of each part (exact maj@k, estimated maj@k, pass@k,
CIs), the Monte Carlo standard error, and the exact path's time against the Monte Carlo path's on the
same problems, each path computing every maj@k value.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from analysis.curves import (
    MAX_EXACT_WORK,
    Votes,
    bootstrap_ci,
    class_counts,
    k_grid,
    maj_at_k_exact,
    n_permutations,
    pass_curve,
    vote_at_k_mc,
)
from analysis.methods import scaling_curves


def synthetic_problem(rng: np.random.Generator, n: int) -> Votes:
    """One problem's labels: 60% right-dominated, 15% wrong-dominated, 25% flat; Zipf tails."""
    kind = rng.choice(["right", "wrong", "flat"], p=[0.6, 0.15, 0.25])
    distinct = int(rng.integers(2, 201))
    ranks = np.arange(1, distinct + 1)
    if kind == "flat":
        probs = 1.0 / ranks ** rng.uniform(0.5, 1.2)
        right = int(rng.integers(0, min(4, distinct)))
    else:
        tail = 1.0 / ranks[:-1] ** rng.uniform(1.0, 2.0)
        top = rng.uniform(0.4, 0.98)
        probs = np.concatenate([[top], (1 - top) * tail / tail.sum()])
        right = 0 if kind == "right" else int(rng.choice([1, 2, 5, distinct]))  # distinct: nobody right
    no_answer = rng.uniform(0.0, 0.3)
    probs = np.concatenate([[no_answer], (1 - no_answer) * probs / probs.sum()])
    ids = np.concatenate([[-1], rng.permutation(distinct)])
    labels = ids[rng.choice(len(probs), size=n, p=probs)]
    correct = int(ids[1 + right]) if right < distinct else -1
    return Votes(labels.astype(np.int64), correct if (labels == correct).any() else -1)


def timed(fn, *args, **kwargs):
    """(result, seconds)."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def parts(problems: list[Votes], ks: list[int]) -> None:
    """Time maj_curve's two paths, pass@k and the CIs separately; print the Monte Carlo error."""
    counts = [class_counts(p.labels, p.correct_class) for p in problems]
    start = time.perf_counter()
    exact = np.array([[maj_at_k_exact(c_r, o, len(p.labels), k, MAX_EXACT_WORK) is not None for k in ks]
                      for (c_r, o), p in zip(counts, problems)])
    exact_s = time.perf_counter() - start
    todo = np.flatnonzero(~exact.all(axis=1))
    n_perm = n_permutations(len(todo), len(problems))
    start = time.perf_counter()
    for i in todo:
        ks_i = [k for k, e in zip(ks, exact[i]) if not e]
        vote_at_k_mc([problems[i].labels], problems[i].correct_class, ks_i, n_perm, np.random.default_rng(int(i)))
    mc_s = time.perf_counter() - start
    passes, pass_s = timed(pass_curve, problems, ks)
    _, ci_s = timed(lambda: [bootstrap_ci(passes.values, seed=0) for _ in range(2)])
    print(f"  exact maj@k   {exact_s:6.2f} s  {int(exact.sum())} of {exact.size} (problem, k) values exact")
    print(f"  estimated     {mc_s:6.2f} s  {len(todo)} problems, {n_perm} permutations each")
    print(f"  pass@k        {pass_s:6.2f} s")
    print(f"  CIs (2 x)     {ci_s:6.2f} s")


def compare_paths(problems: list[Votes], ks: list[int], n_perm: int) -> None:
    """Every maj@k value exactly, then every one estimated with n_perm permutations, on the same problems."""
    counts = [class_counts(p.labels, p.correct_class) for p in problems]
    _, exact_s = timed(lambda: [[maj_at_k_exact(c, o, len(p.labels), k) for k in ks] for (c, o), p in zip(counts, problems)])
    rngs = [np.random.default_rng(i) for i in range(len(problems))]
    _, mc_s = timed(lambda: [vote_at_k_mc([p.labels], p.correct_class, ks, n_perm, r) for p, r in zip(problems, rngs)])
    print(f"  {len(problems)} problems: exact {exact_s:.2f} s, Monte Carlo ({n_perm} permutations) {mc_s:.2f} s,"
          f" exact / Monte Carlo = {exact_s / mc_s:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=1319)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare", type=int, default=200, help="problems for the exact vs Monte Carlo timing")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    problems = [synthetic_problem(rng, args.samples) for _ in range(args.problems)]
    ks = k_grid(args.samples)
    print(f"{args.problems} problems x {args.samples} samples, k = {ks}")

    cpu_start = time.process_time()
    curves, total_s = timed(scaling_curves, problems, ks, methods=("maj", "pass"), seed=args.seed)
    cpu_s = time.process_time() - cpu_start
    maj_rows = [r for r in curves.rows if r["method"] == "maj"]
    worst = max(maj_rows, key=lambda r: r["stderr"])
    print(f"total (scaling_curves, maj@k + pass@k + CIs): {total_s:.2f} s wall, {cpu_s:.2f} s CPU  [target: under 10 s]")
    print(f"Monte Carlo standard error of maj@k, worst k: {100 * worst['stderr']:.4f} points"
          f" (k = {worst['k']}, {worst['n_estimated']} problems estimated) [target: under 0.1]")
    for row in maj_rows:
        print(f"  maj@{row['k']:<5d} {100 * row['accuracy']:6.2f}%  [{100 * row['ci_low']:.2f}, {100 * row['ci_high']:.2f}]"
              f"  estimated for {row['n_estimated']} problems")
    print("parts, timed separately:")
    parts(problems, ks)
    print("exact versus Monte Carlo path, side by side:")
    compare_paths(problems[: args.compare], ks, n_permutations(len(problems), len(problems)))


if __name__ == "__main__":
    main()
