"""Sampling plumbing without the engine: seeds, work units, the run directory, the trace schema."""

import pytest

from jobs.sample import capped_unit_size, derive_seed, plan_units
from problems.datasets import arith_problems
from storage import rundir
from storage.traces import TRACE_SCHEMA, done_samples, open_traces, write_shard


def test_seed_depends_on_base_problem_and_index_only():
    problems = arith_problems(3, 2, seed=0)
    prompts = {p.problem_id: p.question for p in problems}
    by_unit_size = [{(r.problem_id, r.sample_idx): r.seed for u in plan_units(problems, prompts, 4, 0, size, {})
                     for r in u.requests} for size in (1, 5, 12)]
    assert by_unit_size[0] == by_unit_size[1] == by_unit_size[2]  # whichever unit (batch, replica) draws a sample
    seeds = {derive_seed(b, p, i) for b in (0, 1) for p in ("p", "q") for i in range(100)}
    assert len(seeds) == 400
    assert all(0 <= s < 2**63 for s in seeds)


def plan(n, done, unit_size=5, problems=None):
    problems = problems or arith_problems(3, 2, seed=0)
    prompts = {p.problem_id: p.question for p in problems}
    return list(plan_units(problems, prompts, n, 0, unit_size, done))


def test_units_cover_every_sample_once_with_its_seed():
    units = plan(4, {})
    keys = [(r.problem_id, r.sample_idx) for u in units for r in u.requests]
    assert len(keys) == len(set(keys)) == 12
    assert all(len(u.requests) <= 5 for u in units)
    assert all(r.seed == derive_seed(0, r.problem_id, r.sample_idx) for u in units for r in u.requests)


def test_units_skip_what_is_done_whatever_unit_it_was_in():
    problems = arith_problems(3, 2, seed=0)
    done = {problems[0].problem_id: {0, 1, 2, 3}, problems[1].problem_id: {1}}  # a gap: kept before a crash
    units = plan(4, done)
    keys = [(r.problem_id, r.sample_idx) for u in units for r in u.requests]
    expected = [(p.problem_id, i) for p in problems for i in range(4) if i not in done.get(p.problem_id, ())]
    assert keys == expected


def row(pid, idx, **extra):
    return {"run_id": "r", "problem_id": pid, "sample_idx": idx, "text": "t", "gold": "1", "seed": idx, "num_tokens": 1, **extra}


def test_a_run_too_small_for_every_replica_gets_smaller_units():
    assert capped_unit_size(256, 10_000, 8) == 256  # plenty: the configured size
    assert capped_unit_size(256, 800, 8) == 100 and capped_unit_size(256, 801, 8) == 101  # every replica gets a unit
    assert capped_unit_size(256, 384, 1) == 256 and capped_unit_size(256, 3, 8) == 1 and capped_unit_size(4, 0, 2) == 1


def test_shards_are_zstd_parquet_with_the_schema_and_hidden_temp_files_are_ignored(tmp_path):
    run = str(tmp_path)
    write_shard([row("a", 0), row("a", 1)], run, "part-1")
    (tmp_path / "traces" / ".part-2.abc.tmp").write_bytes(b"half a shard")  # as if killed mid-write
    assert open_traces(run).schema == TRACE_SCHEMA
    assert done_samples(run) == {"a": {0, 1}}
    import pyarrow.parquet as pq
    assert pq.ParquetFile(tmp_path / "traces" / "part-1.parquet").metadata.row_group(0).column(0).compression == "ZSTD"


def test_a_failed_write_leaves_no_shard(tmp_path, monkeypatch):
    import storage.traces as traces

    def broken(table, where, **kwargs):
        kwargs["filesystem"].open_output_stream(where).write(b"PAR1 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(traces.pq, "write_table", broken)
    with pytest.raises(OSError, match="No space left"):
        write_shard([row("a", 0)], str(tmp_path), "part-1")
    assert list((tmp_path / "traces").iterdir()) == []


def test_rundir_keeps_run_id_and_refuses_a_different_run(tmp_path):
    config = {"sampling": {"n": 4, "temperature": 0.7}, "model": {"path": "m"}, "run_dir": str(tmp_path)}
    run_id = rundir.prepare(str(tmp_path), config)
    more = {**config, "sampling": {"n": 16, "temperature": 0.7}}  # more samples: same run, extended
    assert rundir.prepare(str(tmp_path), more) == run_id
    with pytest.raises(ValueError, match=r"sampling.temperature: 0.7 -> 1.0"):
        rundir.prepare(str(tmp_path), {**config, "sampling": {"n": 4, "temperature": 1.0}})
    assert rundir.saved_config(str(tmp_path))["sampling"]["n"] == 16
