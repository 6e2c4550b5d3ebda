"""A replica's shard writer: what finishes is written within flush_s, at flush_rows, or when a unit syncs."""

from __future__ import annotations

import threading
import time

import pytest

from actors.shard_writer import Flush, ShardWriter


class Recorder:
    """A `write` that records each shard (rows, run_dir, name) and signals it."""

    def __init__(self, fail: bool = False):
        self.shards: list[tuple[list, str, str, float]] = []
        self.written = threading.Event()
        self.fail = fail

    def __call__(self, rows, run_dir, name):
        if self.fail:
            raise OSError(28, "No space left on device")
        self.shards.append((list(rows), run_dir, name, time.monotonic()))
        self.written.set()
        return name


def test_rows_wait_at_most_flush_s_before_they_are_written():
    write = Recorder()
    writer = ShardWriter(Flush(seconds=0.3, rows=1000), write)
    added = time.monotonic()
    writer.add("run", {"i": 0})
    writer.add("run", {"i": 1})
    assert write.written.wait(5)
    [(rows, run_dir, name, at)] = write.shards
    assert rows == [{"i": 0}, {"i": 1}] and run_dir == "run" and name.startswith(writer.prefix)
    assert 0.3 <= at - added < 3


def test_flush_rows_waiting_are_written_at_once():
    write = Recorder()
    writer = ShardWriter(Flush(seconds=600, rows=3), write)
    for i in range(3):
        writer.add("run", {"i": i})
    assert write.written.wait(5)  # long before flush_s
    assert [len(rows) for rows, *_ in write.shards] == [3]


def test_sync_writes_now_one_shard_per_run_dir_and_returns_once_written():
    write = Recorder()
    writer = ShardWriter(Flush(seconds=600, rows=1000), write)
    writer.add("a", {"i": 0})
    writer.add("b", {"i": 1})
    writer.add("a", {"i": 2})
    writer.sync()
    assert sorted((run_dir, len(rows)) for rows, run_dir, *_ in write.shards) == [("a", 2), ("b", 1)]
    names = [name for *_, name, _ in write.shards]
    assert len(set(names)) == 2  # each shard a name of its own
    writer.sync()  # nothing waits: no empty shard
    assert len(write.shards) == 2


def test_a_failed_write_is_raised_to_the_units_waiting_and_to_every_later_one():
    writer = ShardWriter(Flush(seconds=600, rows=1000), Recorder(fail=True))
    writer.add("run", {"i": 0})
    with pytest.raises(OSError, match="No space left"):
        writer.sync()
    with pytest.raises(OSError, match="No space left"):
        writer.add("run", {"i": 1})


def test_two_writers_never_share_a_shard_name():
    assert ShardWriter(Flush(1, 1), Recorder()).prefix != ShardWriter(Flush(1, 1), Recorder()).prefix
