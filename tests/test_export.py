"""Rejection-sampling export on fixed traces: right samples only, at most m per problem, deduplicated, as chat."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs.aggregate import aggregate_run
from jobs.export import ExportError, export, keep
from storage import rundir
from storage.traces import write_shard

ROOT = Path(__file__).resolve().parents[1]
PROMPT = {"name": "cot", "chat": True, "system": None, "user": "{question}\nThink step by step.",
          "completion": "Q: {question}\nA:", "shots": 0, "shots_seed": 0}
TEXTS = {  # (problem, sample_idx) -> text; gold is 5 for p1 and p3, 7 for p2
    ("p1", 0): "2 + 3 = 5. The answer is 5.",
    ("p1", 1): "2 + 3 = 5.  The answer\nis 5.",  # the same as sample 0 up to whitespace
    ("p1", 2): "3 + 2 makes 5. The answer is 5.",
    ("p1", 3): "2 * 3 = 6. The answer is 6.",
    ("p1", 4): "Five. The answer is 5.",
    ("p2", 0): "The answer is 8.",
    ("p2", 1): "The answer is 9.",
    ("p3", 0): "The answer is 4.",
    ("p3", 1): "1 + 4 = 5. The answer is 5.",
}


@pytest.fixture()
def run(tmp_path) -> str:
    """An aggregated run of three problems, its rows split over two shards."""
    run_dir = str(tmp_path / "run")
    rows = [{"run_id": "run123", "model": "tiny", "prompt": "cot", "problem_id": pid, "question": f"question {pid}",
             "gold": "7" if pid == "p2" else "5", "sample_idx": idx, "text": text, "num_tokens": 9}
            for (pid, idx), text in TEXTS.items()]
    write_shard(rows[:4], run_dir, "part-a")
    write_shard(rows[4:], run_dir, "part-b")
    rundir.prepare(run_dir, {"prompt": PROMPT, "run_dir": run_dir})
    aggregate_run(run_dir, "gsm8k", "mean")
    return run_dir


def test_exports_distinct_right_samples_as_chat(run, tmp_path):
    manifest = export(run, str(tmp_path / "sft"), max_per_problem=2)
    records = [json.loads(line) for line in (tmp_path / "sft" / "sft.jsonl").read_text().splitlines()]
    assert [(r["problem_id"], r["sample_idx"]) for r in records] == [("p1", 0), ("p1", 2), ("p3", 1)]
    first = records[0]
    assert first["messages"] == [
        {"role": "user", "content": "question p1\nThink step by step."},
        {"role": "assistant", "content": TEXTS[("p1", 0)]},
    ]
    assert (first["source_run"], first["run_dir"], first["model"]) == ("run123", run, "tiny")
    assert pq.read_table(tmp_path / "sft" / "sft.parquet").to_pylist() == records
    assert manifest == json.loads((tmp_path / "sft" / "export.json").read_text())
    assert (manifest["source_run"], manifest["records"], manifest["problems"], manifest["right_samples"]) == ("run123", 3, 2, 5)


def test_export_reads_and_writes_uris(run, tmp_path):
    """A run_dir and an out folder given as URIs (file:// here, as s3:// on a cluster) give the same records."""
    local = export(run, str(tmp_path / "local"), max_per_problem=2)
    remote = export(f"file://{run}", f"file://{tmp_path}/remote/", max_per_problem=2)
    assert {k: v for k, v in remote.items() if k != "run_dir"} == {k: v for k, v in local.items() if k != "run_dir"}
    strip = [{**r, "run_dir": None} for r in pq.read_table(tmp_path / "local" / "sft.parquet").to_pylist()]
    assert [{**r, "run_dir": None} for r in pq.read_table(tmp_path / "remote" / "sft.parquet").to_pylist()] == strip
    assert (tmp_path / "remote" / "sft.jsonl").read_text().count("\n") == 3 and (tmp_path / "remote" / "export.json").is_file()


def test_more_room_still_skips_duplicates(run, tmp_path):
    export(run, str(tmp_path / "sft"), max_per_problem=10)
    table = pq.read_table(tmp_path / "sft" / "sft.parquet")
    assert list(zip(table["problem_id"].to_pylist(), table["sample_idx"].to_pylist())) == [
        ("p1", 0), ("p1", 2), ("p1", 4), ("p3", 1)]


def test_keep_gives_the_same_rows_in_any_arrival_order():
    rows = [{"sample_idx": i, "text": t} for i, t in enumerate(["a", "b", " a", "c", "b ", "d", "a"])]
    expected = {"a": 0, "b": 1, "c": 3}
    for seed in range(20):
        kept: dict = {}
        for row in random.Random(seed).sample(rows, len(rows)):
            keep(kept, row, 3)
        assert {k: r["sample_idx"] for k, r in kept.items()} == expected


def test_an_unaggregated_run_says_what_to_do(tmp_path):
    write_shard([{"problem_id": "p", "sample_idx": 0, "text": "t", "gold": "1"}], str(tmp_path), "part-a")
    with pytest.raises(ExportError, match=r"python -m jobs.aggregate run_dir="):
        export(str(tmp_path), str(tmp_path / "sft"), 2)


def test_export_command(run):
    result = subprocess.run([sys.executable, "-m", "jobs.export", f"run_dir={run}", "export.max_per_problem=1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 samples of 2 problems" in result.stderr
    assert len((Path(run) / "sft" / "sft.jsonl").read_text().splitlines()) == 2
