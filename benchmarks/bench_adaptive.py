"""Synthetic run for replaying adaptive stopping rules (not a model's traces): problems x samples shards.

    python -m benchmarks.bench_adaptive --out DIR [--problems 200] [--samples 16] [--seed 0]
    python -m jobs.aggregate run_dir=DIR 'adaptive=[esc,beta,dirichlet,confident]' tracking.enabled=false

Each problem is easy (60%: right with probability 0.9), medium (25%: 0.55) or hard (15%: 0.2); 5% of
samples give no answer, the other wrong ones split over three wrong numbers. Every sample has token
logprobs, right ones a little more confident (token probabilities U(0.7, 0.95) against U(0.5, 0.85)), so
the confidence-weighted rule has weights to use. The numbers in docs/adaptive.md come from this run.
"""

from __future__ import annotations

import argparse

import numpy as np

from storage import rundir
from storage.traces import write_shard

KINDS = ((0.60, 0.90), (0.25, 0.55), (0.15, 0.20))  # (share of problems, probability a sample is right)
NO_ANSWER = 0.05
TOKENS = 12


def write_run(out: str, problems: int, samples: int, seed: int) -> None:
    """Write the synthetic run's config and one shard per problem into `out`."""
    rng = np.random.default_rng(seed)
    config = {"model": {"name": "synthetic"}, "dataset": {"name": "synthetic"}, "prompt": {"name": "cot"},
              "sampling": {"n": samples, "temperature": 0.7}, "answer": {"format": "number"}}
    run_id = rundir.prepare(out, config)
    shares, rights = zip(*KINDS)
    for i in range(problems):
        right = rights[rng.choice(len(KINDS), p=shares)]
        wrong = rng.dirichlet(np.ones(3)) * (1 - right - NO_ANSWER)
        outcome = rng.choice(5, size=samples, p=[right, NO_ANSWER, *wrong])  # 0 right, 1 none, 2-4 wrong
        gold = 100 + i
        rows = []
        for j, o in enumerate(outcome):
            text = "I am not sure." if o == 1 else f"Step by step. The answer is {gold if o == 0 else gold + o - 1}."
            low, high = (0.7, 0.95) if o == 0 else (0.5, 0.85)
            rows.append({"run_id": run_id, "problem_id": f"q{i:04d}", "sample_idx": j, "gold": str(gold),
                         "text": text, "num_tokens": TOKENS,
                         "token_logprobs": np.log(rng.uniform(low, high, TOKENS)).tolist()})
        write_shard(rows, out, f"part-q{i:04d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_run(args.out, args.problems, args.samples, args.seed)
    print(f"wrote {args.problems} problems x {args.samples} samples to {args.out}")


if __name__ == "__main__":
    main()
