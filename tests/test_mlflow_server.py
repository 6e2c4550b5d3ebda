"""A real MLflow tracking server (sqlite backend, proxied artifacts): jobs log over HTTP, MlflowClient reads back."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient

from analysis.curves import k_grid
from jobs.cli import compose
from jobs.compare import compare, hydra_args, run_curves, selection
from storage import rundir
from storage.traces import filesystem, write_shard
from tracking import mlflow_runs

ROOT = Path(__file__).resolve().parents[1]
GOLD = "7"


def synthetic_run(run_dir: str, n: int = 4, temperature: float = 0.7) -> None:
    """Three problems x n samples, written as replicas write shards: one always right, one never, one half."""
    config = {"model": {"name": "synthetic"}, "dataset": {"name": "arith"}, "prompt": {"name": "cot"},
              "sampling": {"n": n, "temperature": temperature}, "answer": {"format": "number"}}
    run_id = rundir.prepare(run_dir, config)
    for problem, right in (("p0", n), ("p1", 0), ("p2", n // 2)):
        rows = [{"run_id": run_id, "problem_id": problem, "sample_idx": i, "gold": GOLD, "num_tokens": 10 + i,
                 "text": f"Step by step. The answer is {GOLD if i < right else 8 + i % 2}."} for i in range(n)]
        write_shard(rows, run_dir, f"part-{problem}")


def run_module(module: str, *overrides: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """`python -m <module> overrides...` as a user runs it, from the project folder unless `cwd` says otherwise."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's code from any folder
    return subprocess.run([sys.executable, "-m", module, *overrides], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def test_an_aggregation_of_an_object_store_run_dir_is_logged_over_http_and_reads_back(mlflow_server, tmp_path):
    run_dir = f"file://{tmp_path}/run"  # a URI: everything goes through pyarrow's filesystem layer
    synthetic_run(run_dir)
    done = run_module("jobs.aggregate", f"run_dir={run_dir}", f"tracking.uri={mlflow_server}",
                      "tracking.experiment=http")
    assert done.returncode == 0, done.stderr[-3000:]

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("http").experiment_id
    [run] = client.search_runs([experiment])
    assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert run.info.run_name == "synthetic/arith/cot t0.7 n4 number"  # answer.format differs from the dataset's (none)
    assert set(run.data.params) == {"model.name", "dataset.name", "prompt.name", "sampling.n", "sampling.temperature",
                                    "answer.format", "answer.confidence", "answer.seed", "problems", "samples", "git_commit"}
    assert run.data.params["sampling.n"] == "4" and run.data.params["answer.format"] == "number"
    assert run.data.params["answer.seed"] == "0"  # the saved answer.seed, else 0
    assert run.data.params["problems"] == "3" and run.data.params["samples"] == "12"
    assert run.data.tags["run_dir"] == run_dir and run.data.tags["override.run_dir"] == run_dir
    assert run.data.tags["job"] == "aggregate" and run.data.tags["sampling_run"] == rundir.run_id(run_dir)
    note = run.data.tags["mlflow.note.content"]
    assert "- maj@4: 66.7% (95% CI" in note and "- 3 problems, 12 samples" in note and "- tokens per problem: 46" in note
    assert "not reported: greedy: no greedy run" in note
    assert f"MLflow run:  {mlflow_server}/#/experiments/{experiment}/runs/{run.info.run_id}" in done.stderr
    assert run.data.metrics["problems"] == 3 and run.data.metrics["tokens/per_problem"] == 46

    fs, root = filesystem(run_dir)
    local_curves = pq.read_table(f"{root}/curves.parquet", filesystem=fs).to_pylist()
    assert client.get_metric_history(run.info.run_id, "accuracy/weighted_maj") == []  # no logprobs: not measured
    assert "without per-token logprobs" in run.data.tags["omitted.weighted_maj"]
    assert run.data.tags["omitted.greedy"].startswith("no greedy run")
    for method in ("maj", "pass"):
        history = client.get_metric_history(run.info.run_id, f"accuracy/{method}")
        expected = {r["k"]: r["accuracy"] for r in local_curves if r["method"] == method}
        assert sorted(m.step for m in history) == k_grid(4) == sorted(expected)
        assert {m.step: m.value for m in history} == pytest.approx(expected)
    assert {m.step: m.value for m in client.get_metric_history(run.info.run_id, "accuracy/pass")} == pytest.approx({1: 0.5, 2: 11 / 18, 4: 2 / 3})

    assert not [m for m in run.data.metrics if "ci_" in m]  # the intervals are in the logged table, not metrics
    table = json.loads(Path(client.download_artifacts(run.info.run_id, "curves.json", str(tmp_path))).read_text())
    assert table["columns"] == ["method", "k", "accuracy", "ci_low", "ci_high"]  # as log_table writes it
    assert table["data"] == [[r["method"], r["k"], pytest.approx(r["accuracy"]), pytest.approx(r["ci_low"]),
                              pytest.approx(r["ci_high"])] for r in local_curves]

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"answers.parquet", "problems.parquet", "curves.parquet", "grading.parquet", "curves.png",
                         "tokens.png", "curves.json", "config.yaml"}
    config = yaml.safe_load(open(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))))
    assert config["tracking"] == {"enabled": True, "uri": mlflow_server, "experiment": "http"}  # where it logged
    assert config["sampling"] == {"n": 4, "temperature": 0.7} and config["answer"]["format"] == "number"
    fetched = client.download_artifacts(run.info.run_id, "curves.parquet", str(tmp_path))
    assert pq.read_table(fetched).to_pylist() == local_curves
    assert fs.get_file_info(f"{root}/curves.png").size > 0 and not (ROOT / "curves.png").exists()


def log_run(uri: str, experiment: str, prompt: str, accuracy: dict[int, float], tokens: float) -> str:
    """An evaluation run as jobs.aggregate logs it, with maj@k curve `accuracy` and its prompt override tag."""
    curves = [{"method": "maj", "k": k, "accuracy": a, "ci_low": a - 0.1, "ci_high": a + 0.1} for k, a in accuracy.items()]
    return mlflow_runs.log_evaluation(uri, experiment, f"run-{prompt}", {"prompt.name": prompt},
                                   {"tokens/per_problem": tokens}, curves, [], {}, {"override.prompt": prompt})


def test_compare_selects_runs_by_parent_tag_or_filter_and_logs_one_plot_and_table(mlflow_server, tmp_path, monkeypatch):
    experiment = "compare"
    parent = mlflow_runs.start_run(mlflow_server, experiment, "sweep", {"sweep": "true"})
    monkeypatch.setenv(mlflow_runs.PARENT_RUN_ENV, parent)
    direct = log_run(mlflow_server, experiment, "direct", {1: 0.25, 2: 0.5, 4: 0.75}, 30.0)
    cot = log_run(mlflow_server, experiment, "cot", {1: 0.5, 2: 0.625, 4: 1.0}, 120.0)
    monkeypatch.delenv(mlflow_runs.PARENT_RUN_ENV)
    log_run(mlflow_server, experiment, "plain", {1: 0.0, 2: 0.0, 4: 0.0}, 10.0)  # outside the sweep

    done = run_module("jobs.compare", f"parent={parent}", f"experiment={experiment}", f"tracking.uri={mlflow_server}",
                      f"out={tmp_path}/out")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| prompt=direct | maj | 25.0% | 50.0% | 75.0% | 30.0 |" in done.stdout
    assert "| prompt=cot | maj | 50.0% | 62.5% | 100.0% | 120.0 |" in done.stdout

    client = MlflowClient(tracking_uri=mlflow_server)
    [logged] = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], "tags.comparison = 'true'")
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert artifacts == {"comparison.png", "comparison.parquet", "comparison.csv", "comparison.md"}
    table = pq.read_table(client.download_artifacts(logged.info.run_id, "comparison.parquet", str(tmp_path)))
    assert table.column_names == ["run_id", "run", "method", "acc@1", "acc@2", "acc@4", "tokens_per_problem", "greedy"]
    assert table.select(["run_id", "acc@4", "tokens_per_problem"]).to_pylist() == [
        {"run_id": direct, "acc@4": 0.75, "tokens_per_problem": 30.0}, {"run_id": cot, "acc@4": 1.0, "tokens_per_problem": 120.0}]

    assert run_curves(client, direct, ["maj"]) == [  # accuracy from the metric history, intervals from curves.json
        {"method": "maj", "k": k, "accuracy": a, "ci_low": a - 0.1, "ci_high": a + 0.1} for k, a in ((1, 0.25), (2, 0.5), (4, 0.75))]

    def select(*args: str) -> list[str]:  # compare's selection, given as on the command line
        cfg = compose(*hydra_args(list(args)), config_name="compare")
        return compare(mlflow_server, experiment, selection(cfg), ["maj"], tmp_path / "out").table["run"].to_pylist()

    assert select("tag.override.prompt=cot") == ["run-cot"]  # one run: labelled by its name
    assert select("filter=metrics.`tokens/per_problem` < 50 and params.`prompt.name` != 'cot'") == [
        "prompt=direct", "prompt=plain"]

def test_compare_names_a_missing_experiment_in_one_line(mlflow_server):
    done = run_module("jobs.compare", "experiment=nowhere", f"tracking.uri={mlflow_server}")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == f"error: experiment='nowhere': no such experiment in {mlflow_server}"


def test_compare_gives_the_paired_difference_between_two_runs_on_their_shared_problems(mlflow_server, tmp_path):
    """Run b gets p1 right where run a never does; b also holds a problem a lacks, which is left out."""
    experiment = "paired"
    for name, extra in (("a", []), ("b", [("p1", 4), ("p9", 4)])):
        run_dir = str(tmp_path / name)
        synthetic_run(run_dir)
        for problem, right in extra:
            rows = [{"run_id": "r", "problem_id": problem, "sample_idx": i, "gold": GOLD, "num_tokens": 10,
                     "text": f"The answer is {GOLD if i < right else 9}."} for i in range(4)]
            write_shard(rows, run_dir, f"part-{problem}")  # the same deterministic name: replaces p1's shard
        done = run_module("jobs.aggregate", f"run_dir={run_dir}", f"tracking.uri={mlflow_server}",
                          f"tracking.experiment={experiment}")
        assert done.returncode == 0, done.stderr[-3000:]
    done = run_module("jobs.compare", f"experiment={experiment}", f"tracking.uri={mlflow_server}", "methods=[maj,pass]",
                      f"out={tmp_path}/out")
    assert done.returncode == 0, done.stderr[-3000:]
    paired = pq.read_table(tmp_path / "out" / "paired.parquet").to_pylist()
    maj4 = next(r for r in paired if r["method"] == "maj" and r["k"] == 4)
    assert maj4["problems"] == 3 and maj4["difference"] == pytest.approx(1 / 3)  # p1: 0 -> 1, p0 and p2 unchanged
    assert maj4["ci_low"] == pytest.approx(0.0) and maj4["ci_high"] == pytest.approx(1.0)
    pass1 = next(r for r in paired if r["method"] == "pass" and r["k"] == 1)
    assert pass1["difference"] == pytest.approx(1 / 3)
    assert "paired difference to" in done.stdout and "| maj | 4 | +33.3 |" in done.stdout


def test_an_aggregation_names_the_evaluation_that_sampled_it_and_prints_how_to_open_a_local_store(tmp_path):
    run_dir, uri = str(tmp_path / "run"), f"sqlite:///{tmp_path}/mlflow.db"
    synthetic_run(run_dir)
    evaluation = mlflow_runs.log_evaluation(uri, "local", "evaluation", {}, {}, [], [], {},
                                         {"job": "evaluate", "run_dir": run_dir})
    done = run_module("jobs.aggregate", f"run_dir={run_dir}", "tracking.uri=sqlite:///mlflow.db",  # relative to cwd
                      "tracking.experiment=local", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("local").experiment_id
    [run] = client.search_runs([experiment], "tags.job = 'aggregate'")
    assert run.data.tags["sampling_mlflow_run"] == evaluation
    assert f"MLflow: mlflow ui --backend-store-uri sqlite:///{tmp_path}/mlflow.db " in done.stderr  # absolute
    assert f"MLflow run:  http://127.0.0.1:5000/#/experiments/{experiment}/runs/{run.info.run_id}" in done.stderr
