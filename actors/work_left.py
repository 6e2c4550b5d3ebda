"""The tokens a replica's unfinished samples still need: a Kaplan-Meier estimate of sample lengths.

While samples run their lengths are right-censored: one with p tokens so far ends somewhere past p. Short
samples finish first, so the finished ones alone understate the rest. The estimate takes finished lengths
as events and running samples' tokens so far as censored, and puts the probability the observations cannot
place (past the longest finished sample) at each request's cap (its max_tokens): until long samples finish it
errs long, and it shrinks as they do.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Sequence

import numpy as np


class Lengths:
    """The lengths (tokens) of a replica's finished samples, and what its running ones are expected to need."""

    def __init__(self) -> None:
        self.finished: Counter[int] = Counter()  # length -> samples that finished with it
        self.cap = 0  # the largest cap of a running request seen: where a sample not started has its tail
        self.lock = threading.Lock()  # units add lengths on their own threads

    def add(self, length: int) -> None:
        """One sample finished with `length` tokens."""
        with self.lock:
            self.finished[length] += 1

    def left(self, running: Sequence[tuple[int, int]]) -> tuple[float, float]:
        """(tokens the `running` samples, each (tokens so far, cap), are expected to add; the expected length
        of a sample not started yet)."""
        made = np.array([m for m, _ in running], dtype=float)
        caps = np.array([c for _, c in running], dtype=float)
        self.cap = max(self.cap, int(caps.max(initial=0)))
        with self.lock:
            counts = sorted(self.finished.items())
        lengths = np.array([x for x, _ in counts], dtype=float)
        ends = np.array([n for _, n in counts], dtype=float)
        # at risk at length x: finished at x or later, plus running with x tokens or more
        at_risk = ends[::-1].cumsum()[::-1] + (len(made) - np.searchsorted(np.sort(made), lengths, side="left"))
        survival = np.cumprod(1.0 - ends / at_risk)  # P(L > x) at each finished length
        mass = -np.diff(survival, prepend=1.0)
        beyond = np.append((lengths * mass)[::-1].cumsum()[::-1], 0.0)  # sum of x * P(L = x) over x past each index
        tail = survival[-1] if len(survival) else 1.0  # P(L > the longest finished length)

        def expected(past: np.ndarray, cap: np.ndarray) -> np.ndarray:
            """E[L | L > past], the unplaced probability at `cap`."""
            i = np.searchsorted(lengths, past, side="right")
            alive = np.where(i > 0, survival[np.maximum(i - 1, 0)] if len(survival) else 1.0, 1.0)
            with np.errstate(divide="ignore", invalid="ignore"):
                mean = (beyond[i] + tail * cap) / alive
            return np.minimum(np.where(alive > 0, mean, cap), np.maximum(cap, past + 1))

        running_left = float(np.maximum(expected(made, caps) - made, 1.0).sum()) if len(made) else 0.0
        fresh = float(expected(np.zeros(1), np.array([float(self.cap)]))[0])
        return running_left, fresh
