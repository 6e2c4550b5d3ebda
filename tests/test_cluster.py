"""marginal on a Ray cluster: the launcher config, run directories behind URIs, and a real multi-node cluster.

The cluster tests start a head and a worker node with `ray start` (one CPU each, token authentication on,
everything on loopback: the head at 127.0.0.2, the worker at 127.0.0.3, the dashboard on 127.0.0.1) and
submit jobs with `ray job submit --working-dir .` as a user would.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
import pytest
import yaml
from mlflow.tracking import MlflowClient

from actors.double import EngineDouble
from jobs.aggregate import aggregate_run
from jobs.cli import compose
from jobs.sample import sample_runs
from storage.traces import open_traces
from tests.conftest import free_port, stop_process_groups, wait_for_http

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")
HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
TINY = ("model=smollm2_135m", "dataset.limit=2", "sampling.n=2", "sampling.max_tokens=32", "greedy_baseline=false", "cluster.cpus_per_replica=1",
        "cluster.unit_size=1")  # one sample per work unit: both replicas get work


# --- cluster.yaml ---------------------------------------------------------------------------------


def test_cluster_yaml_passes_rays_own_validation_with_token_auth_and_no_public_ports():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((ROOT / "cluster.yaml").read_text()))
    validate_config(config)  # what `ray up` checks before it launches anything
    assert config["provider"]["type"] == "aws"
    head = config["available_node_types"][config["head_node_type"]]
    [gpu] = [t for name, t in config["available_node_types"].items() if name != config["head_node_type"]]
    assert head["resources"] == {"CPU": 0} and gpu["resources"]["GPU"] >= 1
    assert gpu["min_workers"] < gpu["max_workers"] <= config["max_workers"]
    assert any("[gpu]" in command and "pip install" in command for command in config["setup_commands"])
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        [start] = [c for c in commands if "ray start" in c]
        assert "export RAY_AUTH_MODE=token;" in start
    token_source = config["file_mounts"]["~/.ray"]
    assert not Path(token_source).expanduser().resolve().is_relative_to(ROOT)  # the token never lives in the repo
    assert "IpPermissions" not in config["provider"]["security_group"]  # nothing opened beyond SSH and the cluster


# --- run directories behind URIs ------------------------------------------------------------------


@pytest.fixture
def double_model(tmp_path) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")  # the double loads nothing; check_model wants a model folder
    return model


def test_an_object_store_run_dir_samples_resumes_and_aggregates_through_pyarrow(local_ray, double_model, tmp_path):
    run_dir = f"file://{tmp_path}/run"
    config = ("tracking=none", f"run_dir={run_dir}", f"model.path={double_model}", "dataset.limit=3", "replicas=2",
              "cluster.cpus_per_replica=1", "cluster.unit_size=4")
    [first] = sample_runs([compose(*config, "sampling.n=4")], replica_class=EngineDouble)
    [more] = sample_runs([compose(*config, "sampling.n=6")], replica_class=EngineDouble)
    assert (first.samples, more.samples, more.skipped) == (12, 6, 12)  # the rerun resumed: only the new samples
    traces = open_traces(run_dir).to_table(columns=["problem_id", "sample_idx", "replica"])
    assert traces.num_rows == 18 and len(set(zip(traces["problem_id"].to_pylist(), traces["sample_idx"].to_pylist()))) == 18
    assert pc.count_distinct(traces["replica"]).as_py() >= 2  # each replica wrote its own shards

    result = aggregate_run(run_dir, "number", "mean")
    assert "text" not in result.answers.column_names  # texts stay in the shards, never gathered by the driver
    assert result.files == [f"{run_dir}/{name}" for name in
                            ("answers.parquet", "problems.parquet", "curves.parquet", "grading.parquet", "curves.png",
                             "tokens.png")]
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0 and not (ROOT / "curves.png").exists()
    assert max(r["k"] for r in result.curves) == 6


# --- a real cluster on loopback -------------------------------------------------------------------


@dataclass
class Cluster:
    dashboard: str  # the job API, http://127.0.0.1:PORT
    token: str
    env: dict[str, str]  # a client's environment: token authentication on, the token's file
    temp_dirs: list[Path]  # one per node

    def ray(self, *args: str, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
        """The `ray` CLI against this cluster, as a client holding the token (or with `env`)."""
        return subprocess.run([RAY, *args], env=env or self.env, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)

    def submit(self, submission_id: str, *command: str) -> subprocess.CompletedProcess:
        """`ray job submit` of `command` with the project folder as working dir, waiting for the job to end."""
        return self.ray("job", "submit", "--address", self.dashboard, "--submission-id", submission_id,
                        "--runtime-env", "runtime_env.yaml", "--working-dir", ".", "--", *command)

    def alive_nodes(self) -> list[str]:
        """The node IPs of the cluster's alive nodes, from the state API (authenticated with the token)."""
        request = urllib.request.Request(f"{self.dashboard}/api/v0/nodes",
                                         headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            nodes = json.load(response)["data"]["result"]["result"]
        return sorted(n["node_ip"] for n in nodes if n["state"] == "ALIVE")


def start_node(args: list[str], temp_dir: Path, env: dict[str, str]) -> subprocess.Popen:
    """`ray start --block` in its own process group, so the node's processes can be ended together."""
    command = [RAY, "start", *args, "--num-cpus=1", "--object-store-memory=100000000", "--disable-usage-stats",
               f"--dashboard-agent-listen-port={free_port()}", f"--temp-dir={temp_dir}", "--block"]
    with open(temp_dir / "start.log", "w") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A head and a worker node on loopback with token authentication; both stopped, and only they, afterwards."""
    home = tmp_path_factory.mktemp("home")  # `ray get-auth-token --generate` writes ~/.ray/auth_token
    token = subprocess.run([RAY, "get-auth-token", "--generate"], env={**os.environ, "HOME": str(home)},
                           capture_output=True, text=True, check=True).stdout.strip()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(home / ".ray" / "auth_token"))
    gcs, dashboard = free_port(), free_port()
    temp_dirs = [Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp")) for _ in range(2)]  # short: socket paths
    nodes = [start_node(["--head", f"--node-ip-address={HEAD_IP}", f"--port={gcs}", "--include-dashboard=true",
                         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                         f"--ray-client-server-port={free_port()}"], temp_dirs[0], env)]
    cluster = Cluster(f"http://127.0.0.1:{dashboard}", token, env, temp_dirs)
    try:
        wait_for_http(f"{cluster.dashboard}/api/gcs_healthz", nodes[0], timeout_s=180)
        nodes.append(start_node([f"--address={HEAD_IP}:{gcs}", f"--node-ip-address={WORKER_IP}"], temp_dirs[1], env))
        deadline = time.monotonic() + 180
        while cluster.alive_nodes() != [HEAD_IP, WORKER_IP]:
            assert time.monotonic() < deadline and nodes[1].poll() is None, (temp_dirs[1] / "start.log").read_text()
            time.sleep(1)
        yield cluster
    finally:
        stop_process_groups(*nodes)
        for temp_dir in temp_dirs:
            shutil.rmtree(temp_dir, ignore_errors=True)


def job_command(*overrides: str) -> list[str]:
    """`python -m jobs.evaluate` with this project's interpreter (the nodes share it here; on a cluster, `python`)."""
    return [sys.executable, "-m", "jobs.evaluate", *overrides, *TINY]  # Hydra's flags (-m) before any override


def experiment_runs(uri: str, experiment: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


@pytest.mark.engine
@pytest.mark.cluster
def test_a_submitted_evaluation_runs_its_replicas_on_both_nodes_and_logs_over_http(ray_cluster, mlflow_server, tmp_path):
    run_dir = tmp_path / "eval"  # a path every node sees: the shared-filesystem case
    job = ray_cluster.submit("marginal-eval", *job_command(
        "replicas=2", f"run_dir={run_dir}", f"tracking.uri={mlflow_server}", "tracking.experiment=cluster"))
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-2000:]

    traces = open_traces(str(run_dir)).to_table(columns=["problem_id", "sample_idx", "replica"])
    assert traces.num_rows == 4
    assert {name.rsplit(":", 1)[0] for name in traces["replica"].to_pylist()} == {HEAD_IP, WORKER_IP}
    [run] = experiment_runs(mlflow_server, "cluster")
    assert run.data.tags["run_dir"] == str(run_dir) and run.data.tags["override.replicas"] == "2"
    history = MlflowClient(tracking_uri=mlflow_server).get_metric_history(run.info.run_id, "accuracy/maj")
    assert sorted(m.step for m in history) == [1, 2] and run.data.metrics["tokens/per_problem"] > 0

    packages = [p for d in ray_cluster.temp_dirs for p in d.glob("session_latest/runtime_resources/working_dir_files/*")
                if p.is_dir()]  # the working dir as each node unpacked it
    assert len(packages) == 2
    for package in packages:
        assert (package / "jobs" / "evaluate.py").is_file() and (package / "conf" / "config.yaml").is_file()
        assert not [name for name in (".venv", ".git", "runs", "mlflow.db") if (package / name).exists()]


@pytest.mark.cluster
def test_a_submission_without_the_token_or_with_a_wrong_one_is_refused(ray_cluster, tmp_path):
    with urllib.request.urlopen(f"{ray_cluster.dashboard}/api/authentication_mode", timeout=10) as response:
        assert json.load(response)["authentication_mode"] == "token"
    command = ("job", "submit", "--address", ray_cluster.dashboard, "--", "python", "-c", "print('ran')")
    no_token = {k: v for k, v in ray_cluster.env.items() if not k.startswith("RAY_")} | {"HOME": str(tmp_path)}
    refused = ray_cluster.ray(*command, env=no_token, timeout=120)
    assert refused.returncode != 0 and "Unauthorized: Missing authentication token" in refused.stdout + refused.stderr
    wrong = ray_cluster.ray(*command, env={**no_token, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 32}, timeout=120)
    assert wrong.returncode != 0 and "Forbidden: Invalid authentication token" in wrong.stdout + wrong.stderr
    listed = ray_cluster.ray("job", "list", "--address", ray_cluster.dashboard, timeout=120)
    assert listed.returncode == 0 and "ran" not in listed.stdout and "print(" not in listed.stdout


@pytest.mark.engine
@pytest.mark.cluster
def test_a_sweep_submitted_with_the_ray_launcher_runs_members_at_once_nested_under_one_parent(
        ray_cluster, mlflow_server, tmp_path):
    job = ray_cluster.submit("marginal-sweep", *job_command(
        "-m", "hydra/launcher=ray", "prompt=direct,cot", f"run_dir={tmp_path}/" + "${prompt.name}",
        f"hydra.sweep.dir={tmp_path}/sweep", f"tracking.uri={mlflow_server}", "tracking.experiment=cluster-sweep"))
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-2000:]
    assert "#1 started (2 running)" in job.stdout + job.stderr  # one CPU per node, one replica per member: both at once

    runs = experiment_runs(mlflow_server, "cluster-sweep")
    [parent] = [r for r in runs if r.data.tags.get("sweep") == "true"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and len(runs) == 3
    assert sorted(r.data.tags["override.prompt"] for r in children) == ["cot", "direct"]
    replicas = {name.rsplit(":", 1)[0] for prompt in ("direct", "cot")
                for name in open_traces(str(tmp_path / prompt)).to_table(columns=["replica"])["replica"].to_pylist()}
    assert replicas == {HEAD_IP, WORKER_IP}
