"""Other harnesses' own numbers, recomputed from marginal's vote classes the way each harness computes them.

lm-evaluation-harness (`take_first_k` + `majority_vote`) and lighteval (`maj@n`) vote over the *first* k
samples of each problem as stored, an unanswered sample's placeholder counting as one more answer, a tie
going to the answer seen first. That is one draw of k samples, not the expectation over all draws that
marginal's exact maj@k is. Their pass@k is the unbiased estimator, as marginal's.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Optional, Sequence

import numpy as np

from analysis.curves import Votes, maj_curve, pass_curve

NO_ANSWER = -1  # the class of samples without an answer (the peers' "[invalid]")


def first_k_vote(labels: np.ndarray, correct_class: int, k: int) -> float:
    """1.0 when the most common class among the first k labels is the right one (an unanswered sample
    votes for "no answer"; a tie goes to the class seen first), else 0.0."""
    counts = Counter(int(label) for label in labels[:k])
    winner = max(counts, key=counts.__getitem__)  # Counter keeps first-seen order, max keeps the first of the tied
    return float(winner != NO_ANSWER and winner == correct_class)


def _first_k_votes(problems: Sequence[Votes], k: Optional[int]) -> float:
    return float(np.mean([first_k_vote(p.labels, p.correct_class, k or len(p.labels)) for p in problems]))


def _pass(problems: Sequence[Votes], k: Optional[int]) -> float:
    return float(np.mean([pass_curve([p], [k or len(p.labels)]).values[0, 0] for p in problems]))


def _exact_maj(problems: Sequence[Votes], k: Optional[int]) -> float:
    return float(np.mean([maj_curve([p], [k or len(p.labels)]).values[0, 0] for p in problems]))


# How a peer's number is recomputed (method name -> function of the problems and k; k None: every sample).
PEER_METHODS: dict[str, Callable[[Sequence[Votes], Optional[int]], float]] = {
    "first_k_vote": _first_k_votes,
    "pass": _pass,
}
# What marginal reports beside it: the exact expectation over all k-sample draws.
EXACT_METHODS: dict[str, Callable[[Sequence[Votes], Optional[int]], float]] = {
    "first_k_vote": _exact_maj,
    "pass": _pass,
}
LABELS = {"first_k_vote": ("first-{k} vote", "exact maj@{k}"), "pass": ("pass@{k}", "pass@{k}")}


def recompute(method: str, problems: Sequence[Votes], k: Optional[int]) -> tuple[float, float]:
    """(the peer's number computed as the peer does, marginal's exact number) on the same vote classes."""
    return PEER_METHODS[method](problems, k), EXACT_METHODS[method](problems, k)
