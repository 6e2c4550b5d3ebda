"""Benchmark: reading a run held in many small shards, and after compaction, side by side.

    python -m benchmarks.bench_shards                                  # 1M samples: 1,000 x 1,000 and 10,000 x 100
    python -m benchmarks.bench_shards --samples 100000 --shard-rows 100 1000

Replicas write a shard every `cluster.flush_s` seconds, so a long run holds many. Per layout it writes
`samples` trace rows (1,000 problems, CoT-like texts of about 190 bytes, the write_shard path), then times
the three reads a run gets: the resume scan (`storage.traces.done_samples`: every shard read whole), an
aggregation's read (`read_columns` of problem_id, sample_idx, text, sorted) and a plain `pyarrow.dataset`
count of the traces folder; then `storage.compaction.compact` and the same three reads again. It also
prints the write cost per shard, from which `cluster.flush_rows` and `flush_s` are chosen
(docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Callable

import pyarrow.dataset as ds

from storage.compaction import compact
from storage.traces import done_samples, read_columns, traces_dir, write_shard

PROBLEMS = 1000


def rows(start: int, count: int, n: int) -> list[dict]:
    """Trace rows `start` .. `start + count` of a run of PROBLEMS problems x n samples."""
    out = []
    for i in range(start, start + count):
        problem, idx = divmod(i, n)
        out.append({"run_id": "bench", "model": "m", "prompt": "cot", "decoding": "sample",
                    "problem_id": f"p{problem:05d}", "question": f"How many apples? ({problem})", "gold": str(problem),
                    "sample_idx": idx, "seed": i, "temperature": 0.7, "top_p": 0.95,
                    "text": f"Step 1: {problem} apples plus {idx} more make {problem + idx}. Adding the rest gives the "
                            f"total. The answer is {problem + idx % 3}.", "num_tokens": 48, "prompt_tokens": 30,
                    "finish_reason": "stop", "replica": "node:1"})
    return out


def timed(func: Callable[[], object]) -> tuple[float, object]:
    """(seconds, result) of `func()`."""
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


def reads(run_dir: str) -> dict[str, tuple[float, object]]:
    """(seconds, what it read, in a comparable form) of the three reads of a run."""
    return {
        "resume scan": timed(lambda: {p: set(done) for p, done in done_samples(run_dir).items()}),
        "aggregate read": timed(lambda: read_columns(run_dir, ["problem_id", "sample_idx", "text"]).to_pydict()),
        "dataset count": timed(lambda: ds.dataset(traces_dir(run_dir), format="parquet").count_rows()),
    }


def layout(samples: int, shard_rows: int, root: Path) -> None:
    run_dir = str(root / f"run-{shard_rows}")
    n = samples // PROBLEMS
    write_s = 0.0
    for start in range(0, samples, shard_rows):
        batch = rows(start, shard_rows, n)
        write_s += timed(lambda: write_shard(batch, run_dir, f"part-bench-{start // shard_rows:07d}"))[0]
    shards = samples // shard_rows
    print(f"{samples:,} samples in {shards:,} shards of {shard_rows:,}: writing {write_s / shards * 1e3:.2f} ms a shard "
          f"({shards / write_s * shard_rows:,.0f} rows/s)")
    small = reads(run_dir)
    compact_s, _ = timed(lambda: compact(run_dir))
    merged = len(list(Path(traces_dir(run_dir)).glob("*.parquet")))
    large = reads(run_dir)
    assert all(small[name][1] == large[name][1] for name in small), "compaction changed what a read returns"
    print(f"  compaction: {compact_s:.1f}s, into {merged} shard(s); every read returns the same")
    for name, (before, _) in small.items():
        after = large[name][0]
        print(f"  {name:>14}: {before:6.2f}s in {shards:,} shards, {after:6.2f}s compacted ({before / after:.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--shard-rows", type=int, nargs="+", default=[1000, 100])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as tmp:
        for shard_rows in args.shard_rows:
            layout(args.samples, shard_rows, Path(tmp))


if __name__ == "__main__":
    main()
