"""Benchmark: jobs.ingest's memory on a generated lm-eval samples log, at two sizes.

    python -m benchmarks.bench_ingest                     # 100,000 and 1,000,000 samples (64 per problem)
    python -m benchmarks.bench_ingest --samples 20000     # and a tenth of it
    python -m benchmarks.bench_ingest --samples 20000 --shard-rows 1000   # shards smaller than either log

Writes a `samples_<task>_<date>.jsonl` as lm-eval logs it (one line per doc, `resps` holding every repeat,
about 190 bytes a text), then runs `python -m jobs.ingest format=lm_eval` on it in a child process, per size,
and prints the child's peak RSS, the file size and the rate. Memory bounded by `shard_rows`, not by the log,
shows as the same peak at both sizes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TASK = "bench_self_consistency"
DATE = "2026-01-02T10-20-30.123456"


def write_log(path: Path, samples: int, repeats: int) -> None:
    """An lm-eval samples log of `samples` generations, `repeats` per doc."""
    with path.open("w") as out:
        for doc_id in range(samples // repeats):
            texts = [f"Step {i}: {doc_id} apples plus {i} more apples make {doc_id + i} apples in all. "
                     f"Adding the rest gives the total. The answer is {doc_id + i % 3}." for i in range(repeats)]
            out.write(json.dumps({"doc_id": doc_id, "doc": {"question": f"How many apples? ({doc_id})", "answer": str(doc_id)},
                                  "target": str(doc_id), "arguments": {"gen_args_0": {"arg_0": "Q:", "arg_1": {}}},
                                  "resps": [texts], "filtered_resps": [str(doc_id)], "filter": "none",
                                  "metrics": ["exact_match"], "exact_match": 1.0}) + "\n")


def measure(log: Path, run_dir: Path, overrides: list[str]) -> tuple[float, float]:
    """(peak RSS of the ingest child in MB, its wall time in s)."""
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "jobs.ingest", "format=lm_eval", f"path={log}", f"run_dir={run_dir}",
                    *overrides], check=True, capture_output=True, text=True)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000, help="samples of the large log (the small: a tenth)")
    parser.add_argument("--repeats", type=int, default=64)
    parser.add_argument("--shard-rows", type=int, help="samples per shard (default: conf/ingest.yaml's shard_rows)")
    args = parser.parse_args()
    overrides = [f"shard_rows={args.shard_rows}"] if args.shard_rows else []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        for samples in (args.samples // 10, args.samples):  # the small one first: RUSAGE_CHILDREN keeps the maximum
            log = Path(tmp) / f"{samples}" / f"samples_{TASK}_{DATE}.jsonl"
            log.parent.mkdir()
            write_log(log, samples, args.repeats)
            peak, seconds = measure(log, Path(tmp) / f"run-{samples}", overrides)
            size_mb = log.stat().st_size / 2**20
            print(f"lm_eval log of {samples:,} samples ({size_mb:,.0f} MB): ingest peak RSS {peak:,.0f} MB, "
                  f"{seconds:.1f}s, {samples / seconds:,.0f} samples/s")
            log.unlink()


if __name__ == "__main__":
    main()
