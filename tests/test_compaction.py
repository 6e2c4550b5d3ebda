"""Compaction: small shards merged into large ones; killed at any step it loses nothing and duplicates nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.fs as pafs

import storage.compaction as compaction
from storage.compaction import compact
from storage.rundir import resume_scan
from storage.traces import ShardIndex, done_samples, read_columns, write_shard

ROOT = Path(__file__).resolve().parents[1]


def small_shards(run_dir: Path, shards: int = 6, rows: int = 5) -> set[tuple[str, int]]:
    """`shards` shards of `rows` samples each, as replicas write them; their (problem_id, sample_idx)."""
    keys = set()
    for s in range(shards):
        batch = [{"problem_id": f"p{s % 2}", "sample_idx": s * rows + i, "text": f"The answer is {i}.", "gold": "1",
                  "num_tokens": 5} for i in range(rows)]
        write_shard(batch, str(run_dir), f"part-w{s // 3}-{s:06d}")
        keys |= {(r["problem_id"], r["sample_idx"]) for r in batch}
    return keys


def read_keys(run_dir: Path) -> list[tuple[str, int]]:
    table = read_columns(str(run_dir), ["problem_id", "sample_idx"])
    return list(zip(table["problem_id"].to_pylist(), table["sample_idx"].to_pylist()))


def visible(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "traces").iterdir() if not p.name.startswith((".", "_")))


def test_small_shards_become_one_and_a_rerun_changes_nothing(tmp_path):
    keys = small_shards(tmp_path)
    assert compact(str(tmp_path)) == (6, 1)
    [merged] = visible(tmp_path)
    assert merged.startswith("compact-") and sorted(read_keys(tmp_path)) == sorted(keys)
    assert sorted(p.name for p in (tmp_path / "traces").iterdir()) == [merged]  # no manifest, no temp file left
    assert compact(str(tmp_path)) == (0, 0)


def test_shards_group_up_to_the_target_size(tmp_path):
    keys = small_shards(tmp_path)
    one = (tmp_path / "traces" / visible(tmp_path)[0]).stat().st_size
    merged, written = compact(str(tmp_path), target_bytes=2 * one + 1)  # about three shards per group
    assert merged == 6 and written == 2 and len(visible(tmp_path)) == 2
    assert sorted(read_keys(tmp_path)) == sorted(keys)


def test_a_damaged_shard_is_left_out_for_the_resume_to_quarantine_and_the_rest_merged(tmp_path):
    keys = small_shards(tmp_path)
    damaged = tmp_path / "traces" / visible(tmp_path)[2]
    damaged.write_bytes(damaged.read_bytes()[:100])
    assert compact(str(tmp_path)) == (5, 1)
    assert len(visible(tmp_path)) == 2 and damaged.name in visible(tmp_path)
    done, quarantined = resume_scan(str(tmp_path))
    assert [e.path.rsplit("/", 1)[-1] for e in quarantined] == [damaged.name]
    assert sum(len(v) for v in done.values()) == len(keys) - 5  # the damaged shard's 5 samples are missing


class Killed(BaseException):
    """The process dies here."""


class DyingHandler(pafs.FileSystemHandler):
    """The local filesystem, until its `life`-th change (a write, move or delete): then the process is 'killed'."""

    def __init__(self, life: int):
        self.fs, self.life, self.changes = pafs.LocalFileSystem(), life, 0

    def _change(self):
        self.changes += 1
        if self.changes == self.life:
            raise Killed

    def get_type_name(self): return "dying"
    def normalize_path(self, path): return path
    def equals(self, other): return self is other
    def get_file_info(self, paths): return self.fs.get_file_info(paths)
    def get_file_info_selector(self, selector): return self.fs.get_file_info(selector)
    def create_dir(self, path, recursive): self.fs.create_dir(path, recursive=recursive)
    def delete_dir(self, path): self._change(); self.fs.delete_dir(path)
    def delete_dir_contents(self, path, missing_dir_ok=False): self._change(); self.fs.delete_dir_contents(path)
    def delete_root_dir_contents(self): raise NotImplementedError
    def delete_file(self, path): self._change(); self.fs.delete_file(path)
    def move(self, src, dest): self._change(); self.fs.move(src, dest)
    def copy_file(self, src, dest): self._change(); self.fs.copy_file(src, dest)
    def open_input_stream(self, path): return self.fs.open_input_stream(path)
    def open_input_file(self, path): return self.fs.open_input_file(path)
    def open_output_stream(self, path, metadata): self._change(); return self.fs.open_output_stream(path)
    def open_append_stream(self, path, metadata): self._change(); return self.fs.open_append_stream(path)


def test_a_compaction_killed_at_any_step_loses_nothing_duplicates_nothing_and_the_next_one_finishes(
        tmp_path, monkeypatch):
    steps = 0
    while True:  # kill it at its 1st change, its 2nd, ... until one run survives every change
        steps += 1
        run = tmp_path / f"run{steps}"
        keys = small_shards(run)
        handler = DyingHandler(life=steps)
        monkeypatch.setattr(compaction, "filesystem", lambda uri: (pafs.PyFileSystem(handler), uri))
        try:
            compact(str(run))
            finished = True
        except Killed:
            finished = False
        monkeypatch.undo()
        for read in (read_keys(run), [(p, i) for p, done in done_samples(str(run)).items() for i in done]):
            assert sorted(read) == sorted(keys), f"killed at change {steps}"  # each sample once, none lost
        index = ShardIndex(str(run))
        index.refresh()
        assert index.total == len(keys)
        compact(str(run))  # the next compaction completes or clears what was left
        assert sorted(read_keys(run)) == sorted(keys) and len(visible(run)) == 1
        assert sorted(p.name for p in (run / "traces").iterdir()) == visible(run)
        if finished:
            break
    assert steps > 8  # temp output, manifest staged and renamed, output renamed, 6 inputs deleted, manifest deleted


def test_the_compact_job_merges_a_run_s_shards_and_refuses_a_run_dir_without_traces(tmp_path):
    keys = small_shards(tmp_path / "run")
    done = subprocess.run([sys.executable, "-m", "jobs.compact", f"run_dir={tmp_path}/run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"[compact] {tmp_path}/run: 6 of 6 shards merged into 1; 1 shards now" in done.stderr
    assert sorted(read_keys(tmp_path / "run")) == sorted(keys)
    missing = subprocess.run([sys.executable, "-m", "jobs.compact", f"run_dir={tmp_path}/nothing"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and missing.stderr.strip() == f"error: run_dir={tmp_path}/nothing: no traces/ folder to compact"
