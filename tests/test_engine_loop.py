"""Continuous admission: units share one engine, and a short one does not wait for a long one's tail."""

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray

from actors.cluster import ReplicaResources, replica_factory
from actors.double import DoubleEngine, EngineDouble, completion
from actors.engine_loop import EngineLoop
from actors.work import Request, RunColumns, SamplingSpec, WorkUnit
from jobs.cli import compose
from storage.traces import open_traces


def text(tokens: int) -> SimpleNamespace:
    return SimpleNamespace(text="x", token_ids=range(tokens), num_tokens=tokens)


class SteppedEngine(DoubleEngine):
    """Says when it has run its first step."""

    def __init__(self, step_s: float):
        super().__init__(step_s)
        self.stepped = threading.Event()

    def step(self):
        outputs = super().step()
        self.stepped.set()
        return outputs


def test_a_short_batch_admitted_while_a_long_one_runs_finishes_first_and_both_share_the_batch():
    loop = EngineLoop(lambda: SteppedEngine(step_s=0.002), lambda _: 256)
    finished = {}

    def call(name, tokens):
        outputs = loop.generate([text(tokens)] * 4, [None] * 4)
        finished[name] = time.monotonic()
        assert [len(o.outputs[0].token_ids) for o in outputs] == [tokens] * 4

    long = threading.Thread(target=call, args=("long", 400))
    long.start()
    assert loop.engine.stepped.wait(timeout=60)  # the long batch is running
    call("short", 5)
    long.join()
    assert finished["short"] < finished["long"] - 0.3
    assert loop.mean_batch() > 4  # the short batch ran beside the long one, not after it


def test_running_requests_count_their_tokens_oldest_first_and_queued_ones_wait_at_zero():
    seen = []  # loop.running() as each step begins

    class Recording(DoubleEngine):
        def step(self):
            seen.append(loop.running())
            return super().step()

    loop = EngineLoop(lambda: Recording(step_s=0.001), lambda _: 2)  # the loop counts 2 as running, the third queued
    outputs = loop.generate([text(3)] * 3, [SimpleNamespace(max_tokens=9)] * 3)
    assert len(outputs) == 3 and loop.running() == []
    assert seen == [[(0, 9)] * 3, [(1, 9), (1, 9), (0, 9)], [(2, 9), (2, 9), (0, 9)]]


def test_outputs_come_back_in_the_callers_order_whatever_order_they_finish_in():
    loop = EngineLoop(lambda: DoubleEngine(step_s=0.001), lambda _: 256)
    lengths = [30, 1, 12, 5, 1, 40]
    outputs = loop.generate([text(n) for n in lengths], [None] * len(lengths))
    assert [len(o.outputs[0].token_ids) for o in outputs] == lengths


def test_a_stream_hands_each_output_back_as_it_finishes_with_its_prompt_s_index():
    loop = EngineLoop(lambda: DoubleEngine(step_s=0.001), lambda _: 256)
    lengths = [30, 1, 12, 5, 2, 40]
    streamed = [(index, len(out.outputs[0].token_ids)) for index, out in loop.stream([text(n) for n in lengths],
                                                                                   [None] * len(lengths))]
    assert streamed == sorted(enumerate(lengths), key=lambda pair: pair[1])  # shortest first


class DyingEngine(DoubleEngine):
    """Its tenth step fails."""

    steps = 0

    def step(self):
        self.steps += 1
        if self.steps == 10:
            raise RuntimeError("engine died")
        return super().step()


def test_a_stream_yields_what_finished_before_the_engine_broke_then_raises():
    loop = EngineLoop(lambda: DyingEngine(step_s=0.001), lambda _: 256)
    stream = loop.stream([text(500), text(3)], [None, None])
    assert next(stream)[0] == 1  # the short one finished at step 3...
    with pytest.raises(RuntimeError, match="engine died"):  # ... the long one never will
        next(stream)


class BrokenEngine(DoubleEngine):
    """Its step fails once a long request is running; a request of 0 tokens is refused when added."""

    def add_request(self, request_id, prompt, params):
        if len(prompt.token_ids) == 0:
            raise ValueError("empty request")
        super().add_request(request_id, prompt, params)

    def step(self):
        if any(left > 100 for _, left in self.running.values()):
            raise RuntimeError("engine died")
        return super().step()


def test_a_refused_batch_fails_alone_and_an_engine_failure_reaches_every_waiting_and_later_caller():
    loop = EngineLoop(lambda: BrokenEngine(step_s=0.001), lambda _: 256)
    with pytest.raises(ValueError, match="empty request"):
        loop.generate([text(2), text(0)], [None, None])
    assert not loop.engine.running  # the refused batch's other request was taken back
    assert len(loop.generate([text(3)], [None])) == 1  # the engine still serves others
    with pytest.raises(RuntimeError, match="engine died"):
        loop.generate([text(500)], [None])
    with pytest.raises(RuntimeError, match="failed earlier: RuntimeError\\('engine died'\\)"):
        loop.generate([text(3)], [None])


def seeds(outcome: range, count: int) -> list[int]:
    """`count` seeds whose double completion has the given outcome (seed % 100): gold below 45, no answer from 90."""
    return [s for s in range(10_000) if s % 100 in outcome][:count]


def unit(tmp_path: Path, name: str, seed_list: list[int]) -> WorkUnit:
    spec = SamplingSpec(temperature=0.7, top_p=0.95, max_tokens=600, logprobs=0, decoding="sample", branches=1,
                        answer_format="number")
    requests = [Request(f"p{i}", "What is 2 + 2?", "4", "What is 2 + 2?", i, s) for i, s in enumerate(seed_list)]
    return WorkUnit(str(tmp_path / "run"), RunColumns(name, "double", "cot"), spec, requests)


def test_a_replica_keeps_a_short_unit_s_rows_while_a_long_unit_sent_before_it_still_runs(local_ray, tmp_path):
    cluster = compose("cluster.cpus_per_replica=1", "cluster.max_inflight=2").cluster
    replica = replica_factory(cluster, ReplicaResources(1, 0), "vllm", {"args": {"step_s": 0.005}}, EngineDouble)()
    long_unit = unit(tmp_path, "long", seeds(range(90, 100), 8))  # no answer: each runs to max_tokens, 600 steps
    short_unit = unit(tmp_path, "short", seeds(range(0, 45), 8))
    assert all(completion(r.seed, r.gold, 600).num_tokens < 60 for r in short_unit.requests)
    long_ref = replica.run.remote(long_unit)
    short_ref = replica.run.remote(short_unit)
    [first], _ = ray.wait([long_ref, short_ref], num_returns=1)
    assert first == short_ref
    kept = open_traces(str(tmp_path / "run")).to_table(columns=["run_id"])["run_id"].to_pylist()
    assert kept == ["short"] * 8  # its rows are on disk, and none of the long unit's yet
    long_result = ray.get(long_ref)
    assert long_result["rows"] == 8 and long_result["tokens"] == 8 * 600
    assert long_result["mean_batch"] > 8  # the two units shared the engine's batch


class ThreadRecordingEngine(DoubleEngine):
    """Records the threads that build and step it."""

    def __init__(self, step_s: float):
        super().__init__(step_s)
        self.threads = {"build": threading.get_ident(), "step": set()}

    def step(self):
        self.threads["step"].add(threading.get_ident())
        return super().step()


def test_the_engine_is_built_on_the_thread_that_steps_it_and_a_build_error_reaches_the_caller():
    loop = EngineLoop(lambda: ThreadRecordingEngine(step_s=0.001), lambda _: 256)
    loop.generate([text(3)], [None])
    assert loop.engine.threads["step"] == {loop.engine.threads["build"]} != {threading.get_ident()}

    def build():
        raise FileNotFoundError("no model at /nowhere")

    with pytest.raises(FileNotFoundError, match="/nowhere"):
        EngineLoop(build, lambda _: 256)
