"""Disk faults: a damaged shard is quarantined and redone on resume (and refused by aggregation), and a run_dir
has one writer at a time (storage.lease). Runs on the engine double (actors/double.py), in-process or as a job."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors.double import EngineDouble
from jobs.aggregate import aggregate_run
from jobs.cli import compose
from jobs.sample import sample_runs
from storage import lease as lease_module
from storage.lease import HOST, Lease, LeaseError, RunLeases
from storage.traces import DamagedShardError, done_samples, read_columns, write_shard

ROOT = Path(__file__).resolve().parents[1]


def sample_keys(run_dir: str) -> list[tuple[str, int]]:
    """(problem_id, sample_idx) of every row written, duplicates included."""
    table = read_columns(run_dir, ["problem_id", "sample_idx"])
    return list(zip(table["problem_id"].to_pylist(), table["sample_idx"].to_pylist()))


def expected_keys(cfg) -> set[tuple[str, int]]:
    from jobs.sample import prepare_problems

    problems, _ = prepare_problems(cfg)
    return {(p.problem_id, i) for p in problems for i in range(cfg.sampling.n)}


@pytest.fixture
def model(tmp_path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")  # the double loads nothing; check_model wants a model folder
    return folder


def run_overrides(run_dir: str, model: Path, *extra: str) -> tuple[str, ...]:
    """6 problems x 8 samples in units of 4 on two doubles."""
    return (f"run_dir={run_dir}", f"model.path={model}", "tracking=none", "dataset.limit=6", "sampling.n=8",
            "replicas=2", "cluster.cpus_per_replica=1", "cluster.unit_size=4", *extra)


# --- a damaged shard --------------------------------------------------------------------------------


def cut_in_half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def zero_bytes(data: bytes) -> bytes:
    return b""


def random_bytes(data: bytes) -> bytes:
    return os.urandom(len(data))


def one_byte_flipped(data: bytes) -> bytes:
    """Bit rot in the texts' last data page: the footer is intact, that page's checksum is not."""
    file = pq.ParquetFile(pa.BufferReader(data))
    column = file.metadata.row_group(0).column(file.schema_arrow.names.index("text"))
    end = (column.dictionary_page_offset or column.data_page_offset) + column.total_compressed_size
    flipped = bytearray(data)
    flipped[end - 1] ^= 0xFF
    return bytes(flipped)


DAMAGES = [cut_in_half, zero_bytes, random_bytes, one_byte_flipped]


@pytest.fixture(scope="module")
def sampled(local_ray, tmp_path_factory) -> tuple[Path, Path]:
    """A finished run of 6 problems x 8 samples (in units of 4) and the model folder it names; copy it to damage it."""
    root = tmp_path_factory.mktemp("sampled")
    model = root / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    # one unit at a time per replica: each unit's rows are one shard, so there are shards enough to damage
    sample_runs([compose(*run_overrides(str(root / "run"), model, "cluster.max_inflight=1"))], replica_class=EngineDouble)
    return root / "run", model


@pytest.mark.parametrize("scheme", ["", "file://"], ids=["path", "uri"])
def test_damaged_shards_are_quarantined_and_redone_with_every_sample_once(sampled, tmp_path, capfd, scheme):
    shutil.copytree(sampled[0], tmp_path / "run")
    run_dir = f"{scheme}{tmp_path}/run"
    cfg = compose(*run_overrides(run_dir, sampled[1]))
    traces = tmp_path / "run" / "traces"
    shards = sorted(traces.glob("*.parquet"))[1:1 + len(DAMAGES)]
    held = sum(pq.read_metadata(shard).num_rows for shard in shards)
    damaged = {shard: damage(shard.read_bytes()) for shard, damage in zip(shards, DAMAGES)}
    for shard, data in damaged.items():
        shard.write_bytes(data)
    capfd.readouterr()

    [summary] = sample_runs([cfg], replica_class=EngineDouble)

    assert len(shards) == len(DAMAGES) and (summary.skipped, summary.samples) == (48 - held, held)
    keys = sample_keys(run_dir)
    assert len(keys) == len(set(keys)) and set(keys) == expected_keys(cfg)
    assert {shard: (traces / ".quarantine" / shard.name).read_bytes() for shard in shards} == damaged
    logged = (traces / ".quarantine" / "quarantine.log").read_text().splitlines()
    assert [line.split()[1] for line in logged] == [f"{shard.name}:" for shard in shards]
    warnings = [line for line in capfd.readouterr().err.splitlines() if line.startswith("[sample] warning")]
    assert len(warnings) == len(shards)
    for shard, warning in zip(shards, warnings):
        assert warning.startswith(f"[sample] warning: {shard} cannot be read whole (")
        assert warning.endswith(f"moved to {run_dir}/traces/.quarantine/, its samples are sampled again")


def test_a_resume_scan_quarantines_nothing_when_every_shard_is_whole(tmp_path):
    from storage import rundir

    write_shard([{"problem_id": "a", "sample_idx": i, "text": "t", "gold": "1"} for i in range(3)], str(tmp_path), "part-a")
    done, damaged = rundir.resume_scan(str(tmp_path))
    assert done == {"a": {0, 1, 2}} and damaged == [] and not (tmp_path / "traces" / ".quarantine").exists()


def two_shard_run(run: Path) -> list[Path]:
    """A run of two shards, problems a and b, as the sampler writes them."""
    for pid in ("a", "b"):
        write_shard([{"problem_id": pid, "sample_idx": i, "text": f"The answer is {i}.", "gold": "1", "num_tokens": 5}
                     for i in range(4)], str(run), f"part-{pid}")
    return sorted((run / "traces").glob("*.parquet"))


@pytest.mark.parametrize("which", [0, 1], ids=["first shard", "last shard"])
def test_aggregation_refuses_a_damaged_shard_naming_it_and_the_repair(tmp_path, which):
    shard = two_shard_run(tmp_path / "run")[which]
    shard.write_bytes(cut_in_half(shard.read_bytes()))
    for read in (lambda: aggregate_run(str(tmp_path / "run"), "number", "mean"),
                 lambda: read_columns(str(tmp_path / "run"), ["text"]), lambda: done_samples(str(tmp_path / "run"))):
        with pytest.raises(DamagedShardError, match=rf"^{re.escape(str(shard))}: trace shard cannot be read whole \(\d+ bytes: Parquet "
                                                    rf"magic bytes not found in footer\); rerun jobs.sample with the same run_dir"):
            read()
    assert not (tmp_path / "run" / "answers.parquet").exists()


def test_jobs_aggregate_ends_with_one_line_naming_the_shard_and_the_repair(tmp_path):
    shard = two_shard_run(tmp_path / "run")[1]
    shard.write_bytes(b"")
    result = subprocess.run([sys.executable, "-m", "jobs.aggregate", f"run_dir={tmp_path}/run", "tracking=none"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines() == [
        f"error: {shard}: trace shard cannot be read whole (0 bytes: Parquet file size is 0 bytes); rerun jobs.sample "
        f"with the same run_dir (jobs.evaluate for a greedy/ baseline) to move it to traces/.quarantine/ and sample it again"
    ]


def test_a_storage_fault_is_not_taken_for_damage(tmp_path, monkeypatch):
    import storage.traces as traces

    class Unreachable:
        """A store that lists its files but cannot send them (a network fault, not a damaged shard)."""

        def __init__(self, fs):
            self.fs = fs

        def __getattr__(self, name):
            return getattr(self.fs, name)

        def open_input_stream(self, path):
            raise OSError(f"When reading information for key '{path}': AWS Error NETWORK_CONNECTION")

    two_shard_run(tmp_path / "run")
    local = traces.filesystem
    monkeypatch.setattr(traces, "filesystem", lambda uri: (Unreachable(local(uri)[0]), local(uri)[1]))
    with pytest.raises(OSError, match="NETWORK_CONNECTION"):
        done_samples(str(tmp_path / "run"), damaged=lambda error: pytest.fail(f"quarantined {error.path}"))


# --- one writer per run -----------------------------------------------------------------------------


def write_holder(run_dir: Path, generation: int, **fields) -> Path:
    """A lease file as another job would have left it."""
    holder = {"host": HOST, "pid": os.getpid(), "pid_started": psutil.Process().create_time(), "started": "earlier",
              "refreshed": time.time(), "token": "other", **fields}
    path = run_dir / "lease" / f"{generation:08d}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(holder))
    return path


def dead_pid() -> tuple[int, float]:
    """The pid and start time of a process of this host that has ended."""
    process = subprocess.Popen(["sleep", "30"])
    started = psutil.Process(process.pid).create_time()
    process.kill()
    process.wait()
    return process.pid, started


def lease_files(run_dir: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((run_dir / "lease").glob("*.json"))}


def test_a_second_lease_on_a_held_run_dir_is_refused_naming_the_holder(tmp_path):
    first = Lease(str(tmp_path))
    first.acquire()
    with pytest.raises(LeaseError, match=rf"run_dir={re.escape(str(tmp_path))} is being sampled by another job \(host "
                                         rf"{re.escape(HOST)}, pid {os.getpid()}, since .*, refreshed \d+s ago; "
                                         rf"{re.escape(str(tmp_path))}/lease/00000001.json\)"):
        Lease(str(tmp_path)).acquire()
    first.release()
    Lease(str(tmp_path)).acquire()  # released: free
    assert list(lease_files(tmp_path)) == ["00000002.json"]


def test_a_lease_whose_process_is_gone_from_this_host_is_taken_over_at_once(tmp_path):
    pid, started = dead_pid()
    write_holder(tmp_path, 1, pid=pid, pid_started=started)
    lease = Lease(str(tmp_path))
    lease.acquire()
    [(name, holder)] = lease_files(tmp_path).items()
    assert name == "00000002.json" and holder["pid"] == os.getpid() and holder["token"] == lease.holder.token


def test_a_reused_pid_is_not_taken_for_the_holder(tmp_path):
    write_holder(tmp_path, 1, pid=os.getpid(), pid_started=psutil.Process().create_time() - 3600)
    Lease(str(tmp_path)).acquire()
    assert list(lease_files(tmp_path)) == ["00000002.json"]


def test_a_lease_from_another_host_binds_until_it_goes_unrefreshed_past_its_expiry(tmp_path):
    write_holder(tmp_path, 1, host="gpu-node-7", pid=1, refreshed=time.time() - 5, expires_s=30)
    with pytest.raises(LeaseError, match=r"host gpu-node-7, pid 1, since earlier, refreshed \d+s ago.* after 30s without"):
        Lease(str(tmp_path)).acquire()
    write_holder(tmp_path, 1, host="gpu-node-7", pid=1, refreshed=time.time() - 31, expires_s=30)
    Lease(str(tmp_path)).acquire()
    assert list(lease_files(tmp_path)) == ["00000002.json"]


def test_an_unreadable_lease_file_binds_nobody(tmp_path):
    write_holder(tmp_path, 3).write_text('{"host": ')
    Lease(str(tmp_path)).acquire()
    assert list(lease_files(tmp_path)) == ["00000004.json"]


def test_refresh_renews_the_lease_and_a_job_whose_lease_was_taken_stops_sending_units(tmp_path):
    with RunLeases([str(tmp_path)]) as leases:
        [lease] = leases.leases
        lease.holder.refreshed -= 100
        lease.refresh()
        assert time.time() - lease_files(tmp_path)["00000001.json"]["refreshed"] < 5
        write_holder(tmp_path, 2, host="gpu-node-7", pid=1)  # another job judged this one gone and took over
        lease.refresh()
        units = leases.guard(iter(range(3)))
        with pytest.raises(LeaseError, match=rf"run_dir={re.escape(str(tmp_path))}: another job took over its lease \(host gpu-node-7, "
                                             r"pid 1, .*\); stopping before writing more"):
            next(units)
    assert lease_files(tmp_path)["00000002.json"]["host"] == "gpu-node-7"  # the taker's lease is left alone


def test_leases_are_released_when_the_job_ends_even_by_an_error(tmp_path):
    run_dirs = [str(tmp_path / "run"), str(tmp_path / "run" / "greedy")]
    with pytest.raises(KeyError):
        with RunLeases(run_dirs):
            raise KeyError("a bug mid-run")
    assert lease_files(tmp_path / "run")["00000001.json"]["released"]
    assert lease_files(tmp_path / "run" / "greedy")["00000001.json"]["released"]


def test_a_job_refused_on_its_second_run_dir_releases_its_first(tmp_path):
    held = Lease(str(tmp_path / "greedy"))
    held.acquire()
    with pytest.raises(LeaseError, match="greedy is being sampled"):
        with RunLeases([str(tmp_path / "run"), str(tmp_path / "greedy")]):
            pytest.fail("both leased")
    assert lease_files(tmp_path / "run")["00000001.json"]["released"]


def test_on_an_object_store_the_lease_is_written_if_absent_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setattr(lease_module, "SETTLE_S", 0.01)

    def object_store_lease(run_dir: str) -> Lease:
        lease = Lease(f"file://{run_dir}")
        lease.local = False  # the unconditional writes of S3 and GCS through pyarrow
        return lease

    first = object_store_lease(str(tmp_path))
    first.acquire()
    with pytest.raises(LeaseError, match=rf"pid {os.getpid()}"):
        object_store_lease(str(tmp_path)).acquire()
    first.refresh()
    first.release()
    object_store_lease(str(tmp_path)).acquire()
    assert list(lease_files(tmp_path)) == ["00000002.json"]


# --- jobs as processes ------------------------------------------------------------------------------


def start_job(run_dir: Path, model: Path, *extra: str) -> subprocess.Popen:
    """`python -m jobs.sample` on the engine double (tests/double_sample.py), in its own session."""
    return subprocess.Popen([sys.executable, "-m", "tests.double_sample", *run_overrides(str(run_dir), model, *extra)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def kill_with_its_ray(job: subprocess.Popen) -> None:
    """SIGKILL a job and the Ray processes it started (they would otherwise outlive it)."""
    try:
        children = psutil.Process(job.pid).children(recursive=True)
    except psutil.NoSuchProcess:  # it has ended, and its Ray with it
        children = []
    job.send_signal(signal.SIGKILL)
    job.wait()
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(children, timeout=30)


def kill_at_its_first_shard(job: subprocess.Popen, run: Path) -> None:
    """SIGKILL the job (and its Ray) as soon as a shard of `run` is on disk."""
    try:
        deadline = time.monotonic() + 300
        while not list((run / "traces").glob("*.parquet")):
            assert job.poll() is None, f"the job ended before writing a shard: {job.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no shard written"
            time.sleep(0.05)
    finally:
        kill_with_its_ray(job)


def test_two_concurrent_jobs_on_one_run_dir_one_samples_and_the_other_is_refused_naming_it(tmp_path, model):
    run = tmp_path / "run"
    jobs = [start_job(run, model, "++engine.args.delay_s=0.2") for _ in range(2)]
    try:
        outcomes = [(job.wait(timeout=600), job.stderr.read()) for job in jobs]
    finally:
        for job in jobs:
            if job.poll() is None:
                kill_with_its_ray(job)
    assert sorted(code for code, _ in outcomes) == [0, 2], outcomes
    ran, [refused] = [j for j, (c, _) in zip(jobs, outcomes) if c == 0], [e for c, e in outcomes if c == 2]
    assert refused.splitlines() == [line for line in refused.splitlines() if line.startswith("error: ")]
    assert f"error: run_dir={run} is being sampled by another job (host {HOST}, pid {ran[0].pid}, since " in refused
    keys = sample_keys(str(run))
    assert len(keys) == len(set(keys)) == 48


def test_a_job_sigkilled_while_holding_the_lease_is_resumed_by_the_next(local_ray, tmp_path, model):
    run = tmp_path / "run"
    job = start_job(run, model, "cluster.unit_size=2", "++engine.args.delay_s=0.3")
    kill_at_its_first_shard(job, run)
    [left] = lease_files(run).values()
    assert left["pid"] == job.pid and not left["released"]  # killed: no release
    finished = {p.name: p.read_bytes() for p in (run / "traces").glob("*.parquet")}
    done_before = len(sample_keys(str(run)))
    assert 0 < done_before < 48, "the job should die mid-run"

    cfg = compose(*run_overrides(str(run), model, "cluster.unit_size=2"))
    [summary] = sample_runs([cfg], replica_class=EngineDouble)
    assert (summary.skipped, summary.samples) == (done_before, 48 - done_before)
    assert {p.name: p.read_bytes() for p in (run / "traces").glob("*.parquet") if p.name in finished} == finished
    keys = sample_keys(str(run))
    assert len(keys) == len(set(keys)) and set(keys) == expected_keys(cfg)
    [(name, holder)] = lease_files(run).items()
    assert name == "00000002.json" and holder["pid"] == os.getpid() and holder["released"]


def test_a_driver_sigkilled_mid_unit_leaves_what_its_replicas_kept_and_the_rerun_samples_only_the_rest(
        local_ray, tmp_path, model):
    run = tmp_path / "run"
    # two units of 24; a sample without an answer runs 400 steps (4 s), the others under 1 s: kept every 0.3 s
    slow = ("cluster.unit_size=24", "cluster.flush_s=0.3", "sampling.max_tokens=400", "++engine.args.step_s=0.01")
    job = start_job(run, model, *slow)
    kill_at_its_first_shard(job, run)
    finished = {p.name: p.read_bytes() for p in (run / "traces").glob("*.parquet")}
    done_before = len(sample_keys(str(run)))
    assert 0 < done_before < 48 and done_before % 24, "the driver should die with part of a unit kept"

    cfg = compose(*run_overrides(str(run), model, *slow))
    [summary] = sample_runs([cfg], replica_class=EngineDouble)
    assert (summary.skipped, summary.samples) == (done_before, 48 - done_before)
    assert {p.name: p.read_bytes() for p in (run / "traces").glob("*.parquet") if p.name in finished} == finished
    keys = sample_keys(str(run))
    assert len(keys) == len(set(keys)) and set(keys) == expected_keys(cfg)
