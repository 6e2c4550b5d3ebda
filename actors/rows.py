"""A trace row from a request and what an engine made of it: the same columns whatever the engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from actors.work import Request, SamplingSpec


@dataclass(frozen=True)
class Completion:
    """One finished sample, as any engine reports it."""

    text: str
    num_tokens: int
    finish_reason: Optional[str]  # None: the engine did not say (counted as "length")
    cumulative_logprob: Optional[float] = None
    token_logprobs: Optional[list[float]] = None  # the sampled tokens' logprobs (sampling.logprobs >= 1)
    top_logprobs: Optional[list[list[float]]] = None  # each step's top-k logprobs, best first (sampling.logprobs >= 2)


def trace_row(request: Request, spec: SamplingSpec, prompt_tokens: int, completion: Optional[Completion] = None,
              error: Optional[str] = None) -> dict[str, Any]:
    """The row of one sample: its request, and its completion or the reason it has none (`finish_reason` error)."""
    row = {
        "decoding": spec.decoding,
        "problem_id": request.problem_id,
        "question": request.question,
        "gold": request.gold,
        "sample_idx": request.sample_idx,
        "seed": request.seed,
        "temperature": spec.temperature,
        "top_p": spec.top_p,
        "prompt_tokens": prompt_tokens,
        "error": error,
        "text": "",
        "num_tokens": 0,
        "finish_reason": "error",
    }
    if completion is not None:
        row.update(text=completion.text, num_tokens=completion.num_tokens,
                   finish_reason=completion.finish_reason or "length", cumulative_logprob=completion.cumulative_logprob)
        if spec.logprobs and completion.token_logprobs is not None:
            row["token_logprobs"] = completion.token_logprobs
            if spec.logprobs > 1 and completion.top_logprobs is not None:
                row["top_logprobs"] = [top[: spec.logprobs] for top in completion.top_logprobs]
    return row
