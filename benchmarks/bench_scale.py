"""Orchestration at scale: the real job (`jobs.sample.sample_runs`) on the engine double, no model.

    python -m benchmarks.bench_scale                              # CI size: 20,000 samples, 4 replicas
    python -m benchmarks.bench_scale --samples 1000000 --replicas 16

Two shapes, each in a fresh driver process: `one` (1 problem x min(samples, 10,000) samples) and
`many` (--problems problems x samples/problems samples). Per shape it prints:

  driver peak RSS   ru_maxrss of the driver process (Ray's own processes and the replicas excluded),
                    after sampling and again after a rerun that only scans what is done
  overhead/sample   (T_wall - T_gen) / samples, where T_wall is the wall time of sample_runs (Ray
                    already started: replicas start, planning, dispatch, generation, shard writes,
                    teardown) and T_gen = sum of the doubles' CPU seconds generating / min(replicas, cores),
                    the wall time generation alone would take on this machine; also without the
                    replicas' start (until all are ready), which does not grow with the samples
  Parquet writes    rows and MB (Arrow, in memory) per CPU-second of a replica writing shards

Targets: driver peak RSS < 1 GB, overhead < 50 us per sample.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

ONE_PROBLEM_SAMPLES = 10_000


def shape_size(shape: str, samples: int, problems: int) -> tuple[int, int]:
    """(problems, samples per problem) of a shape."""
    if shape == "one":
        return 1, min(samples, ONE_PROBLEM_SAMPLES)
    return problems, samples // problems


def peak_rss_mb() -> float:
    """The driver process's peak resident memory so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timing_replica_starts() -> list[float]:
    """Time every `actors.pool.start` (starting replicas until ready) from now on; the list fills as they run."""
    from actors import pool

    seconds: list[float] = []
    start = pool.start

    def timed_start(*args: Any, **kwargs: Any) -> list[Any]:
        began = time.monotonic()
        try:
            return start(*args, **kwargs)
        finally:
            seconds.append(time.monotonic() - began)

    pool.start = timed_start  # the pool looks `start` up in its module at each call
    return seconds


def measure(shape: str, args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    """Run one shape in this process and return its figures."""
    import ray

    from actors.double import EngineDouble
    from jobs.cli import compose
    from jobs.sample import sample_runs

    problems, n = shape_size(shape, args.samples, args.problems)
    model = run_dir / "model"  # the double loads nothing; check_model wants a model folder
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    cfg = compose(
        f"run_dir={run_dir}/run", f"model.path={model}", "tracking=none", f"dataset.size={problems}",
        f"sampling.n={n}", f"replicas={args.replicas}", "cluster.cpus_per_replica=1",
        f"cluster.unit_size={args.unit_size}", f"cluster.max_inflight={args.max_inflight}",
    )
    start = time.monotonic()
    ray.init(num_cpus=args.replicas, include_dashboard=False, log_to_driver=False)
    ray_start_s, rss_before = time.monotonic() - start, peak_rss_mb()
    replica_starts = timing_replica_starts()

    start = time.monotonic()
    [summary] = sample_runs([cfg], replica_class=EngineDouble)
    wall = time.monotonic() - start
    rss_run = peak_rss_mb()
    start = time.monotonic()
    [rerun] = sample_runs([cfg], replica_class=EngineDouble)  # scans what is done, samples nothing
    scan_s, rss_rescan = time.monotonic() - start, peak_rss_mb()
    ray.shutdown()

    assert summary.samples == problems * n and rerun.skipped == problems * n, (summary, rerun)
    parallel = min(args.replicas, os.cpu_count() or 1)
    gen_wall = summary.generate_seconds / parallel
    shards = list((run_dir / "run" / "traces").glob("*.parquet"))
    disk_bytes = sum(p.stat().st_size for p in shards)
    arrow_bytes = sum(pq.ParquetFile(p).read_row_group(g).nbytes for p in shards  # after the RSS figures
                      for g in range(pq.ParquetFile(p).num_row_groups))
    return {
        "shape": f"{problems} x {n}", "samples": summary.samples, "replicas": args.replicas,
        "unit_size": args.unit_size, "max_inflight": args.max_inflight, "ray_start_s": ray_start_s,
        "wall_s": wall, "gen_cpu_s": summary.generate_seconds, "gen_wall_s": gen_wall,
        "overhead_us": (wall - gen_wall) / summary.samples * 1e6, "replica_start_s": replica_starts[0],
        "steady_overhead_us": (wall - replica_starts[0] - gen_wall) / summary.samples * 1e6,
        "samples_per_s": summary.samples / wall, "write_rows_per_cpu_s": summary.samples / summary.write_seconds,
        "write_mb_per_cpu_s": arrow_bytes / 1e6 / summary.write_seconds, "arrow_mb": arrow_bytes / 1e6,
        "disk_mb": disk_bytes / 1e6,
        "rss_after_ray_mb": rss_before, "rss_peak_run_mb": rss_run, "rss_peak_rescan_mb": rss_rescan,
        "rescan_s": scan_s, "shards": len(shards),
    }


def report(r: dict[str, Any]) -> str:
    return (
        f"{r['shape']:>14} samples on {r['replicas']} replicas (unit_size {r['unit_size']}, "
        f"max_inflight {r['max_inflight']}):\n"
        f"  wall {r['wall_s']:.2f}s ({r['samples_per_s']:,.0f} samples/s; Ray start {r['ray_start_s']:.1f}s not included)\n"
        f"  double's generation {r['gen_cpu_s']:.1f} CPU-s -> {r['gen_wall_s']:.1f}s on this machine's cores\n"
        f"  orchestration overhead {r['overhead_us']:.1f} us/sample  [(wall - generation) / samples; target < 50]\n"
        f"    of which starting the replicas ({r['replica_start_s']:.1f}s, until all are ready): without it "
        f"{r['steady_overhead_us']:.1f} us/sample\n"

        f"  Parquet writes {r['write_rows_per_cpu_s']:,.0f} rows/s, {r['write_mb_per_cpu_s']:.1f} MB/s (Arrow size) per "
        f"replica CPU-second; {r['arrow_mb']:.0f} MB as Arrow, {r['disk_mb']:.1f} MB in {r['shards']:,} zstd shards\n"
        f"  driver peak RSS {r['rss_peak_run_mb']:.0f} MB (after ray.init {r['rss_after_ray_mb']:.0f} MB; "
        f"after the resume scan of {r['rescan_s']:.1f}s {r['rss_peak_rescan_mb']:.0f} MB)  [target < 1024]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--problems", type=int, default=1000, help="problems of the `many` shape")
    parser.add_argument("--unit-size", type=int, default=1000)
    parser.add_argument("--max-inflight", type=int, default=2)
    parser.add_argument("--shape", choices=("one", "many", "both"), default="both")
    args = parser.parse_args()
    if args.shape == "both":
        for shape in ("one", "many"):  # a fresh driver each, so each peak RSS is its own (the last --shape wins)
            subprocess.run([sys.executable, "-m", "benchmarks.bench_scale", *sys.argv[1:], "--shape", shape], check=True)
        return
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        print(report(measure(args.shape, args, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
