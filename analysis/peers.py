"""Other harnesses' own numbers, recomputed from marginal's vote classes the way each harness computes them.

lm-evaluation-harness (`take_first_k` + `majority_vote`) and lighteval (`maj@n`) vote over the *first* k
samples of each problem as stored, an unanswered sample's placeholder counting as one more answer, a tie
going to the answer seen first. That is one draw of k samples, not the expectation over all draws that
marginal's exact maj@k is. Their pass@k is the unbiased estimator, as marginal's.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, NamedTuple, Optional, Sequence

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


PeerScore = Callable[[Sequence[Votes], Optional[int]], float]  # (problems, k) -> mean; k None: every sample


class PeerMethod(NamedTuple):
    """How a peer's number is recomputed as the peer computes it, what marginal reports beside it on the same
    vote classes (the exact expectation over all k-sample draws), and the two numbers' labels ('{k}' for k)."""

    peer: PeerScore
    exact: PeerScore
    label: str
    exact_label: str


# By the name a source's metric gives for how it is recomputed (problems.import_formats: PeerTally.add).
PEER_METHODS: dict[str, PeerMethod] = {
    "first_k_vote": PeerMethod(_first_k_votes, _exact_maj, "first-{k} vote", "exact maj@{k}"),
    "pass": PeerMethod(_pass, _pass, "pass@{k}", "pass@{k}"),
}
