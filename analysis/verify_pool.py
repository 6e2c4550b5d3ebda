"""Math-Verify comparisons in a small pool of killable worker processes, so one costs at most SYMBOLIC_TIMEOUT_S.

This module is not pure: it starts worker processes (analysis/verify_worker.py, run as a script), keeps
them between calls, kills one that overruns (a later call starts a new one) and kills the idle ones at
exit (`atexit`). A forked child gets its own pool, never its parent's workers. Everything else about
answers is in analysis/answers.py, which calls `symbolic_equal` only for pairs that hold math.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from functools import lru_cache

SYMBOLIC_TIMEOUT_S = 5.0
WORKER_START_TIMEOUT_S = 60.0
WORKER_MEMORY_BYTES = 2 << 30
WORKER_POOL_SIZE = 2
WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "verify_worker.py")

_log = logging.getLogger(__name__)


@lru_cache(maxsize=8192)
def symbolic_equal(a: str, b: str) -> bool | None:
    """math-verify equality of two LaTeX answers, in a worker process; None when it could not
    parse them, failed or overran."""
    return _worker_pool().equal(a, b, SYMBOLIC_TIMEOUT_S)


class _Worker:
    """One math-verify process speaking JSON lines on its stdin/stdout."""

    def __init__(self) -> None:
        # Run the worker file as a script; -P keeps analysis/ off the worker's sys.path.
        self._process = subprocess.Popen(
            [sys.executable, "-P", WORKER_SCRIPT, str(WORKER_MEMORY_BYTES)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._buffer = b""
        self._ready = False

    def ask(self, a: str, b: str, timeout: float) -> str | None:
        """The worker's reply on ``a == b`` ('1', '0', or 'u': unparsable), or None when it died or
        overran ``timeout``."""
        if not self._ready:
            self._ready = self._read_line(WORKER_START_TIMEOUT_S) == "ready"
            if not self._ready:
                self.kill()
                raise RuntimeError("the math-verify worker process did not start")
        try:
            self._process.stdin.write(json.dumps([a, b]).encode() + b"\n")
            self._process.stdin.flush()
        except OSError:
            return None
        return self._read_line(timeout)

    def _read_line(self, timeout: float) -> str | None:
        """The next line from the worker, or None on timeout or end of stream."""
        deadline = time.monotonic() + timeout
        fd = self._process.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def kill(self) -> None:
        """Stop the process at once."""
        self._process.kill()
        self._process.wait()
        self._process.stdin.close()
        self._process.stdout.close()


class _WorkerPool:
    """Up to WORKER_POOL_SIZE workers; one that overruns is killed and replaced on demand."""

    def __init__(self, size: int) -> None:
        self.pid = os.getpid()
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(size)

    def equal(self, a: str, b: str, timeout: float) -> bool | None:
        """Ask an idle (or new) worker: its verdict, or None when it could not parse the answers; a
        worker that does not answer in time is killed (None)."""
        with self._slots:
            with self._lock:
                worker = self._idle.pop() if self._idle else None
            worker = worker or _Worker()
            reply = worker.ask(a, b, timeout)
            if reply is None:
                _log.warning("symbolic comparison overran %.1f s or failed; worker replaced", timeout)
                worker.kill()
                return None
            with self._lock:
                self._idle.append(worker)
            return None if reply == "u" else reply == "1"

    def close(self) -> None:
        """Kill the idle workers."""
        with self._lock:
            while self._idle:
                self._idle.pop().kill()


_pool: _WorkerPool | None = None
_pool_lock = threading.Lock()


def _worker_pool() -> _WorkerPool:
    """This process's pool (a forked child gets its own, never its parent's workers)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool.pid != os.getpid():
            _pool = _WorkerPool(WORKER_POOL_SIZE)
            atexit.register(_pool.close)
        return _pool
