"""The replica: a Ray actor holding one engine (actors.engines), serving work units and keeping their rows as shards.

It builds its engine in `__init__` and serves a whole work unit in `run`. Each sample's row is kept as it
finishes (`actors.shard_writer`: written within `cluster.flush_s` seconds), so texts never travel through
the driver and a crash loses only the samples of the last seconds. It is a threaded actor: several units
run at once, their requests sharing one engine. It is the same whatever the engine, and knows nothing of
Hydra or MLflow.
"""

from __future__ import annotations

import os
import time
from typing import Any

import ray

from actors.engines import ENGINES
from actors.shard_writer import Flush, ShardWriter
from actors.work import WorkUnit
from actors.work_left import Lengths


class EngineReplica:
    """One engine replica."""

    clock = staticmethod(time.perf_counter)  # how `run` times a unit's generation
    engines = ENGINES  # name -> engine class (a benchmark swaps in a variant)

    def __init__(self, engine: str, settings: dict[str, Any], flush: Flush):
        self.engine = self.engines[engine](settings)
        self.writer = ShardWriter(flush)
        self.lengths = Lengths()
        self.name = replica_name()

    def ready(self) -> dict[str, Any]:
        """Once its engine is built: the replica's name and its engine's report (actors.work.Ready)."""
        return {"replica": self.name, "ready": self.engine.ready()}

    def activity(self, seen: int = 0) -> dict[str, Any]:
        """The replica's name; what its engine is doing now (requests in it, tokens so far); the tokens its
        running samples are expected to add and a new sample's expected length (actors.work_left); rows finished
        but not yet written; and the shards it wrote after the first `seen` ((run_dir, path, rows) each): what
        the driver counts as kept."""
        tokens_left, sample_tokens = self.lengths.left(self.engine.running())
        return {"replica": self.name, **self.engine.activity(), "tokens_left": tokens_left,
                "sample_tokens": sample_tokens, "pending": self.writer.added - self.writer.written,
                "shards": self.writer.shards_since(seen)}

    def run(self, unit: WorkUnit) -> dict[str, Any]:
        """Generate every sample of `unit`, keeping each row as it finishes; return once all are on disk, with
        its run_dir, counts and timings (the unit's own, overlapping other units'; the replica's so far: its
        engine's mean running batch and its CPU seconds writing shards). If the engine fails, what the replica
        kept is written before the error goes to the driver."""
        start = self.clock()
        rows = tokens = errors = 0
        try:
            for row in self.engine.generate(unit.requests, unit.spec):
                self.keep(unit, row)
                rows, tokens, errors = rows + 1, tokens + row["num_tokens"], errors + (row["error"] is not None)
        finally:
            generated = self.clock()
            self.writer.sync()  # its last rows, now: its result (or its error) means all of them are on disk
        return {
            "run_dir": unit.run_dir,
            "replica": self.name,
            "rows": rows,
            "tokens": tokens,
            "errors": errors,
            "generate_s": generated - start,
            "write_s": self.writer.write_s,
            "mean_batch": self.engine.mean_batch(),
        }

    def keep(self, unit: WorkUnit, row: dict[str, Any]) -> None:
        """Hand a finished sample's row, with the unit's run columns and the replica's name, to the shard writer."""
        self.writer.add(unit.run_dir, {**unit.run.as_row(), **row, "replica": self.name})
        if row["error"] is None:
            self.lengths.add(row["num_tokens"])


def replica_name() -> str:
    """`<node address>:<pid>`, the `replica` column: the node's address tells nodes apart."""
    return f"{ray.util.get_node_ip_address()}:{os.getpid()}"
