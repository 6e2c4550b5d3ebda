"""From sample texts to votes: answers extracted in parallel, equivalent answers grouped into classes.

Grouping is equivalence-aware: "1/2" and "0.5" share a canonical key; keys that differ but are
mathematically equal (`\\sqrt{2}/2` and `\\frac{\\sqrt2}{2}`) are merged with `is_equivalent`.
Words never merge by algebra: "snta" and "snat" stay two classes.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from typing import Mapping, Optional, Sequence

import numpy as np

from analysis.answers import Comparison, answer_format, canonicalize, extract_answer, grade, is_equivalent, judge
from analysis.words import question_options

MAX_CLASSES_COMPARED = 32  # a new answer is compared with at most this many (most voted) classes
CHUNK = 2048  # texts per task of the parallel extraction


def options_of(question: Optional[str], fmt: str) -> Optional[Mapping[str, str]]:
    """The options a question lists, for a format that reads them (``choice``; None otherwise or without a question)."""
    return question_options(question) if answer_format(fmt).options and question else None


def _extract_chunk(args: tuple[list[str], str, list[Optional[str]]]) -> list[tuple[Optional[str], Optional[str]]]:
    texts, fmt, questions = args
    out = []
    for text, question in zip(texts, questions):
        answer = extract_answer(text, fmt)
        out.append((answer, canonicalize(answer, fmt, options_of(question, fmt))))
    return out


def extract_all(
    texts: Sequence[str], fmt: str, workers: int | None = None, questions: Sequence[Optional[str]] | None = None
) -> list[tuple[Optional[str], Optional[str]]]:
    """(extracted answer, canonical key) of every text, on `workers` processes (default: all cores).

    `questions` (one per text) lets ``choice`` read an option's text as its letter."""
    workers = workers or os.cpu_count() or 1
    questions = list(questions) if questions is not None and answer_format(fmt).options else [None] * len(texts)
    chunks = [(list(texts[i : i + CHUNK]), fmt, questions[i : i + CHUNK]) for i in range(0, len(texts), CHUNK)]
    if workers == 1 or len(chunks) == 1:
        return [pair for chunk in chunks for pair in _extract_chunk(chunk)]
    with ProcessPoolExecutor(workers) as pool:
        return [pair for part in pool.map(_extract_chunk, chunks) for pair in part]


def group_answers(keys: Sequence[Optional[str]], fmt: str) -> tuple[np.ndarray, list[str]]:
    """Class id per sample (-1: no answer) and each class's answer (its most voted key), most voted keys first."""
    classes: list[str] = []
    class_of: dict[str, int] = {}
    for key, _ in Counter(k for k in keys if k is not None).most_common():
        match = next((i for i, rep in enumerate(classes[:MAX_CLASSES_COMPARED]) if is_equivalent(key, rep, fmt)), None)
        if match is None:
            match = len(classes)
            classes.append(key)
        class_of[key] = match
    labels = np.array([class_of[k] if k is not None else -1 for k in keys], dtype=np.int64)
    return labels, classes


def grade_classes(classes: Sequence[str], gold: str, fmt: str,
                  options: Optional[Mapping[str, str]] = None) -> list[Comparison]:
    """How each class compares with the gold answer: equal or not, and how that was decided."""
    return [judge(answer, gold, fmt, options) for answer in classes]


def correct_class(classes: Sequence[str], gold: str, fmt: str, options: Optional[Mapping[str, str]] = None) -> int:
    """The class equal to the gold answer, or -1 when no sample found it."""
    return next((i for i, answer in enumerate(classes) if grade(answer, gold, fmt, options)), -1)
