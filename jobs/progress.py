"""Sampling progress a user sees anywhere: a tqdm bar on a terminal, else plain lines at a bounded rate.

The count is of samples kept: on disk, in the shards the replicas reported writing (they report every
2 s, and write what finishes within `cluster.flush_s`). Rates count from the moment the first engine
is loaded; tok/s is the engines' own counters (each step's running batch summed: an estimate). Off a
terminal (`ray job logs -f`, `nohup`, CI) a line is printed when the count moves, at most once every
MIN_INTERVAL_S, and at least every HEARTBEAT_S:

    [progress] 128/384 samples kept (33%), 0.90 samples/s, 141 tok/s, 2m20s elapsed, ETA 4m44s; 256 in flight
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Optional, TextIO

HEARTBEAT_S = 30.0
MIN_INTERVAL_S = 5.0


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """Samples kept of `total`, with rates and an ETA, for the duration of a `with` block."""

    def __init__(self, total: int, stream: TextIO | None = None, heartbeat_s: float = HEARTBEAT_S,
                 min_interval_s: float = MIN_INTERVAL_S):
        self.total, self.stream = total, stream or sys.stderr
        self.heartbeat_s, self.min_interval_s = heartbeat_s, min_interval_s
        self.kept = 0
        self.generated: dict[str, int] = {}  # replica -> tokens its engine generated, as it last reported
        self.in_flight = 0
        self.start = self.last_line = time.monotonic()
        self.engines_start: Optional[float] = None  # when the first engine was loaded
        self.bar = None
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> "Progress":
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="sample", desc="kept", file=self.stream)
        else:
            self.thread = threading.Thread(target=self._heartbeat, name="progress", daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        if self.thread:
            self.thread.join()
        if self.bar:
            self.bar.close()

    def engines_loaded(self) -> None:
        """An engine is loaded: from the first, rates and the ETA count time."""
        with self.lock:
            if self.engines_start is None:
                self.engines_start = time.monotonic()

    def update(self, kept: int, activity: dict[str, dict[str, int]]) -> None:
        """Samples kept so far, and the replicas' `activity()` by name (actors.pool.activity)."""
        with self.lock:
            moved = kept != self.kept
            self.kept = kept
            self.in_flight = sum(a["in_flight"] for a in activity.values())
            self.generated.update((name, a["generated"]) for name, a in activity.items())
            if self.bar:
                self.bar.update(kept - self.bar.n)
                self.bar.set_postfix_str(self._rates())
            elif moved and (time.monotonic() - self.last_line >= self.min_interval_s or kept == self.total):
                self._print()

    def line(self) -> str:
        """The progress line as it reads now."""
        done = f"{self.kept}/{self.total} samples kept ({100 * self.kept / max(self.total, 1):.0f}%)"
        return f"[progress] {done}, {self._rates()}"

    def _rates(self) -> str:
        now = time.monotonic()
        elapsed = f"{_duration(now - self.start)} elapsed"
        if self.engines_start is None:
            return f"{elapsed}, engines loading"
        running = max(now - self.engines_start, 1e-9)
        rate, tokens = self.kept / running, sum(self.generated.values()) / running
        eta = f"ETA {_duration((self.total - self.kept) / rate)}" if self.kept else "ETA unknown until a sample is kept"
        return f"{rate:.2f} samples/s, {tokens:.0f} tok/s, {elapsed}, {eta}; {self.in_flight} in flight"

    def _print(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self.last_line = time.monotonic()

    def _heartbeat(self) -> None:
        while not self.stopped.wait(max(0.0, self.heartbeat_s - (time.monotonic() - self.last_line))):
            with self.lock:
                if time.monotonic() - self.last_line >= self.heartbeat_s:
                    self._print()
