"""A test double of `EngineReplica` for tests and benchmarks: no model, canned chain-of-thought texts.

It is not a model and never reachable from the config: only code passes it as the replica class
(`jobs.sample.sample_runs([cfg], replica_class=EngineDouble)`). Each text is a deterministic function of the
request's seed: the gold answer 45% of the time, a wrong number 45%, no answer 10% (cut off at
`length`, after `max_tokens` tokens). Rows and shards are kept exactly as the real replica keeps them,
and its requests go through the real replica's engine loop, to a stand-in engine that finishes a request
after one step per token.

Options, read from the vLLM engine's `args` (`++engine.args.delay_s=0.2`; vLLM's own keys there are ignored):
  delay_s        sleep this long before each unit (slow replicas, for scheduling tests)
  step_s         sleep this long in each engine step (default 0): lets long samples take longer than short ones
  crash_on_unit  exit the process abruptly (`os._exit`) after the delay of this unit (1-based), unwritten
  crash_after    with crash_on_unit: first keep this many of the unit's rows (written to disk), then exit
  crash_marker   with crash_on_unit: only the replica that creates this file first crashes, and writes
                 its name there
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from types import SimpleNamespace
from typing import Any, Iterator

from actors.engine_loop import EngineLoop, Looped
from actors.precision import AUTO
from actors.replica import EngineReplica
from actors.rows import Completion, trace_row
from actors.shard_writer import Flush
from actors.vllm_engine import VllmEngine
from actors.work import Ready, Request, SamplingSpec, WorkUnit

CORRECT, WRONG = 45, 90  # seed % 100 below CORRECT: gold; below WRONG: a wrong number; else no answer
WRONG_OFFSETS = (1, -1, 2, 10, -3)  # wrong answers cluster on a few near misses, as a model's do
MAX_BATCH = 256  # requests the stand-in engine advances per step, as vLLM's CPU max_num_seqs


class EngineDouble(EngineReplica):
    """A stand-in replica whose texts and timings cost microseconds; a test double, not a model."""

    clock = staticmethod(time.process_time)  # CPU time: many doubles share few cores

    def __init__(self, engine: str, settings: dict[str, Any], flush: Flush):
        options = settings["args"]
        self.engines = {engine: CannedEngine}
        super().__init__(engine, settings, flush)
        self.delay_s = float(options.get("delay_s", 0))
        self.crash_on_unit = options.get("crash_on_unit")
        self.crash_after = int(options.get("crash_after", 0))
        self.crash_marker = options.get("crash_marker")
        self.units = 0
        self.units_lock = threading.Lock()

    def run(self, unit: WorkUnit) -> dict[str, Any]:
        """Serve a unit like the real replica, after the configured delay or crash."""
        with self.units_lock:
            self.units += 1
            number = self.units
        time.sleep(self.delay_s)
        if number == self.crash_on_unit and self._claim_crash():
            if self.crash_after:  # mid-unit, once part of it is on disk
                for row in itertools.islice(self.engine.generate(unit.requests, unit.spec), self.crash_after):
                    self.keep(unit, row)
                self.writer.sync()
            os._exit(1)
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


class CannedEngine(Looped):
    """The engine of the double: canned completions through the real engine loop, to a stand-in LLMEngine."""

    def __init__(self, settings: dict[str, Any]):
        self.dtype = str(settings["args"].get("dtype", AUTO))  # no model: the dtype as given
        self.loop = EngineLoop(lambda: DoubleEngine(float(settings["args"].get("step_s", 0))), lambda _: MAX_BATCH)

    def ready(self) -> Ready:
        return Ready(f"dtype {self.dtype}, a test double", VllmEngine.supports, None,
                     {"dtype": self.dtype, "isa": "none"})

    def generate(self, requests: list[Request], spec: SamplingSpec) -> Iterator[dict[str, Any]]:
        """One row per request as it finishes, its text drawn from the request's seed, by the stand-in engine."""
        completions = [completion(r.seed, r.gold, spec.max_tokens) for r in requests]
        params = [SimpleNamespace(max_tokens=spec.max_tokens)] * len(requests)
        for index, out in self.loop.stream(completions, params):
            request, done = requests[index], out.outputs[0]
            yield trace_row(request, spec, len(request.question) // 4,
                            Completion(done.text, done.num_tokens, done.finish_reason, done.cumulative_logprob))


class DoubleEngine:
    """The calls of vLLM's `LLMEngine` the engine loop makes, for completions made in advance: with `step_s`, a
    request finishes after one step per token, at most MAX_BATCH requests advancing per step; without, every
    request finishes in the next step."""

    def __init__(self, step_s: float):
        self.step_s = step_s
        self.running: dict[str, list[Any]] = {}  # request id -> [completion, steps left]; oldest first

    def add_request(self, request_id: str, prompt: SimpleNamespace, params: Any) -> None:
        self.running[request_id] = [prompt, max(1, prompt.num_tokens) if self.step_s else 1]

    def abort_request(self, request_ids: list[str]) -> None:
        for request_id in request_ids:
            self.running.pop(request_id, None)

    def has_unfinished_requests(self) -> bool:
        return bool(self.running)

    def step(self) -> list[SimpleNamespace]:
        time.sleep(self.step_s)
        finished = []
        for request_id, entry in list(itertools.islice(self.running.items(), MAX_BATCH)):
            entry[1] -= 1
            if entry[1] == 0:
                del self.running[request_id]
                finished.append(SimpleNamespace(request_id=request_id, finished=True, outputs=[entry[0]]))
        return finished


def completion(seed: int, gold: str, max_tokens: int) -> SimpleNamespace:
    """A CoT-like completion fixed by `seed`."""
    outcome, steps, a, b = seed % 100, 2 + (seed >> 7) % 5, (seed >> 10) % 90 + 2, (seed >> 17) % 9 + 1
    lines = ["Let's think step by step."]
    lines += [f"Step {i + 1}: {a + i * b} + {b} = {a + (i + 1) * b}." for i in range(steps)]
    if outcome < WRONG:
        answer = gold if outcome < CORRECT else wrong_answer(gold, seed >> 24)
        lines += [f"So the result is {answer}.", f"The answer is {answer}."]
    else:
        lines.append("Then we need to check the")
    text = "\n".join(lines)
    tokens = min(len(text) // 4, max_tokens) if outcome < WRONG else max_tokens  # a cut-off sample ran to the cap
    return SimpleNamespace(text=text, num_tokens=tokens, finish_reason="stop" if outcome < WRONG else "length",
                           cumulative_logprob=-0.05 * tokens - (seed >> 40) % 100 / 10)


def wrong_answer(gold: str, bits: int) -> str:
    """A near miss of a numeric gold, else a small number."""
    offset = WRONG_OFFSETS[bits % len(WRONG_OFFSETS)]
    try:
        return str(int(gold) + offset)
    except ValueError:
        return str(bits % 50 + 1)
