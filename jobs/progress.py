"""Sampling progress a user sees anywhere: a tqdm bar on a terminal, else plain lines at a bounded rate.

Off a terminal (`ray job logs -f`, `nohup`, CI) a line is printed when a work unit lands, at most once
every MIN_INTERVAL_S, and at least every HEARTBEAT_S while units are generating:

    [progress] 128/384 samples (33%), 0.9 samples/s, 141 tok/s, 2m20s elapsed, ETA 4m40s

Samples and tok/s count the units that landed. A unit lands when its longest sample ends, so while the
first units run, the line ends with what the engines report: samples in flight and their generation
rate (each step's running batch summed: an estimate), as in `...; engines: 512 samples in flight, ~96 tok/s`.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

HEARTBEAT_S = 30.0
MIN_INTERVAL_S = 5.0


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """Samples done of `total`, with rates and an ETA, for the duration of a `with` block."""

    def __init__(self, total: int, stream: TextIO | None = None, heartbeat_s: float = HEARTBEAT_S,
                 min_interval_s: float = MIN_INTERVAL_S):
        self.total, self.stream = total, stream or sys.stderr
        self.heartbeat_s, self.min_interval_s = heartbeat_s, min_interval_s
        self.samples = self.tokens = 0
        self.in_flight = self.generated = 0  # as the engines last reported
        self.start = self.last_line = time.monotonic()
        self.bar = None
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> "Progress":
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="sample", desc="sampling", file=self.stream)
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

    def update(self, samples: int, tokens: int) -> None:
        """A work unit landed with this many samples and generated tokens."""
        with self.lock:
            self.samples += samples
            self.tokens += tokens
            if self.bar:
                self.bar.update(samples)
                self.bar.set_postfix_str(self._rates() + self._engines())
            elif time.monotonic() - self.last_line >= self.min_interval_s or self.samples == self.total:
                self._print()

    def engine(self, activity: dict[str, int]) -> None:
        """The engines' summed `in_flight` requests and `generated` tokens so far (actors.pool.activity)."""
        with self.lock:
            self.in_flight, self.generated = activity["in_flight"], activity["generated"]
            if self.bar:
                self.bar.set_postfix_str(self._rates() + self._engines())

    def line(self) -> str:
        """The progress line as it reads now."""
        elapsed = time.monotonic() - self.start
        done = f"{self.samples}/{self.total} samples ({100 * self.samples / max(self.total, 1):.0f}%)"
        eta = _duration(elapsed * (self.total - self.samples) / self.samples) if self.samples else "unknown"
        return f"[progress] {done}, {self._rates()}, {_duration(elapsed)} elapsed, ETA {eta}{self._engines()}"

    def _rates(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        return f"{self.samples / elapsed:.1f} samples/s, {self.tokens / elapsed:.0f} tok/s"

    def _engines(self) -> str:
        """What the engines last reported, once they have generated anything."""
        if not self.generated:
            return ""
        rate = self.generated / max(time.monotonic() - self.start, 1e-9)
        return f"; engines: {self.in_flight} samples in flight, ~{rate:.0f} tok/s"

    def _print(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self.last_line = time.monotonic()

    def _heartbeat(self) -> None:
        while not self.stopped.wait(max(0.0, self.heartbeat_s - (time.monotonic() - self.last_line))):
            with self.lock:
                if time.monotonic() - self.last_line >= self.heartbeat_s:
                    self._print()
