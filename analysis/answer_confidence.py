"""CoT-decoding's answer confidence Δ of one branch (Wang & Zhou 2024), computed by the replica that decodes it.

    Δ = mean over the answer's tokens t of p(top-1 token at t) - p(top-2 token at t),

where the answer's tokens are those whose text overlaps the last occurrence of the extracted answer in the
branch's text. It needs only answer extraction (analysis.answers): no curves, no scipy, so replicas stay
light. Choosing among branches and the accuracy curves are aggregation's (analysis/cot_decoding.py).
"""

from __future__ import annotations

import math
from typing import Sequence

from analysis.answers import extract_answer

RESYNC_CHARS = 4  # how far past the expected offset a token's text may start (after undecodable bytes)


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
    return sum(margins) / len(margins) if margins else None
