"""What the driver sends a replica, what its engine can do, and what can go wrong starting one: plain data,
importable without Ray or vLLM.

`jobs/sample.py` plans `WorkUnit`s of `Request`s under one `SamplingSpec`; a replica (actors/replica.py)
serves a unit and keeps its rows, each carrying the unit's `RunColumns`, in shards as they finish.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Union

from analysis.errors import MarginalError

Prompt = Union[str, list[dict[str, str]]]  # completion text, or chat messages


@dataclass(frozen=True)
class Request:
    """One sample to generate: a problem's prompt and the sample's own seed."""

    problem_id: str
    question: str
    gold: str
    prompt: Prompt
    sample_idx: int
    seed: int


@dataclass(frozen=True)
class SamplingSpec:
    """How every sample of a run is drawn."""

    temperature: float
    top_p: float
    max_tokens: int
    logprobs: int
    decoding: str  # a name in actors.decodings.DECODINGS
    branches: int  # cot_decoding: the top-k first tokens branched on (sampling.top_k_branches)
    answer_format: str  # cot_decoding: how a branch's answer is found, for its confidence (answer.format)
    stop: tuple[str, ...] = ()  # texts that end a sample (a completion prompt's next question)


@dataclass(frozen=True)
class RunColumns:
    """The columns every trace row of one run carries, beside its sample's own."""

    run_id: str
    model: str
    prompt: str  # the prompt style's name

    def as_row(self) -> dict[str, str]:
        """The columns as a row's dict: run_id, model, prompt."""
        return asdict(self)


@dataclass(frozen=True)
class WorkUnit:
    """A batch of samples of one run, served by one replica: the unit of planning, not of storage."""

    run_dir: str
    run: RunColumns
    spec: SamplingSpec
    requests: list[Request]


@dataclass(frozen=True)
class Supports:
    """What an engine can do; a run asking for more is refused at start, by name."""

    seeds: bool  # each sample's own seed is honoured (its text the same whichever batch draws it)
    logprobs: bool  # the sampled tokens' logprobs (sampling.logprobs >= 1)
    top_logprobs: bool  # each step's top-k logprobs (sampling.logprobs >= 2)
    branches: bool  # CoT-decoding: the first token's top-k, each continued greedily
    prompt_ids: bool  # prompts sent as token ids, counted before they are sent


@dataclass(frozen=True)
class Ready:
    """An engine's report once built: a line saying what it runs, what it supports, a warning if it will be slow
    or unfaithful, and the dtype and ISA it computes in (None for a server: those are the server's)."""

    line: str
    supports: Supports
    warning: Optional[str] = None
    precision: Optional[dict[str, str]] = None  # {"dtype": ..., "isa": ...}, recorded in the run's config.yaml


class ReplicaStartError(MarginalError, RuntimeError):
    """A replica could not start (bad model path, not enough memory, no resources)."""


class ModelNotFoundError(MarginalError, FileNotFoundError):
    """model.path names neither a local folder nor a model in the Hugging Face cache."""


class ClusterJoinError(MarginalError, ConnectionError):
    """The cluster at a given address did not answer within cluster.join_timeout_s."""
