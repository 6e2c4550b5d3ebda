"""DeepConf-style sample confidences from token logprobs (Fu et al. 2025, "Deep Think with Confidence").

Token confidence at step i, from the logprobs of the top-k candidate tokens there:

    C_i = -(1/k) * sum_j log P_i(j)

It is high where the distribution is peaked (the runners-up are very unlikely). When only the sampled
token's logprob is stored, the fallback is that token's probability, C_i = exp(logprob_i), which is
also >= 0 and grows with confidence (-logprob_i, the same formula with k = 1, would rank confident
tokens lowest). Both kinds are nonnegative, but their scales differ: don't mix them in one vote.

Trace confidence (`trace_confidence` from logprobs, `trace_score` from token confidences; method
names as in the paper, the registry TRACE_SCORES):
* "mean": the mean token confidence;
* "lowest_group": the lowest mean over all windows of `window` consecutive tokens (the window is
  capped at the trace's length, so a short trace has one window: its mean);
* "bottom_percent": the mean of the lowest `percent`% of those window means (at least one);
* "tail": the mean over the last `tail` tokens.
An empty trace has confidence 0.0, the lowest possible, so it never outweighs a real one.

`filter_top(weights, eta)` keeps the eta% most confident samples (ceil(eta% of n), ties by order)
and gives the others weight 0 (row by row for a 2-D array); the result is ready as `weights` for
weighted maj@k. `scaling_curves(..., top_percent=eta)` applies it within each drawn k-subset.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import numpy as np

WINDOW = 2048
TAIL = 2048
BOTTOM_PERCENT = 10.0


def token_confidence(logprobs: Sequence[float], top_logprobs: Sequence[Sequence[float]] | None = None) -> np.ndarray:
    """Per-token confidence: -mean of the top-k logprobs at each step (0 at a step without them),
    or exp(sampled logprob) when no top-k lists are stored."""
    if top_logprobs is None or len(top_logprobs) == 0:
        return np.exp(np.asarray(logprobs, dtype=float))
    try:
        tops = np.asarray(top_logprobs, dtype=float)  # (steps, k): the same k at every step
    except (ValueError, TypeError):  # ragged or missing lists: one step at a time
        return np.array([-np.mean(top) if top is not None and len(top) else 0.0 for top in top_logprobs])
    return -tops.mean(axis=1) if tops.ndim == 2 and tops.shape[1] else np.zeros(len(tops))


def window_means(conf: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """Means of every run of `window` consecutive values (window capped at the length)."""
    w = min(window, len(conf))
    sums = np.cumsum(np.concatenate([[0.0], conf]))
    return (sums[w:] - sums[:-w]) / w


class ScoreOptions(NamedTuple):
    """The parameters of the trace scores: window of lowest_group and bottom_percent, tail, percent."""

    window: int = WINDOW
    tail: int = TAIL
    percent: float = BOTTOM_PERCENT


def mean_score(conf: np.ndarray, options: ScoreOptions) -> float:
    """The mean token confidence."""
    return float(conf.mean())


def lowest_group_score(conf: np.ndarray, options: ScoreOptions) -> float:
    """The lowest mean over windows of `options.window` consecutive tokens."""
    return float(window_means(conf, options.window).min())


def bottom_percent_score(conf: np.ndarray, options: ScoreOptions) -> float:
    """The mean of the lowest `options.percent`% of the window means (at least one)."""
    groups = window_means(conf, options.window)
    lowest = max(1, math.ceil(len(groups) * options.percent / 100))
    return float(np.sort(groups)[:lowest].mean())


def tail_score(conf: np.ndarray, options: ScoreOptions) -> float:
    """The mean over the last `options.tail` tokens."""
    return float(conf[-options.tail:].mean())


# answer.confidence: a new trace confidence is one function above and one line here.
TRACE_SCORES: dict[str, Callable[[np.ndarray, ScoreOptions], float]] = {
    "mean": mean_score,
    "lowest_group": lowest_group_score,
    "bottom_percent": bottom_percent_score,
    "tail": tail_score,
}


def trace_score(conf: np.ndarray, method: str, **options: float) -> float:
    """One trace's confidence from its token confidences by `method` of TRACE_SCORES (answer.confidence);
    `options` are ScoreOptions' window, tail and percent. An empty trace scores 0.0."""
    if method not in TRACE_SCORES:
        raise ValueError(f"unknown method {method!r}; expected one of {list(TRACE_SCORES)}")
    conf = np.asarray(conf, dtype=float)
    return TRACE_SCORES[method](conf, ScoreOptions(**options)) if len(conf) else 0.0


def trace_confidence(
    logprobs: Sequence[float],
    top_logprobs: Sequence[Sequence[float]] | None,
    method: str,
    **options: float,
) -> float:
    """One trace's confidence from its per-token logprobs (and top-k logprobs, when stored);
    `options` are trace_score's window, tail and percent."""
    return trace_score(token_confidence(logprobs, top_logprobs), method, **options)


def filter_top(weights: np.ndarray, eta: float) -> np.ndarray:
    """Keep the weights of the ceil(eta% of n) largest along the last axis (first ones win ties); set the rest to 0."""
    weights = np.asarray(weights, dtype=float)
    keep = math.ceil(round(weights.shape[-1] * eta / 100, 9))  # round: 70% of 10 is 7, not 7.000000000000001
    top = np.argsort(-weights, axis=-1, kind="stable")[..., :keep]
    kept = np.zeros_like(weights)
    np.put_along_axis(kept, top, np.take_along_axis(weights, top, axis=-1), axis=-1)
    return kept
