"""Compact a run's trace shards: the many small shards replicas write merged into few large ones.

    python -m jobs.compact run_dir=DIR

Replicas write a shard every `cluster.flush_s` seconds, so a long run holds many; reads of a compacted run are
2-8x faster (docs/benchmarks.md, bench_shards). It holds the run_dir's lease
(a job sampling there makes it fail at once, naming that job), and it is safe to kill: every sample is read
exactly once at every moment, and a rerun finishes what a killed one left (storage.compaction).
"""

from __future__ import annotations

import sys

import pyarrow.fs as pafs
from omegaconf import DictConfig

from jobs import cli
from storage.compaction import compact
from storage.lease import RunLeases
from storage.traces import NoTracesError, filesystem, shard_paths, traces_dir


@cli.entry_point("compact")
def main(cfg: DictConfig) -> None:
    fs, root = filesystem(traces_dir(cfg.run_dir))
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        raise NoTracesError(f"run_dir={cfg.run_dir}: no traces/ folder to compact")
    with RunLeases([cfg.run_dir]):
        before = len(shard_paths(fs, root))
        merged, written = compact(cfg.run_dir)
    print(f"[compact] {cfg.run_dir}: {merged} of {before} shards merged into {written}; "
          f"{before - merged + written} shards now", file=sys.stderr)


if __name__ == "__main__":
    main()
