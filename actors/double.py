"""A test double of `EngineReplica` for tests and benchmarks: no model, canned chain-of-thought texts.

It is not a model and never reachable from the config: only code passes it as the replica class
(`jobs.sample.sample_runs([cfg], replica_class=EngineDouble)`). Each text is a deterministic function of the
request's seed: the gold answer 45% of the time, a wrong number 45%, no answer 10% (cut off at
`length`). Rows and shards are written exactly as the real replica writes them.

Options, read from `engine_kwargs` (vLLM's own keys there are ignored):
  delay_s        sleep this long before each unit (slow replicas, for scheduling tests)
  crash_on_unit  exit the process abruptly (`os._exit`) after the delay of this unit (1-based), unwritten
  crash_marker   with crash_on_unit: only the replica that creates this file first crashes, and writes
                 its name there
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace
from typing import Any

from actors.replica import EngineReplica, replica_name
from actors.work import Request, SamplingSpec, WorkUnit

CORRECT, WRONG = 45, 90  # seed % 100 below CORRECT: gold; below WRONG: a wrong number; else no answer
WRONG_OFFSETS = (1, -1, 2, 10, -3)  # wrong answers cluster on a few near misses, as a model's do


class EngineDouble(EngineReplica):
    """A stand-in replica whose texts and timings cost microseconds; a test double, not a model."""

    clock = staticmethod(time.process_time)  # CPU time: many doubles share few cores

    def __init__(self, model_path: str, engine_kwargs: dict[str, Any]):
        self.name = replica_name()
        self.delay_s = float(engine_kwargs.get("delay_s", 0))
        self.crash_on_unit = engine_kwargs.get("crash_on_unit")
        self.crash_marker = engine_kwargs.get("crash_marker")
        self.units = 0

    def run(self, unit: WorkUnit) -> dict[str, Any]:
        """Serve a unit like the real replica, after the configured delay or crash."""
        self.units += 1
        time.sleep(self.delay_s)
        if self.units == self.crash_on_unit and self._claim_crash():
            os._exit(1)  # mid-unit, before its shard is written
        return super().run(unit)

    def _claim_crash(self) -> bool:
        """Whether this replica is the one to crash: the first to create crash_marker, if one is set."""
        if not self.crash_marker:
            return True
        try:
            marker = os.open(self.crash_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.write(marker, self.name.encode())
        os.close(marker)
        return True

    def generate(self, requests: list[Request], spec: SamplingSpec) -> list[dict[str, Any]]:
        """One row per request, its text drawn from the request's seed."""
        return [self._row(r, spec, len(r.question) // 4, completion(r.seed, r.gold, spec.max_tokens)) for r in requests]


def completion(seed: int, gold: str, max_tokens: int) -> SimpleNamespace:
    """A CoT-like completion fixed by `seed`, shaped like a vLLM CompletionOutput."""
    outcome, steps, a, b = seed % 100, 2 + (seed >> 7) % 5, (seed >> 10) % 90 + 2, (seed >> 17) % 9 + 1
    lines = ["Let's think step by step."]
    lines += [f"Step {i + 1}: {a + i * b} + {b} = {a + (i + 1) * b}." for i in range(steps)]
    if outcome < WRONG:
        answer = gold if outcome < CORRECT else wrong_answer(gold, seed >> 24)
        lines += [f"So the result is {answer}.", f"The answer is {answer}."]
    else:
        lines.append("Then we need to check the")
    text = "\n".join(lines)
    tokens = min(len(text) // 4, max_tokens)
    return SimpleNamespace(
        text=text,
        token_ids=range(tokens),
        finish_reason="stop" if outcome < WRONG else "length",
        cumulative_logprob=-0.05 * tokens - (seed >> 40) % 100 / 10,
        logprobs=None,
    )


def wrong_answer(gold: str, bits: int) -> str:
    """A near miss of a numeric gold, else a small number."""
    offset = WRONG_OFFSETS[bits % len(WRONG_OFFSETS)]
    try:
        return str(int(gold) + offset)
    except ValueError:
        return str(bits % 50 + 1)
