"""CoT-decoding (Wang & Zhou 2024, "Chain-of-Thought Reasoning Without Prompting"): choosing among branches.

Each problem is decoded along k branches: the top-k first tokens after a plain `Q: ...\\nA:` prompt,
each continued greedily, each with its answer confidence Δ (analysis/answer_confidence.py, computed by
the replica). CoT-decoding answers with the branch of highest Δ ("max"), or with the answer whose
branches have the highest summed Δ ("agg"). Its accuracy using the top-k branches, per k, is the
methods cot_decoding_max and cot_decoding_agg of analysis/methods.py.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from analysis.curves import Estimates, Votes


def choose(labels: np.ndarray, deltas: np.ndarray, selection: str) -> int:
    """The answer class CoT-decoding picks from branches (in rank order): the branch of highest Δ
    ("max"), or the class of highest summed Δ ("agg"); ties go to the lower rank or class; -1 if none answered."""
    answered = labels >= 0
    if not answered.any():
        return -1
    if selection == "max":
        return int(labels[np.flatnonzero(answered)[np.argmax(deltas[answered])]])
    classes, codes = np.unique(labels[answered], return_inverse=True)
    return int(classes[np.argmax(np.bincount(codes, weights=deltas[answered]))])


def branch_curve(problems: Sequence[Votes], ks: Sequence[int], seed: int = 0, *, selection: str) -> Estimates:
    """Per problem and k, whether CoT-decoding (`selection` "max" or "agg") over its top-k branches is right;
    exact (no draws: `seed` is unused)."""
    values = np.array([[_right(p, k, selection) for k in ks] for p in problems], dtype=float).reshape(len(problems), len(ks))
    return Estimates(values, np.zeros_like(values), np.zeros(values.shape, dtype=bool))


def _right(problem: Votes, k: int, selection: str) -> bool:
    """Whether CoT-decoding over the problem's top-k branches picks the right answer."""
    chosen = choose(problem.labels[:k], np.nan_to_num(problem.deltas[:k]), selection)
    return chosen >= 0 and chosen == problem.correct_class
