"""Continuous admission: one thread steps a vLLM engine; callers on other threads add requests and wait.

A replica serves several work units at once (a threaded Ray actor). Each unit's `stream` queues its
requests here; the engine thread admits them between two engine steps, so a unit's requests join the
running batch as soon as they arrive instead of waiting for the previous unit's longest sample, and
hands each output back the step it finishes, so a unit keeps its samples as they end, not at its longest.
Only the engine thread touches the engine, and it builds the engine too: vLLM's CPU backend binds its
OpenMP threads to the thread that loads the model, so a step from any other thread runs slower (0.84 of the
speed, measured in docs/benchmarks.md). It uses vLLM's own engine calls, those `LLM.generate` is
built on: `LLMEngine.add_request` and `LLMEngine.step`. Callers pass parameters with
`output_kind=FINAL_ONLY`, as `LLM.generate` sets them, so that a step returns only finished requests.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence


@dataclass
class _Batch:
    """One caller's requests; their outputs (index, output), or the engine's error, queue up as they finish."""

    prompts: Sequence[Any]
    params: Sequence[Any]
    finished: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)


class EngineLoop:
    """Steps `engine` (a vLLM `LLMEngine`) in a thread of its own, for any number of concurrent `generate` calls."""

    def __init__(self, build: Callable[[], Any], max_batch: Callable[[Any], int]):
        """Build the engine with `build()` on the engine thread, and wait until it is loaded (or raise its error);
        `max_batch(engine)` is its max_num_seqs: requests beyond it wait in its queue."""
        self.engine: Any = None
        self.max_batch = 0
        self._arrivals: queue.SimpleQueue[_Batch] = queue.SimpleQueue()
        self._slots: dict[str, tuple[_Batch, int]] = {}  # request id -> (its batch, its index there); oldest first
        self._made: dict[str, list[int]] = {}  # request id -> [tokens so far (an estimate), its max_tokens]
        self._lock = threading.Lock()  # guards _slots and _made: `running` reads them on other threads
        self._ids = itertools.count()
        self.busy_s = 0.0  # seconds spent in engine steps
        self.batch_s = 0.0  # the running batch's size integrated over those seconds
        self.generated = 0  # tokens generated so far, estimated as the running batch summed over steps
        self.broken: BaseException | None = None  # the error that stopped the engine, if one did
        loaded: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
        threading.Thread(target=self._serve, args=(build, max_batch, loaded), name="engine-loop", daemon=True).start()
        error = loaded.get()
        if error is not None:
            raise error

    def stream(self, prompts: Sequence[Any], params: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        """(index of its prompt, finished `RequestOutput`) of every prompt, in the order they finish."""
        if not prompts:
            return
        batch = _Batch(prompts, params)
        self._arrivals.put(batch)
        for _ in prompts:
            item = batch.finished.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    def generate(self, prompts: Sequence[Any], params: Sequence[Any]) -> list[Any]:
        """The finished `RequestOutput` of every prompt, in order, as `LLM.generate` returns them."""
        outputs = [None] * len(prompts)
        for index, output in self.stream(prompts, params):
            outputs[index] = output
        return outputs

    def mean_batch(self) -> float:
        """The running batch's mean size over the time the engine stepped."""
        return self.batch_s / self.busy_s if self.busy_s else 0.0

    def activity(self) -> dict[str, int]:
        """Requests in the engine now (running or queued) and tokens generated so far (an estimate)."""
        return {"in_flight": len(self._slots), "generated": self.generated}

    def running(self) -> list[tuple[int, int]]:
        """(tokens so far, max_tokens) of each request in the engine, queued ones at 0 tokens so far."""
        with self._lock:
            return [(made, cap) for made, cap in self._made.values()]

    def _serve(self, build: Callable[[], Any], max_batch: Callable[[Any], int],
               loaded: queue.SimpleQueue[BaseException | None]) -> None:
        try:
            self.engine = build()
            self.max_batch = max_batch(self.engine)
        except BaseException as error:  # the caller raises it, with its traceback
            loaded.put(error)
            return
        loaded.put(None)
        while True:
            self._admit(wait=self.broken is not None or not self.engine.has_unfinished_requests())
            if self.broken is not None:
                continue
            running = min(len(self._slots), self.max_batch)
            start = time.perf_counter()
            try:
                outputs = self.engine.step()
            except BaseException as error:  # the engine is broken: every caller, waiting or to come, gets the error
                self.broken = error
                with self._lock:
                    for batch, _ in self._slots.values():
                        self._fail(batch, error)
                    self._slots.clear()
                    self._made.clear()
                continue
            took = time.perf_counter() - start
            self.busy_s, self.batch_s = self.busy_s + took, self.batch_s + running * took
            self.generated += running
            with self._lock:
                for request_id in itertools.islice(self._made, running):  # the oldest run: vLLM admits first come first
                    self._made[request_id][0] += 1
                for output in outputs:
                    if output.finished:
                        self._finish(output)

    def _admit(self, wait: bool) -> None:
        """Add every batch that has arrived to the engine; with `wait`, block until one arrives."""
        while True:
            try:
                batch = self._arrivals.get(block=wait)
            except queue.Empty:
                return
            wait = False
            if self.broken is not None:
                self._fail(batch, RuntimeError(f"the replica's engine failed earlier: {self.broken!r}"))
                continue
            ids = [str(next(self._ids)) for _ in batch.prompts]
            try:
                for request_id, prompt, params in zip(ids, batch.prompts, batch.params):
                    self.engine.add_request(request_id, prompt, params)
            except BaseException as error:  # a bad request fails its own caller only, and none of its batch runs
                self.engine.abort_request(ids)
                self._fail(batch, error)
                continue
            with self._lock:
                self._slots.update((request_id, (batch, index)) for index, request_id in enumerate(ids))
                self._made.update((request_id, [0, getattr(p, "max_tokens", None) or 0])
                                  for request_id, p in zip(ids, batch.params))

    def _finish(self, output: Any) -> None:
        batch, index = self._slots.pop(output.request_id)
        del self._made[output.request_id]
        batch.finished.put((index, output))

    @staticmethod
    def _fail(batch: _Batch, error: BaseException) -> None:
        batch.finished.put(error)


class Looped:
    """An engine's counters, for an engine whose requests go through an EngineLoop (`self.loop`)."""

    loop: EngineLoop

    def activity(self) -> dict[str, int]:
        return self.loop.activity()

    def running(self) -> list[tuple[int, int]]:
        return self.loop.running()

    def mean_batch(self) -> float:
        return self.loop.mean_batch()
