"""Decodings (`decoding=`): how a run draws a problem's samples, and what that means for planning, naming and
voting them. A new decoding is one entry in DECODINGS; one that asks the engine for something new also adds
its generation to each engine's `generate` (actors.engines)."""

from __future__ import annotations

from dataclasses import dataclass

SAMPLE_KEYS = ("sampling.n", "sampling.temperature", "sampling.top_p", "sampling.max_tokens", "sampling.seed",
               "sampling.logprobs")


@dataclass(frozen=True)
class Decoding:
    """What a decoding samples and how its rows are planned, named and voted."""

    per_problem: str  # the sampling key that counts a problem's rows
    greedy: bool  # its rows are greedy continuations: temperature and top_p do not apply, nor a greedy baseline run
    branched: bool  # rows are a problem's top-k first-token branches: planned whole, voted by branch Δ
    min_tokens: int  # sampling.max_tokens must be at least this
    adaptive: bool  # online stopping rules may stop a problem's sampling
    name_keys: tuple[str, ...]  # the settings that describe one of its runs (tracking.runinfo)


SAMPLE = "sample"  # independent samples: the default decoding, and what an imported run's rows are
DECODINGS: dict[str, Decoding] = {
    SAMPLE: Decoding("n", greedy=False, branched=False, min_tokens=1, adaptive=True, name_keys=SAMPLE_KEYS),
    # CoT-decoding (Wang & Zhou 2024): each of the first token's top-k, continued greedily
    "cot_decoding": Decoding("top_k_branches", greedy=True, branched=True, min_tokens=2, adaptive=False,
                             name_keys=("sampling.top_k_branches", "sampling.max_tokens", "sampling.logprobs")),
}
