"""Stopping rules side by side on stored runs: each rule's threshold chosen on held-apart runs, then replayed on others.

    python -m benchmarks.bench_stopping --tune docs/results/gsm8k_train-cot-50x16/t0.5 ... --on NAME=RUN_DIR ...

For each rule family (`esc` windows, `beta`, `confident` and `eb` thresholds) the variant kept is the cheapest
(fewest samples per problem) whose accuracy, pooled over the `--tune` runs, stays within `--tolerance` points of
their full budget's vote: tuned on those runs only. Each `--on` run then gets a row per rule at that variant
(samples per problem, accuracy, the change against its full budget's vote with its paired 95% interval), rules
asked after every sample (`adaptive.min_samples=1`, `adaptive.batch=1`), 50 random orders per problem. `eb`'s
prior comes from the run's other half (analysis.adaptive.fitted). `--budgets` also replays the budget-fixed
allocator at those samples per problem against uniform maj@k, with the paired interval.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from analysis.adaptive import Schedule, budget_replay, replay, summarize, vote_scores
from analysis.stopping import RULES

VARIANTS = {  # rule -> the parameter swept and its values, cheapest first
    "esc": ("window", [2, 3, 4, 5, 6, 8]),
    "beta": ("threshold", [0.8, 0.85, 0.9, 0.95, 0.97, 0.99, 0.995]),
    "confident": ("threshold", [0.8, 0.85, 0.9, 0.95, 0.97, 0.99, 0.995]),
    "eb": ("threshold", [0.8, 0.85, 0.9, 0.95, 0.97, 0.99, 0.995]),
}
ORDERS, SEED = 50, 0


def votes_of(run_dir: str, scratch: Path) -> list[Any]:
    """A run's votes, aggregated as jobs.aggregate does (its saved answer settings), from a copy in `scratch`."""
    import shutil

    from jobs.aggregate import aggregate_run
    from storage.rundir import saved_config

    copy = scratch / str(abs(hash(run_dir)))
    if not copy.exists():
        shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("lease", "greedy"))
    answer = (saved_config(run_dir) or {}).get("answer") or {}
    return aggregate_run(str(copy), answer.get("format") or "auto", answer.get("confidence") or "mean").votes


def replayed(votes: list[Any], rule: str, values: list[Any], key: str) -> list[dict[str, Any]]:
    """The summary row of each variant of `rule` on one run."""
    rules = [(f"{rule}-{v}", RULES[rule], {key: v}) for v in values]
    return summarize(replay(votes, rules, Schedule(1, None, 1), ORDERS, SEED), SEED)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tune", nargs="+", required=True, help="run dirs the variants are chosen on")
    parser.add_argument("--on", nargs="+", required=True, help="NAME=RUN_DIR runs replayed at the chosen variants")
    parser.add_argument("--tolerance", type=float, default=0.5, help="points below the full budget's vote allowed")
    parser.add_argument("--budgets", type=float, nargs="*", default=[], help="samples per problem for budget mode")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-stopping-") as tmp:
        scratch = Path(tmp)
        tune = [votes_of(run, scratch) for run in args.tune]
        chosen = {}
        for rule, (key, values) in VARIANTS.items():
            rows = [replayed(v, rule, values, key) for v in tune]
            weights = np.array([len(v) for v in tune], float)
            ok = []
            for i, value in enumerate(values):
                delta = np.average([r[i]["delta"] for r in rows], weights=weights)
                used = np.average([r[i]["samples_per_problem"] for r in rows], weights=weights)
                if 100 * delta >= -args.tolerance:
                    ok.append((used, value))
            chosen[rule] = min(ok)[1] if ok else values[-1]
            print(f"tuned on {len(tune)} run(s): {rule} {key}={chosen[rule]}")
        for spec in args.on:
            name, run = spec.split("=", 1)
            votes = votes_of(run, scratch)
            n = len(votes[0].labels)
            print(f"\n{name} ({len(votes)} problems x {n} samples)")
            print("| rule (variant tuned apart) | samples/problem | accuracy | change vs full budget, points [paired 95% CI] |")
            print("|---|---|---|---|")
            for rule, (key, _) in VARIANTS.items():
                [s] = replayed(votes, rule, [chosen[rule]], key)
                print(f"| {s['rule']} | {s['samples_per_problem']:.2f} | {100 * s['accuracy']:.1f} | "
                      f"{100 * s['delta']:+.1f} [{100 * s['delta_low']:+.1f}, {100 * s['delta_high']:+.1f}] |")
            full = np.mean([vote_scores(v.labels[None, :], v.correct_class)[0, -1] for v in votes])
            print(f"| maj@{n} (every sample) | {n:.2f} | {100 * full:.1f} | |")
            for per_problem in args.budgets:
                b = budget_replay(votes, int(per_problem * len(votes)), 1, 1, ORDERS, SEED)
                print(f"budget {per_problem:g} per problem: allocator {100 * b['accuracy']:.1f}, uniform maj@"
                      f"{b['uniform_k']:.0f} {100 * b['uniform_accuracy']:.1f}, change {100 * b['delta']:+.1f} "
                      f"[{100 * b['delta_low']:+.1f}, {100 * b['delta_high']:+.1f}]")


if __name__ == "__main__":
    main()
