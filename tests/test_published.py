"""The published runs (docs/results/): the marked tables in docs/strategies.md and docs/adaptive.md equal their
recomputation from the traces (benchmarks.published, jobs.aggregate's code), and what is published stays small
and complete."""

import re
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
MARKER = re.compile(r"<!-- benchmarks\.published (\w+) -->")


def blocks(text: str) -> dict[str, str]:
    """Each marked table: the marker's name -> the Markdown table under it (its lines up to the first blank)."""
    found = {}
    for match in MARKER.finditer(text):
        rest = text[match.end():].lstrip("\n").split("\n\n", 1)[0]
        found[match.group(1)] = rest.strip()
    return found


def test_every_table_in_the_docs_equals_its_recomputation_from_the_published_traces():
    documented = {}
    for doc in ("strategies.md", "adaptive.md"):
        documented.update(blocks((ROOT / "docs" / doc).read_text()))
    assert documented, "the docs mark no published table"
    printed = subprocess.run([sys.executable, "-m", "benchmarks.published", *documented], cwd=ROOT, capture_output=True,
                             text=True, timeout=1800)
    assert printed.returncode == 0, printed.stderr[-3000:]
    assert blocks(printed.stdout) == documented


def test_the_published_runs_are_compact_and_each_carries_its_config():
    shards = sorted(RESULTS.rglob("traces/*.parquet"))
    assert shards
    sizes = {p.resolve(): p.stat().st_size for p in shards}  # a greedy/ linked from several runs counts once
    assert sum(sizes.values()) < 24 * 2**20  # a clone stays light: every published run, with their logprobs
    for traces in {p.parent for p in shards}:
        config = yaml.safe_load((traces.parent / "config.yaml").read_text())
        assert config["precision"]["dtype"] and config["precision"]["isa"], traces  # what the engine ran, on record
        assert config["data_dir"] == "../shared/data", traces  # resumable from any clone beside shared/
        table = ds.dataset(str(traces), format="parquet").to_table(columns=["problem_id", "sample_idx"])
        pairs = set(zip(table["problem_id"].to_pylist(), table["sample_idx"].to_pylist()))
        assert len(pairs) == table.num_rows, traces  # no sample twice
