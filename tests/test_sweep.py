"""A Hydra sweep of `jobs.evaluate` on this machine: every member runs, nested under one MLflow parent run."""

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from jobs.cli import compose
from jobs.compare import compare, search_filter
from storage.traces import open_traces

ROOT = Path(__file__).resolve().parents[1]


def test_every_combination_is_a_member_with_a_run_dir_of_its_own():
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    swept = OverridesParser.create().parse_overrides(["prompt=direct,cot", "sampling.temperature=0.3,0.7,1.0"])
    [members] = BasicSweeper.split_arguments(swept, max_batch_size=None)
    assert len(members) == 6 and len({compose(*member).run_dir for member in members}) == 6


@pytest.mark.engine
def test_a_sweep_nests_one_tagged_run_per_member_under_a_parent_and_compare_draws_them(mlflow_server, tmp_path):
    sweep = subprocess.run(
        [sys.executable, "-m", "jobs.evaluate", "-m", "prompt=direct,cot", "model=smollm2_135m", "dataset.limit=2", "sampling.n=2",
         "sampling.max_tokens=32", "greedy_baseline=false", f"run_dir={tmp_path}/" + "${prompt.name}",
         f"hydra.sweep.dir={tmp_path}/sweep", f"tracking.uri={mlflow_server}", "tracking.experiment=sweep"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert sweep.returncode == 0, sweep.stderr[-4000:]
    assert (tmp_path / "sweep" / "multirun.yaml").is_file()  # the sweep's record stays out of the project folder

    client = MlflowClient(tracking_uri=mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("sweep") == "true"]
    children = sorted((r for r in runs if r is not parent), key=lambda r: r.data.tags["override.prompt"])
    assert parent.info.status == "FINISHED" and parent.data.tags["overrides"].startswith("prompt=direct,cot ")
    assert f"run_dir={tmp_path}/" + "${prompt.name}" in parent.data.tags["overrides"]  # as typed, not resolved
    assert [r.data.tags["override.prompt"] for r in children] == ["cot", "direct"]
    for run in children:
        prompt = run.data.tags["override.prompt"]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id and run.data.params["prompt.name"] == prompt
        assert f"prompt={prompt} " in run.data.tags["overrides"] + " "
        assert run.data.tags["run_dir"] == str(tmp_path / prompt) and open_traces(str(tmp_path / prompt)).count_rows() == 4

    result = compare(mlflow_server, "sweep", search_filter(parent.info.run_id, {}, None), ["maj", "pass"], tmp_path / "cmp")
    assert sorted(zip(result.table["run"].to_pylist(), result.table["method"].to_pylist())) == [
        ("prompt=cot", "maj"), ("prompt=cot", "pass"), ("prompt=direct", "maj"), ("prompt=direct", "pass")]
    assert {a.path for a in client.list_artifacts(result.run_id)} == (
        {f"comparison.{x}" for x in ("png", "parquet", "csv", "md")} | {"paired.parquet", "paired.md"})
    paired = result.paired.to_pylist()  # the later member against the first (oldest), on their 2 shared problems
    first, later = dict.fromkeys(result.table["run"].to_pylist())
    assert {(r["run"], r["baseline"], r["problems"]) for r in paired} == {(later, first, 2)}
    assert {r["method"] for r in paired} == {"maj", "pass"} and all(r["ci_low"] <= r["difference"] <= r["ci_high"] for r in paired)
    tokens = {r.data.tags["override.prompt"]: r.data.metrics["tokens/per_problem"] for r in children}
    assert {row["run"]: row["tokens_per_problem"] for row in result.table.to_pylist()} == {
        f"prompt={p}": t for p, t in tokens.items()}


@pytest.mark.parametrize("job, parents", [("evaluate", ["FAILED"]), ("sample", [])])
def test_a_failing_member_fails_alone_and_only_a_tracked_job_opens_a_parent_run(job, parents, tmp_path):
    """Every member runs and prints its error; evaluate's parent run closes FAILED; sample (logs nothing) opens none."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sweep = subprocess.run(
        [sys.executable, "-m", f"jobs.{job}", "-m", f"model.path={tmp_path}/no-model", "sampling.temperature=0.3,0.7",
         f"run_dir={tmp_path}/run-" + "${sampling.temperature}", f"hydra.sweep.dir={tmp_path}/sweep",
         f"tracking.uri={uri}", "tracking.experiment=sweep"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    missing = f"error: model.path='{tmp_path}/no-model': no Hugging Face model folder (config.json) there"
    assert sweep.returncode == 2 and sweep.stderr.count(missing) == 3, sweep.stderr[-4000:]  # each member, then the sweep
    assert "#1 : " in sweep.stdout + sweep.stderr and "Traceback" not in sweep.stderr
    experiment = MlflowClient(tracking_uri=uri).get_experiment_by_name("sweep")
    runs = MlflowClient(tracking_uri=uri).search_runs([experiment.experiment_id]) if experiment else []
    assert [r.info.status for r in runs if r.data.tags.get("sweep") == "true"] == parents and len(runs) == len(parents)
