"""Benchmark: answer extraction and canonicalization over 1,319 x 1,024 texts, one core versus all.

    python -m benchmarks.bench_extract [--problems 1319] [--samples 1024] [--fmt gsm8k]

Synthetic chain-of-thought texts shaped like a small model's GSM8K samples (a few reasoning lines
with numbers, then "The answer is N.", a boxed answer, or nothing). Prints samples/s on one worker
and on every core, measured side by side in this run, and their ratio.
"""

from __future__ import annotations

import argparse
import os
import random
import time

from analysis.voting import extract_all

ENDINGS = ("The answer is {a}.", "So the total is ${a}.", "\\boxed{{{a}}}", "#### {a}", "{a} apples in all.", "")


def synthetic_texts(count: int, seed: int) -> list[str]:
    """`count` reasoning texts of 3-8 lines, each ending with one of several answer styles."""
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        lines = [f"Step {i + 1}: {rng.randint(2, 99)} + {rng.randint(2, 99)} = {rng.randint(4, 198)} cookies."
                 for i in range(rng.randint(3, 8))]
        answer = f"{rng.randint(1, 5000):,}" if rng.random() < 0.3 else str(rng.randint(1, 500))
        lines.append(rng.choice(ENDINGS).format(a=answer))
        texts.append("Let's think step by step.\n" + "\n".join(lines))
    return texts


def rate(texts: list[str], fmt: str, workers: int) -> float:
    """Samples per second extracting and canonicalizing every text on `workers` processes."""
    start = time.perf_counter()
    pairs = extract_all(texts, fmt, workers)
    elapsed = time.perf_counter() - start
    assert len(pairs) == len(texts)
    return len(texts) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=1319)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--fmt", default="gsm8k")
    args = parser.parse_args()
    texts = synthetic_texts(args.problems * args.samples, seed=0)
    cores = os.cpu_count() or 1
    one = rate(texts, args.fmt, 1)
    every = rate(texts, args.fmt, cores)
    print(f"texts: {len(texts):,} ({args.problems} problems x {args.samples} samples), format {args.fmt}")
    print(f"1 worker:   {one:,.0f} samples/s ({len(texts) / one:.1f} s)")
    print(f"{cores} workers:  {every:,.0f} samples/s ({len(texts) / every:.1f} s)")
    print(f"speed-up:   {every / one:.2f}x")


if __name__ == "__main__":
    main()
