"""Faults: dying replicas and drivers, replicas that cannot start, pathological prompts, unwritable run_dirs.

Scheduling faults run on the engine double (actors/double.py) in-process; the rest run the real job
(`python -m jobs.sample`) on the real vLLM engine, with few problems and short samples.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
from ray import get as ray_get

from actors.double import EngineDouble
from jobs.cli import compose
from jobs.sample import sample_runs
from storage.traces import RunDirError, done_samples, open_traces, read_columns, write_shard

ROOT = Path(__file__).resolve().parents[1]


def sample_keys(run_dir: Path) -> list[tuple[str, int]]:
    """(problem_id, sample_idx) of every row written, duplicates included."""
    table = read_columns(str(run_dir), ["problem_id", "sample_idx"])
    return list(zip(table["problem_id"].to_pylist(), table["sample_idx"].to_pylist()))


def expected_keys(cfg) -> set[tuple[str, int]]:
    from jobs.sample import prepare_problems

    problems, _ = prepare_problems(cfg)
    return {(p.problem_id, i) for p in problems for i in range(cfg.sampling.n)}


def capture(func, *args, **kwargs) -> list[BaseException]:
    """The exception `func` raises, as a list of at most one."""
    try:
        func(*args, **kwargs)
    except BaseException as error:  # noqa: BLE001 - handed to the test thread
        return [error]
    return []


def in_background(func, *args, **kwargs) -> tuple[threading.Thread, list[BaseException]]:
    """`func` running in a thread, and the list its exception (if any) lands in."""
    outcome: list[BaseException] = []
    thread = threading.Thread(target=lambda: outcome.extend(capture(func, *args, **kwargs)))
    thread.start()
    return thread, outcome


def wait_for(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# --- scheduling, on the engine double ---------------------------------------------------------


@pytest.fixture
def double_run(tmp_path):
    """A config for 6 problems x 8 samples in units of 4 on two doubles, given extra overrides."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")  # the double loads nothing; check_model wants a model folder

    def make(*overrides: str):
        return compose(f"run_dir={tmp_path}/run", f"model.path={model}", "tracking=none", "dataset.limit=6",
                           "sampling.n=8", "replicas=2", "cluster.cpus_per_replica=1", "cluster.unit_size=4",
                           "++engine.args.delay_s=0.05", *overrides)

    return make


def test_a_replica_dead_after_keeping_part_of_a_unit_has_only_the_rest_redone_and_every_sample_is_written_once(
        local_ray, double_run, tmp_path):
    marker = tmp_path / "crashed"
    cfg = double_run("+engine.args.crash_on_unit=2", "+engine.args.crash_after=3", f"+engine.args.crash_marker={marker}",
                     "cluster.max_inflight=1")  # one unit at a time: the dead replica kept its first unit, then 3
    [summary] = sample_runs([cfg], replica_class=EngineDouble)
    keys = sample_keys(cfg.run_dir)
    assert len(keys) == len(set(keys)) and set(keys) == expected_keys(cfg)
    assert summary.samples == 48 and summary.errors == 0
    crashed = marker.read_text()  # the replica that died mid-run
    by_replica = Counter(open_traces(cfg.run_dir).to_table(columns=["replica"])["replica"].to_pylist())
    assert by_replica[crashed] == 4 + 3  # its first unit, and 3 of the 4 samples of its second: kept, not redone
    assert len(set(by_replica) - {crashed}) == 2  # the other first replica and the one started in the dead one's place


def test_a_replica_the_memory_monitor_killed_is_replaced_like_a_dead_one(local_ray, double_run, tmp_path, monkeypatch):
    """Ray's memory monitor kills a worker and its calls raise OutOfMemoryError, not RayActorError."""
    import ray
    from ray.exceptions import OutOfMemoryError, RayActorError

    real_get = ray.get

    def get_as_if_oom(refs, **kwargs):
        try:
            return real_get(refs, **kwargs)
        except RayActorError as error:
            raise OutOfMemoryError("1 worker(s) were killed due to the node running low on memory.") from error

    monkeypatch.setattr("actors.pool.ray.get", get_as_if_oom)
    marker = tmp_path / "crashed"
    cfg = double_run("+engine.args.crash_on_unit=2", f"+engine.args.crash_marker={marker}", "cluster.max_inflight=1")
    [summary] = sample_runs([cfg], replica_class=EngineDouble)
    keys = sample_keys(cfg.run_dir)
    assert len(keys) == len(set(keys)) and set(keys) == expected_keys(cfg) and summary.samples == 48
    by_replica = Counter(open_traces(cfg.run_dir).to_table(columns=["replica"])["replica"].to_pylist())
    assert len(set(by_replica) - {marker.read_text()}) == 2  # the other first replica and the one in its place


def test_a_small_run_is_split_so_that_every_replica_gets_work(local_ray, double_run):
    cfg = double_run("cluster.unit_size=256")  # 48 samples, 2 replicas: two units of 24, not one of 48
    [summary] = sample_runs([cfg], replica_class=EngineDouble)
    by_replica = Counter(open_traces(cfg.run_dir).to_table(columns=["replica"])["replica"].to_pylist())
    assert summary.samples == 48 and sorted(by_replica.values()) == [24, 24]


def test_when_every_replica_dies_the_run_fails_with_the_cause_and_keeps_its_shards(local_ray, double_run):
    cfg = double_run("+engine.args.crash_on_unit=3", "cluster.max_replica_restarts=1", "cluster.max_inflight=1")
    with pytest.raises(RuntimeError, match=r"every replica died \(1 replaced, cluster.max_replica_restarts=1\).*rerun to resume"):
        sample_runs([cfg], replica_class=EngineDouble)
    finished = sample_keys(cfg.run_dir)
    assert finished and len(finished) == len(set(finished)) < 48  # each replica's first two units survived


def test_in_flight_work_is_bounded_by_replicas_times_max_inflight(local_ray, double_run):
    from actors import cluster
    from actors.work import RunColumns
    from jobs.sample import plan_units, prepare_problems, sampling_spec

    cfg = double_run("cluster.max_inflight=3", "dataset.limit=20")
    problems, prompts = prepare_problems(cfg)
    pulled = 0

    def units():
        nonlocal pulled
        for unit in plan_units(problems, prompts, 8, 0, 4, {}, cfg.run_dir, RunColumns("r", "m", "p"),
                               sampling_spec(cfg)):
            pulled += 1
            yield unit

    done, most = 0, 0
    for _ in cluster.serve(cfg.cluster, 2, cluster.ReplicaResources(1, 0), "vllm", {"args": {"delay_s": 0.02}}, units(),
                            EngineDouble):
        done += 1
        most = max(most, pulled - done)
    assert done == pulled == 40 and most <= 2 * 3


def test_replicas_run_at_normal_priority_not_rays_worker_niceness(local_ray, double_run):
    from actors import cluster, pool

    cfg = double_run()
    [replica] = pool.start(cluster.replica_factory(cfg.cluster, cluster.ReplicaResources(1, 0), "vllm", {"args": {}}, EngineDouble), 1, 60)
    pid = int(ray_get(replica.ready.remote())["replica"].rsplit(":", 1)[1])
    assert psutil.Process(pid).nice() == 0


def test_a_run_dir_that_becomes_unwritable_stops_the_run_with_an_error_naming_it(local_ray, double_run, tmp_path):
    cfg = double_run("cluster.unit_size=2", "++engine.args.delay_s=0.1")
    traces = Path(cfg.run_dir) / "traces"
    job, outcome = in_background(sample_runs, [cfg], replica_class=EngineDouble)
    wait_for(lambda: any(traces.glob("*.parquet")), timeout_s=60)
    traces.rename(tmp_path / "traces.moved")
    traces.write_text("a file where the traces folder was: every later shard write fails")
    job.join(timeout=60)
    assert not job.is_alive(), "the job did not stop within 60 s"
    [error] = outcome
    assert isinstance(error, RunDirError) and f"run_dir={cfg.run_dir}: cannot write shard" in str(error)


def test_a_failed_write_names_the_run_dir_and_leaves_nothing_a_resume_would_read(tmp_path, monkeypatch):
    import storage.traces as traces

    def disk_full(table, where, **kwargs):
        kwargs["filesystem"].open_output_stream(where).write(b"PAR1 half a shard")
        raise OSError(28, "No space left on device")

    write_shard([{"problem_id": "a", "sample_idx": 0, "text": "t", "gold": "1"}], str(tmp_path), "part-a")
    monkeypatch.setattr(traces.pq, "write_table", disk_full)
    with pytest.raises(RunDirError, match=rf"run_dir={tmp_path}: cannot write shard part-b.parquet: .*No space left"):
        write_shard([{"problem_id": "a", "sample_idx": 1, "text": "t", "gold": "1"}], str(tmp_path), "part-b")
    assert sorted(p.name for p in (tmp_path / "traces").iterdir()) == ["part-a.parquet"]
    assert done_samples(str(tmp_path)) == {"a": {0}}


def test_what_is_done_takes_a_bit_per_sample_index_not_a_python_int(tmp_path):
    write_shard([{"problem_id": "a", "sample_idx": i, "text": "t", "gold": "1"} for i in range(0, 20_000, 2)],
                str(tmp_path), "part-a")
    done = done_samples(str(tmp_path))["a"]
    assert done == set(range(0, 20_000, 2)) and len(done) == 10_000 and 1 not in done and 19_998 in done
    assert len(done.bits) == 2_500  # bytes: 20,000 indices / 8


def test_a_resume_ignores_the_temp_file_of_a_write_killed_before_any_shard(tmp_path):
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / ".part-a.0123.tmp").write_bytes(b"PAR1 half")  # a replica killed mid-write
    assert done_samples(str(tmp_path)) == {}


# --- the real engine ----------------------------------------------------------------------------

ENGINE_RUN = ("model=smollm2_135m", "tracking=none", "sampling.max_tokens=16", "sampling.logprobs=0")


def run_job(*overrides: str, **popen) -> subprocess.Popen:
    """`python -m jobs.sample` as a user would start it."""
    return subprocess.Popen([sys.executable, "-m", "jobs.sample", *ENGINE_RUN, *overrides], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **popen)


def dead(pid: int) -> bool:
    """The process is gone, or killed and not yet reaped by its parent (a zombie)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def first_shard_replica(traces: Path) -> str:
    """The name (`address:pid`) of the replica that wrote the first shard to appear."""
    wait_for(lambda: any(traces.glob("*.parquet")), timeout_s=300)
    return open_traces(str(traces.parent)).to_table(columns=["replica"])["replica"][0].as_py()


@pytest.mark.engine
def test_a_sigkilled_vllm_replica_has_its_work_redone_elsewhere_and_every_sample_written_once(local_ray, tmp_path):
    # 12 units of one sample, one at a time per replica: most still wait when the first shard lands, and the pool
    # serves none while it starts the killed replica's replacement, so work is left for the replacement too.
    cfg = compose(f"run_dir={tmp_path}/run", *ENGINE_RUN, "dataset.limit=3", "sampling.n=4", "replicas=2",
                      "cluster.cpus_per_replica=1", "cluster.unit_size=1", "cluster.max_inflight=1")
    job, outcome = in_background(sample_runs, [cfg])
    killed = first_shard_replica(tmp_path / "run" / "traces")
    pid = int(killed.rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)
    job.join(timeout=600)
    assert not job.is_alive(), "the job did not finish within 600 s"
    assert outcome == []
    wait_for(lambda: dead(pid), timeout_s=30)
    keys = sample_keys(cfg.run_dir)
    assert len(keys) == len(set(keys)) and set(keys) == expected_keys(cfg)
    replicas = Counter(open_traces(cfg.run_dir).to_table(columns=["replica"])["replica"].to_pylist())
    # besides the killed one: the other first replica, and the one started in the killed one's place
    assert len(set(replicas) - {killed}) == 2, replicas


@pytest.mark.engine
def test_a_sigkilled_driver_resumes_without_recomputing_finished_samples(local_ray, tmp_path):
    # one unit at a time, so that work is left when the first shard lands
    run, overrides = tmp_path / "run", ("dataset.limit=2", "sampling.n=8", "cluster.unit_size=4", "cluster.max_inflight=1")
    driver = run_job(f"run_dir={run}", *overrides)
    wait_for(lambda: any((run / "traces").glob("*.parquet")) or driver.poll() is not None, timeout_s=300)
    ray_processes = psutil.Process(driver.pid).children(recursive=True)
    replica = [p for p in ray_processes if "EngineReplica" in " ".join(p.cmdline())]
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    _, alive = psutil.wait_procs(replica, timeout=30)
    assert replica and not alive, "the replica should die with its driver, writing nothing after it"
    for process in ray_processes:  # Ray's node agents may linger; they hold no work
        if process.is_running():
            process.kill()
    finished = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (run / "traces").glob("*.parquet")}
    done_before = len(sample_keys(run))
    assert 0 < done_before < 16, "the driver should die mid-run"

    cfg = compose(f"run_dir={run}", *ENGINE_RUN, *overrides)
    [summary] = sample_runs([cfg])
    assert (summary.skipped, summary.samples) == (done_before, 16 - done_before)
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (run / "traces").glob("*.parquet")
            if p.name in finished} == finished
    keys = sample_keys(run)
    assert len(keys) == len(set(keys)) and set(keys) == expected_keys(cfg)


@pytest.fixture
def corrupt_model(tmp_path) -> Path:
    """The embedded model's folder with its config.json cut short."""
    from actors.embedded_model import resolve_model_path

    folder = tmp_path / "corrupt-model"
    folder.mkdir()
    for file in Path(resolve_model_path("embedded://smollm2-135m-instruct")).iterdir():
        (folder / file.name).symlink_to(file)
    (folder / "config.json").unlink()
    (folder / "config.json").write_text('{"model_type": "llama", "hidden_size": ')
    return folder


@pytest.mark.engine
@pytest.mark.parametrize(
    "fault, overrides, cause",
    [
        ("corrupt config.json", ("model.path={corrupt}",), r"config file at '.*/config.json' is not a valid JSON file"),
        ("KV cache beyond memory", ("cluster.env.VLLM_CPU_KVCACHE_SPACE=100000",), r"less than requested memory for kv"),
    ],
)
def test_a_replica_that_cannot_start_fails_the_run_at_once_with_its_cause(local_ray, tmp_path, corrupt_model,
                                                                          fault, overrides, cause):
    from actors.pool import ReplicaStartError

    cfg = compose(f"run_dir={tmp_path}/run", *ENGINE_RUN, "dataset.limit=1", "sampling.n=1",
                      "cluster.startup_timeout_s=600", *(o.format(corrupt=corrupt_model) for o in overrides))
    start = time.monotonic()
    with pytest.raises(ReplicaStartError, match=rf"a replica failed to start: .*{cause}"):
        sample_runs([cfg])
    assert time.monotonic() - start < 120  # the engine's own failure, long before cluster.startup_timeout_s
    assert not (tmp_path / "run" / "traces").exists()


@pytest.mark.engine
def test_a_prompt_longer_than_the_context_fails_alone_with_its_reason(local_ray, tmp_path):
    data = tmp_path / "problems.jsonl"
    long_question = " ".join(f"word{i}" for i in range(3000)) + " How many words?"
    rows = [{"question": "What is 2 + 3?", "answer": "5"}, {"question": long_question, "answer": "3000"},
            {"question": "What is 4 * 5?", "answer": "20"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = compose(f"run_dir={tmp_path}/run", *ENGINE_RUN, "dataset=file", f"dataset.path={data}", "sampling.n=2",
                      "cluster.unit_size=3")
    [summary] = sample_runs([cfg])
    assert (summary.samples, summary.errors) == (6, 2)
    table = read_columns(cfg.run_dir, ["problem_id", "sample_idx", "finish_reason", "error", "text"])
    by_problem = {}
    for row in table.to_pylist():
        by_problem.setdefault(row["problem_id"], []).append(row)
    assert all(r["finish_reason"] == "error" and not r["text"] for r in by_problem["file/1"])
    assert all(re.fullmatch(r"prompt has \d{4,} tokens; the model's context \(max_model_len\) is 2048", r["error"])
               for r in by_problem["file/1"])
    assert all(r["finish_reason"] in ("stop", "length") and r["error"] is None and r["text"]
               for pid in ("file/0", "file/2") for r in by_problem[pid])
