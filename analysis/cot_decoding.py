"""CoT-decoding (Wang & Zhou 2024, "Chain-of-Thought Reasoning Without Prompting"): answer confidence
and branch selection.

Each problem is decoded along k branches: the top-k first tokens after a plain `Q: ...\\nA:` prompt,
each continued greedily. A branch's answer confidence is

    Δ = mean over the answer's tokens t of p(top-1 token at t) - p(top-2 token at t),

and CoT-decoding answers with the branch of highest Δ ("max"), or with the answer whose branches have
the highest summed Δ ("agg"). The answer's tokens are those whose text overlaps the last occurrence
of the extracted answer in the branch's text.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from analysis.answers import extract_answer
from analysis.curves import Curves, Estimates, Problem, curve_rows, k_grid

RESYNC_CHARS = 4  # how far past the expected offset a token's text may start (after undecodable bytes)
SELECTIONS = ("max", "agg")


def token_offsets(text: str, pieces: Sequence[str]) -> list[tuple[int, int]]:
    """The (start, end) character span of each token's decoded piece in `text`; a piece not found there
    (a special token such as end-of-text) gets an empty span."""
    spans, pos = [], 0
    for piece in pieces:
        at = text.find(piece, pos, pos + len(piece) + RESYNC_CHARS) if piece else -1
        if at < 0:
            spans.append((pos, pos))
            continue
        spans.append((at, at + len(piece)))
        pos = at + len(piece)
    return spans


def answer_span(text: str, fmt: str) -> tuple[int, int] | None:
    """Where the extracted answer last occurs in `text`, or None when there is no answer."""
    answer = extract_answer(text, fmt)
    start = text.rfind(answer) if answer is not None else -1
    return None if start < 0 else (start, start + len(answer))


def margin(top_logprobs: Sequence[float]) -> float:
    """p(top-1) - p(top-2) from one step's candidate logprobs (the runner-up is 0 when absent)."""
    probs = sorted((math.exp(lp) for lp in top_logprobs), reverse=True) + [0.0, 0.0]
    return probs[0] - probs[1]


def answer_confidence(text: str, spans: Sequence[tuple[int, int]], top_logprobs: Sequence[Sequence[float]],
                      fmt: str) -> float | None:
    """Δ of one branch: the mean margin over the tokens overlapping its answer; None without an answer."""
    span = answer_span(text, fmt)
    if span is None:
        return None
    margins = [margin(top) for (start, end), top in zip(spans, top_logprobs) if start < span[1] and end > span[0]]
    return float(np.mean(margins)) if margins else None


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


def cot_decoding_curves(problems: Sequence[Problem], ks: Sequence[int] | None = None, seed: int = 0) -> Curves:
    """Accuracy of CoT-decoding ("max" and "agg") using the top-k branches, per k, with 95% bootstrap
    intervals over problems. Each problem's samples are its branches in rank order, `weights` their Δ."""
    ks = k_grid(min(len(p.labels) for p in problems)) if ks is None else list(ks)
    curves = Curves(ks=list(ks), rows=[])
    for selection in SELECTIONS:
        values = np.array([[_right(p, k, selection) for k in ks] for p in problems], dtype=float)
        estimates = Estimates(values, np.zeros_like(values), np.zeros(values.shape, dtype=bool))
        curves.per_problem[f"cot_decoding_{selection}"] = estimates
        curves.rows += curve_rows(f"cot_decoding_{selection}", ks, estimates, seed=seed)
    return curves


def _right(problem: Problem, k: int, selection: str) -> bool:
    """Whether CoT-decoding over the problem's top-k branches picks the right answer."""
    chosen = choose(problem.labels[:k], np.nan_to_num(problem.weights[:k]), selection)
    return chosen >= 0 and chosen == problem.correct_class
