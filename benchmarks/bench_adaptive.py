"""Synthetic run for replaying adaptive stopping rules (not a model's traces): problems x samples shards.

    python -m benchmarks.bench_adaptive --out DIR [--problems 200] [--samples 16] [--seed 0] [--mix default]
    python -m jobs.aggregate run_dir=DIR 'adaptive=[esc,beta,dirichlet,confident]' tracking.enabled=false

`--mix default`: each problem is easy (60%: right with probability 0.9), medium (25%: 0.55) or hard (15%: 0.2); 5%
of samples give no answer, the other wrong ones split over three wrong numbers. `--mix agreeing`, a run where most
problems' samples agree, as in released samples of strong models: 80% of problems right with a probability drawn
from U(0.97, 1), 10% from U(0.5, 0.9), 10% from U(0.05, 0.4). Every sample has token
logprobs, right ones a little more confident (token probabilities U(0.7, 0.95) against U(0.5, 0.85)), so
the confidence-weighted rule has weights to use. The numbers in docs/adaptive.md come from this run.
"""

from __future__ import annotations

import argparse

import numpy as np

from storage import rundir
from storage.traces import write_shard

MIXES = {  # kinds of problem: (share of problems, lowest and highest probability that a sample is right)
    "default": ((0.60, 0.90, 0.90), (0.25, 0.55, 0.55), (0.15, 0.20, 0.20)),
    "agreeing": ((0.80, 0.97, 1.0), (0.10, 0.5, 0.9), (0.10, 0.05, 0.4)),
}
NO_ANSWER = 0.05
TOKENS = 12


def write_run(out: str, problems: int, samples: int, seed: int, mix: str = "default") -> None:
    """Write the synthetic run's config and one shard per problem into `out`."""
    rng = np.random.default_rng(seed)
    config = {"model": {"name": "synthetic"}, "dataset": {"name": "synthetic"}, "prompt": {"name": "cot"},
              "sampling": {"n": samples, "temperature": 0.7}, "answer": {"format": "number"}}
    run_id = rundir.prepare(out, config)
    shares, lows, highs = zip(*MIXES[mix])
    for i in range(problems):
        kind = rng.choice(len(shares), p=shares)
        right = lows[kind] if lows[kind] == highs[kind] else rng.uniform(lows[kind], highs[kind]) * (1 - NO_ANSWER)
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
    parser.add_argument("--mix", choices=sorted(MIXES), default="default")
    args = parser.parse_args()
    write_run(args.out, args.problems, args.samples, args.seed, args.mix)
    print(f"wrote {args.problems} problems x {args.samples} samples to {args.out}")


if __name__ == "__main__":
    main()
