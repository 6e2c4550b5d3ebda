"""`jobs.sample` end to end on the real vLLM engine with the embedded default model."""

import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from storage.traces import open_traces

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.engine


def sample(run_dir: Path, *overrides: str) -> str:
    """Run the job as a user would; returns its stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "jobs.sample", f"run_dir={run_dir}", "model=smollm2_135m", "dataset.limit=3", "sampling.max_tokens=48",
         "tracking=none", *overrides],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def test_sample_writes_one_row_per_sample_then_resumes_only_what_is_missing(tmp_path):
    run = tmp_path / "run"
    sample(run, "sampling.n=4", "sampling.logprobs=1")
    table = open_traces(str(run)).to_table()
    assert table.num_rows == 12
    assert len(set(zip(table["problem_id"].to_pylist(), table["sample_idx"].to_pylist()))) == 12
    assert len(set(table["seed"].to_pylist())) == 12
    assert all(text.strip() for text in table["text"].to_pylist())
    assert pc.min(table["num_tokens"]).as_py() > 0 and pc.max(table["num_tokens"]).as_py() <= 48
    assert set(table["finish_reason"].to_pylist()) <= {"stop", "length"}
    assert table["token_logprobs"].to_pylist()[0] and len(table["token_logprobs"][0]) == table["num_tokens"][0].as_py()
    assert all(lp < 0 for lp in table["cumulative_logprob"].to_pylist())
    assert (run / "config.yaml").is_file()

    shards = {p.name: p.stat().st_mtime_ns for p in (run / "traces").glob("*.parquet")}
    log = sample(run, "sampling.n=6")  # more samples: only the 6 new ones are generated
    assert "6 samples (12 already present" in log
    table = open_traces(str(run)).to_table()
    assert table.num_rows == 18
    assert len(set(zip(table["problem_id"].to_pylist(), table["sample_idx"].to_pylist()))) == 18
    assert all((run / "traces" / name).stat().st_mtime_ns == mtime for name, mtime in shards.items())

    assert "all 18 samples already present" in sample(run, "sampling.n=6")


def test_a_replica_keeps_samples_as_they_finish_before_its_unit_ends(tmp_path):
    run = tmp_path / "run"
    sample(run, "sampling.n=8", "sampling.max_tokens=256", "cluster.unit_size=24", "cluster.flush_s=2")  # one unit
    shards = sorted((run / "traces").glob("*.parquet"), key=lambda p: p.stat().st_mtime_ns)
    assert len(shards) > 1  # the first was written while the unit's other samples were still generating
    table = open_traces(str(run)).to_table(columns=["problem_id", "sample_idx", "num_tokens"])
    assert len(set(zip(table["problem_id"].to_pylist(), table["sample_idx"].to_pylist()))) == table.num_rows == 24
    first = pq.read_table(shards[0], columns=["num_tokens"])["num_tokens"].to_pylist()
    assert max(first) < max(table["num_tokens"].to_pylist())  # the first kept are the short ones


def test_an_online_adaptive_run_samples_a_seeded_prefix_of_each_problem(tmp_path):
    from jobs.sample import derive_seed

    log = sample(tmp_path / "run", "sampling.n=8", "adaptive=esc", "adaptive.rules.esc.window=4", "adaptive.min_samples=4",
                 "adaptive.batch=4", "cluster.unit_size=4")
    table = open_traces(str(tmp_path / "run")).to_table(columns=["problem_id", "sample_idx", "seed", "text"])
    rows = sorted(zip(*(table[c].to_pylist() for c in ("problem_id", "sample_idx", "seed"))))
    per_problem = {pid: [(i, seed) for p, i, seed in rows if p == pid] for pid, _, _ in rows}
    assert len(per_problem) == 3
    for pid, samples in per_problem.items():
        assert [i for i, _ in samples] == list(range(len(samples))) and len(samples) in (4, 8)
        assert [seed for _, seed in samples] == [derive_seed(0, pid, i) for i in range(len(samples))]
    assert f"[sample] adaptive: {table.num_rows} of 24 samples" in log


def test_greedy_baseline_is_deterministic(tmp_path):
    for name in ("a", "b"):
        sample(tmp_path / name, "sampling=greedy", "sampling.max_tokens=24", "cluster.unit_size=1")
    a, b = (open_traces(str(tmp_path / n)).to_table().sort_by("problem_id") for n in ("a", "b"))
    assert a.num_rows == 3 and a["text"].to_pylist() == b["text"].to_pylist()
    assert set(a["temperature"].to_pylist()) == {0.0}


def test_the_default_model_runs_end_to_end_with_its_greedy_baseline_and_paired_delta(tmp_path):
    """`jobs.evaluate` with no model override: embedded Qwen2.5-Coder-0.5B-Instruct, a few problems."""
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "jobs.evaluate", f"run_dir={run}", "dataset.limit=2", "sampling.n=2",
         "sampling.max_tokens=96", "tracking=none"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = open_traces(str(run)).to_table()
    assert table.num_rows == 4 and set(table["model"].to_pylist()) == {"qwen2.5-coder-0.5b-instruct"}
    assert all(text.strip() for text in table["text"].to_pylist())
    assert open_traces(str(run / "greedy")).to_table().num_rows == 2
    assert "greedy" in result.stdout and "maj@k - greedy" in result.stdout, result.stdout
    assert "[progress] 6/6 samples kept (100%)" in result.stderr
