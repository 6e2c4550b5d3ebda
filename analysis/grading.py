"""How a run's answers were graded: counts per answer type, and a random audit of verdicts to eyeball.

Each sample has an answer type (`analysis.answers.ANSWER_TYPES`, or "none" when it gave no answer) and,
when it answered, how its verdict against the gold was reached (`analysis.answers.GRADINGS`): by key
rules ("exact"), by math-verify ("symbolic"), or by neither because math-verify could not parse the
pair or overran ("fallback": not equal).
"""

from __future__ import annotations

from collections import Counter
from typing import Optional, Sequence

import numpy as np

from analysis.answers import ANSWER_TYPES, GRADINGS

TYPES = (*ANSWER_TYPES, "none")
COLUMNS = {"fallback": "fell_back"}  # the report's column of a grading, where it is not the grading's name


def grading_report(types: Sequence[str], graded_by: Sequence[Optional[str]], correct: Sequence[bool]) -> list[dict]:
    """One row per answer type present: answers, correct, and how many were graded exactly,
    symbolically, or fell back."""
    rows = []
    for kind in TYPES:
        picked = [i for i, t in enumerate(types) if t == kind]
        if not picked:
            continue
        how = Counter(graded_by[i] for i in picked)
        rows.append({"answer_type": kind, "answers": len(picked), "correct": sum(bool(correct[i]) for i in picked),
                     **{COLUMNS.get(grading, grading): how[grading] for grading in GRADINGS}})
    return rows


def audit(types: Sequence[str], extracted: Sequence[Optional[str]], golds: Sequence[str], correct: Sequence[bool],
          graded_by: Sequence[Optional[str]], n: int, seed: int = 0) -> list[str]:
    """`n` random (extracted, gold, verdict) lines per answer type (fewer where a type has fewer), seeded."""
    rng = np.random.default_rng(seed)
    lines = [f"audit: up to {n} random answers per type (extracted | gold | verdict, how)"]
    for kind in TYPES:
        picked = [i for i, t in enumerate(types) if t == kind]
        chosen = sorted(rng.choice(picked, size=min(n, len(picked)), replace=False)) if picked else []
        for i in chosen:
            verdict = "right" if correct[i] else "wrong"
            how = f", {graded_by[i]}" if graded_by[i] else ""
            lines.append(f"{kind:<8} {_short(extracted[i]):<32} | {_short(golds[i]):<20} | {verdict}{how}")
    return lines


def _short(text: Optional[str], width: int = 30) -> str:
    """`text` quoted on one line, cut to `width` characters."""
    shown = repr(text) if text is not None else "(none)"
    return shown if len(shown) <= width else shown[: width - 3] + "..."
