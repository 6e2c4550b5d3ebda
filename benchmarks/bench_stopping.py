"""Stopping rules side by side on stored runs: each rule's threshold chosen on held-apart runs, then replayed on others.

    python -m benchmarks.bench_stopping --tune docs/results/gsm8k_train-cot-50x16/t0.5 ... --on NAME=RUN_DIR ...

For each rule family (`esc` windows, `beta` and `confident` thresholds, `eb` losses) the variant kept is the cheapest
(fewest samples per problem, on average over the runs) whose accuracy stays within `--tolerance` points of the full
budget's vote on every `--tune` run, each replayed as stored and with its confidences dropped: tuned on those runs
only. Each
`--on` run then gets a row per rule at that variant (samples per problem, accuracy, the change against its full
budget's vote with its paired 95% interval), rules asked after every sample (`adaptive.min_samples=1`,
`adaptive.batch=1`), 50 random orders per problem. `eb`'s prior comes from the run's other half
(analysis.adaptive.fitted). `--budgets` also replays the budget-fixed allocator at those samples per problem against
uniform maj@k, with the paired interval; `--sweep` prints every variant on each `--on` run as well.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from analysis.adaptive import Schedule, budget_replay, replay, summarize, vote_scores
from analysis.curves import Votes
from analysis.stopping import RULES
from jobs.aggregate import aggregate_run
from storage.rundir import saved_config

VARIANTS = {  # rule -> the parameter swept and its values
    "esc": ("window", [2, 3, 4, 5, 6, 8]),
    "beta": ("threshold", [0.8, 0.85, 0.9, 0.95, 0.97, 0.99, 0.995]),
    "confident": ("threshold", [0.8, 0.85, 0.9, 0.95, 0.97, 0.99, 0.995]),
    "eb": ("loss", [0.05, 0.02, 0.01, 0.005, 0.002, 0.001]),
}
ORDERS, SEED = 50, 0


def votes_of(run_dir: str, scratch: Path) -> list[Votes]:
    """A run's votes, aggregated as jobs.aggregate does (its saved answer settings), from a copy in `scratch`."""
    copy = scratch / str(abs(hash(run_dir)))
    if not copy.exists():
        shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("lease", "greedy"))
    answer = (saved_config(run_dir) or {}).get("answer") or {}
    return aggregate_run(str(copy), answer.get("format") or "auto", answer.get("confidence") or "mean").votes


def replayed(votes: list[Votes], rule: str, values: list[Any], key: str) -> list[dict[str, Any]]:
    """The summary row of each variant of `rule` on one run."""
    rules = [(f"{rule}-{v}", RULES[rule], {key: v}) for v in values]
    return summarize(replay(votes, rules, Schedule(1, None, 1), ORDERS, SEED), SEED)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tune", nargs="+", required=True, help="run dirs the variants are chosen on")
    parser.add_argument("--on", nargs="+", required=True, help="NAME=RUN_DIR runs replayed at the chosen variants")
    parser.add_argument("--tolerance", type=float, default=0.5, help="points below the full budget's vote allowed")
    parser.add_argument("--sweep", action="store_true", help="also print every variant on each --on run")
    parser.add_argument("--budgets", type=float, nargs="*", default=[], help="samples per problem for budget mode")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-stopping-") as tmp:
        scratch = Path(tmp)
        # each tuning run twice, as stored and with its confidences dropped: a default must hold for runs without
        # logprobs (an import, a server without them) as well as for runs with them
        stored = [votes_of(run, scratch) for run in args.tune]
        tune = stored + [[dataclasses.replace(p, weights=None) for p in votes] for votes in stored]
        chosen = {}
        for rule, (key, values) in VARIANTS.items():
            rows = [replayed(v, rule, values, key) for v in tune]
            ok = [(np.mean([r[i]["samples_per_problem"] for r in rows]), value) for i, value in enumerate(values)
                  if min(100 * r[i]["delta"] for r in rows) >= -args.tolerance]
            chosen[rule] = min(ok)[1] if ok else values[-1]
            i = values.index(chosen[rule])
            print(f"tuned on {len(stored)} run(s), with and without confidences: {rule} {key}={chosen[rule]} (there: "
                  f"{np.mean([r[i]['samples_per_problem'] for r in rows]):.2f} samples per problem on average, "
                  f"worst change {min(100 * r[i]['delta'] for r in rows):+.2f} points)")
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
            if args.sweep:
                print("\nevery variant (the frontier: compare samples/problem at equal change)")
                for rule, (key, values) in VARIANTS.items():
                    for s in replayed(votes, rule, values, key):
                        print(f"| {s['rule']} | {s['samples_per_problem']:.2f} | {100 * s['accuracy']:.1f} | "
                              f"{100 * s['delta']:+.1f} [{100 * s['delta_low']:+.1f}, {100 * s['delta_high']:+.1f}] |")
            for per_problem in args.budgets:
                b = budget_replay(votes, int(per_problem * len(votes)), 1, 1, ORDERS, SEED)
                print(f"budget {per_problem:g} per problem: allocator {100 * b['accuracy']:.1f}, uniform maj@"
                      f"{b['uniform_k']:.0f} {100 * b['uniform_accuracy']:.1f}, change {100 * b['delta']:+.1f} "
                      f"[{100 * b['delta_low']:+.1f}, {100 * b['delta_high']:+.1f}]")


if __name__ == "__main__":
    main()
