"""One writer per run: a sampling job leases each run_dir it writes, and a second job there fails at once.

The lease is `<run_dir>/lease/<generation>.json`: the holder's host, pid and start time, refreshed every
REFRESH_S seconds while it samples. The highest generation is the lease. A job takes it by creating the next
generation's file, which only one job can do: on local and shared filesystems (NFS, EFS, Lustre) a hard link
of a fully written temporary file, so the lease is never seen half-written. A lease is free once released, at
once when its holder's process is gone from this host, and otherwise when it has not been refreshed for
EXPIRES_S seconds (its holder's host is down or cut off; hosts' clocks must agree to within a few seconds).
Object stores reached through pyarrow offer no conditional write, so there the next generation is written
only if absent and read back after SETTLE_S: two jobs starting within that time of each other may both run.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import Iterable, Iterator, Optional, TypeVar

import psutil
import pyarrow.fs as pafs

from analysis.errors import MarginalError
from storage.traces import RunDirError, filesystem

REFRESH_S = 10.0  # how often a holder rewrites its lease
EXPIRES_S = 3 * REFRESH_S  # a lease unrefreshed this long is taken over (missed refreshes, not one late one)
SETTLE_S = 1.0  # object stores: wait this long before reading back a lease just written
HOST = socket.gethostname()

T = TypeVar("T")


class LeaseError(MarginalError, RuntimeError):
    """The run_dir is leased by another job that is alive, or this job lost its lease to another."""


@dataclass
class Holder:
    """What a lease file holds."""

    host: str
    pid: int
    pid_started: float  # the process's start time, so that a reused pid is not taken for the holder
    started: str  # when the job took the lease (UTC)
    refreshed: float  # Unix time of the last refresh
    token: str  # this holder's own id
    expires_s: float = EXPIRES_S
    released: bool = False

    def live(self) -> bool:
        """Whether the lease still binds others: not released, its process not gone, refreshed lately."""
        if self.released or (self.host == HOST and not process_alive(self.pid, self.pid_started)):
            return False
        return time.time() - self.refreshed <= self.expires_s

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}, since {self.started}, refreshed {time.time() - self.refreshed:.0f}s ago"


def process_alive(pid: int, started: float) -> bool:
    """Whether process `pid` of this host runs and is the one that started at `started`."""
    try:
        process = psutil.Process(pid)
        return abs(process.create_time() - started) < 1 and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's process: it exists
        return True


def _this_process() -> Holder:
    now = time.time()
    return Holder(HOST, os.getpid(), psutil.Process().create_time(),
                  datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"), now, uuid.uuid4().hex)


class Lease:
    """The lease of one run_dir: acquire, refresh, release."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.fs, self.folder = filesystem(f"{run_dir.rstrip('/')}/lease")
        self.local = self.fs.type_name == "local"
        self.generation = 0
        self.holder: Optional[Holder] = None
        self.lost: Optional[str] = None  # why this job no longer holds the lease

    def _path(self, generation: int) -> str:
        return f"{self.folder}/{generation:08d}.json"

    def _generations(self) -> list[int]:
        infos = self.fs.get_file_info(pafs.FileSelector(self.folder, allow_not_found=True))
        return sorted(int(name) for i in infos if (name := i.base_name.removesuffix(".json")).isdigit())

    def _read(self, generation: int) -> Optional[Holder]:
        """The holder in that generation's file; None when it is gone or unreadable (then nobody holds it)."""
        try:
            with self.fs.open_input_stream(self._path(generation)) as stream:
                return Holder(**json.loads(stream.read()))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def _staged(self, holder: Holder) -> str:
        """A temporary file in the lease folder holding `holder`, to link or rename into place (local only)."""
        temp = f"{self.folder}/.{uuid.uuid4().hex}.tmp"
        with open(temp, "w") as file:
            json.dump(asdict(holder), file)
        return temp

    def _put(self, generation: int, holder: Holder) -> None:
        """Object stores: write that generation's object, whole or not at all."""
        with self.fs.open_output_stream(self._path(generation)) as stream:
            stream.write(json.dumps(asdict(holder)).encode())

    def _write(self, generation: int, holder: Holder) -> None:
        """Replace that generation's file with `holder`, atomically."""
        if self.local:
            os.replace(self._staged(holder), self._path(generation))
        else:
            self._put(generation, holder)

    def _create(self, generation: int, holder: Holder) -> bool:
        """Create that generation's file holding `holder` unless it exists; whether this call created it."""
        if not self.local:  # no conditional write: write if absent, then see whose lease is there
            if self.fs.get_file_info(self._path(generation)).type != pafs.FileType.NotFound:
                return False
            self._put(generation, holder)
            time.sleep(SETTLE_S)
            found = self._read(generation)
            return found is not None and found.token == holder.token
        temp = self._staged(holder)
        try:
            os.link(temp, self._path(generation))  # atomic, and fails if the file exists, on NFS too
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(temp)

    def acquire(self) -> None:
        """Take the lease, or raise LeaseError naming the live holder."""
        self.fs.create_dir(self.folder, recursive=True)
        generation = max(self._generations(), default=0)
        while True:
            current = self._read(generation) if generation else None
            if current is not None and current.live():
                raise LeaseError(
                    f"run_dir={self.run_dir} is being sampled by another job ({current.describe()}; "
                    f"{self._path(generation)}): wait for it or stop it. Its lease is taken over at once when its "
                    f"process is gone from this host, else after {current.expires_s:.0f}s without a refresh. "
                    f"A sweep's members need their own run_dir (put the swept keys in it)"
                )
            generation += 1
            holder = _this_process()
            if not self._create(generation, holder):
                continue  # another job created it first: look at that one
            newer = [g for g in self._generations() if g > generation]
            if newer:  # a job that started from a newer generation wins
                self.fs.delete_file(self._path(generation))
                generation = newer[-1]
                continue
            self.generation, self.holder = generation, holder
            for older in self._generations():
                if older < generation:
                    self._delete(older)
            return

    def _delete(self, generation: int) -> None:
        try:
            self.fs.delete_file(self._path(generation))
        except FileNotFoundError:
            pass

    def refresh(self) -> None:
        """Rewrite the lease with the time now; if another job has taken it, record that it is lost instead."""
        if self.lost or self.holder is None:
            return
        newest = max(self._generations(), default=0)
        found = self._read(self.generation)
        if newest > self.generation or found is None or found.token != self.holder.token:
            taker = self._read(newest)
            self.lost = f"run_dir={self.run_dir}: another job took over its lease ({taker.describe() if taker else 'gone'})"
            return
        self.holder.refreshed = time.time()
        self._write(self.generation, self.holder)

    def release(self) -> None:
        """Mark the lease released (the newest generation's file stays, so generations only grow)."""
        if self.holder is not None and not self.lost:
            self._write(self.generation, replace(self.holder, refreshed=time.time(), released=True))
        self.holder = None


class RunLeases:
    """Leases on the run_dirs of one job, refreshed by a thread while held: `with RunLeases(dirs) as leases:`."""

    def __init__(self, run_dirs: Iterable[str]):
        self.leases = [Lease(run_dir) for run_dir in run_dirs]
        self.stop = threading.Event()
        self.refresher = threading.Thread(target=self._refresh_until_stopped, name="lease-refresh", daemon=True)

    def __enter__(self) -> RunLeases:
        try:
            for lease in self.leases:
                try:
                    lease.acquire()
                except OSError as error:
                    raise RunDirError(f"run_dir={lease.run_dir}: cannot write there: {error}") from None
        except BaseException:
            self._release()
            raise
        self.refresher.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.refresher.is_alive():
            self.refresher.join()
        self._release()

    def _release(self) -> None:
        for lease in self.leases:
            lease.release()

    def _refresh_until_stopped(self) -> None:
        while not self.stop.wait(REFRESH_S):
            for lease in self.leases:
                try:
                    lease.refresh()
                except OSError as error:  # storage unreachable for now: the next refresh tries again
                    print(f"[lease] warning: run_dir={lease.run_dir}: cannot refresh its lease: {error}", file=sys.stderr)

    def check(self) -> None:
        """Raise LeaseError if another job has taken over a lease of this job."""
        for lease in self.leases:
            if lease.lost:
                raise LeaseError(f"{lease.lost}; stopping before writing more")

    def guard(self, units: Iterable[T]) -> Iterator[T]:
        """`units`, checking before each that every lease is still held."""
        for unit in units:
            self.check()
            yield unit
