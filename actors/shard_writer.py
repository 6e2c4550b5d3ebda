"""A replica's finished rows, kept within seconds: buffered, then written as shards of their own.

Units add rows as their samples finish. A thread of its own writes what waits, one shard per run_dir, once
the oldest row has waited `flush_s` seconds or `flush_rows` rows wait; a unit that has added its last row
asks for a flush and waits for it, so a unit's result means its rows are on disk. Every shard written is
logged, for the driver to count (`shards_since`). Shards are named `part-<writer>-<seq>`: a writer's own,
so a resume or a redo knows samples only by (problem_id, sample_idx).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable

from storage.traces import write_shard


@dataclass(frozen=True)
class Flush:
    """When a replica writes what has finished (cluster.flush_s, cluster.flush_rows)."""

    seconds: float
    rows: int


class ShardWriter:
    """Buffers rows per run_dir and writes them on a thread of its own; `sync` waits until what was added is written."""

    def __init__(self, flush: Flush, write: Callable[[list[dict[str, Any]], str, str], str] = write_shard):
        self.flush, self.write = flush, write
        self.prefix = f"part-{uuid.uuid4().hex[:12]}"
        self.pending: dict[str, list[dict[str, Any]]] = defaultdict(list)  # run_dir -> rows waiting
        self.waiting = 0  # rows in `pending`
        self.oldest = 0.0  # when the oldest waiting row was added
        self.added = self.written = 0  # rows added and written so far; `sync` waits for written >= added
        self.shards = 0
        self.log: list[tuple[str, str, int]] = []  # (run_dir, path, rows) of every shard written, in order
        self.write_s = 0.0  # CPU seconds of its thread writing shards (Arrow tables, zstd, write, rename)
        self.error: BaseException | None = None  # the write that failed: every later call raises it
        self.asked = False  # a unit asked for a flush now
        self.changed = threading.Condition()
        threading.Thread(target=self._serve, name="shard-writer", daemon=True).start()

    def add(self, run_dir: str, row: dict[str, Any]) -> None:
        """Keep one finished row of `run_dir`."""
        with self.changed:
            self._raise()
            first = not self.waiting
            if first:
                self.oldest = time.monotonic()
            self.pending[run_dir].append(row)
            self.waiting += 1
            self.added += 1
            if first or self.waiting >= self.flush.rows:  # the writer's clock starts, or it is due now
                self.changed.notify_all()

    def sync(self) -> None:
        """Write every row added so far, now, and return once it is on disk (or raise the write's error)."""
        with self.changed:
            target = self.added
            if self.written < target:
                self.asked = True
                self.changed.notify_all()
            self.changed.wait_for(lambda: self.written >= target or self.error is not None)
            self._raise()

    def shards_since(self, seen: int) -> list[tuple[str, str, int]]:
        """(run_dir, path, rows) of the shards written after the first `seen`."""
        with self.changed:
            return self.log[seen:]

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _due(self) -> bool:
        return self.waiting > 0 and (self.asked or self.waiting >= self.flush.rows
                                     or time.monotonic() - self.oldest >= self.flush.seconds)

    def _serve(self) -> None:
        while True:
            with self.changed:
                while not self._due():
                    timeout = self.oldest + self.flush.seconds - time.monotonic() if self.waiting else None
                    self.changed.wait(timeout)
                batches, self.pending, self.asked = self.pending, defaultdict(list), False
                count, self.waiting = self.waiting, 0
            start = time.thread_time()
            try:
                for run_dir, rows in batches.items():
                    path = self.write(rows, run_dir, f"{self.prefix}-{self.shards:06d}")
                    self.shards += 1
                    with self.changed:
                        self.log.append((run_dir, path, len(rows)))
            except BaseException as error:  # every unit of this replica raises it, with its traceback
                with self.changed:
                    self.error = error
                    self.changed.notify_all()
                return
            with self.changed:
                self.write_s += time.thread_time() - start
                self.written += count
                self.changed.notify_all()
