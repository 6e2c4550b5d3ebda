"""MLflow logging of one evaluation: flattened config as params, curves as metrics with step=k.

Each curve is the metric `accuracy/<method>` logged at step k, so MLflow's compare view overlays the
scaling curves of several runs; a paired difference to greedy is `delta_vs_greedy/<method>` at step k. Runs of a sweep are nested under the sweep's parent run.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from analysis.curves import DELTA_SUFFIX

PARENT_RUN_ENV = "MARGINAL_PARENT_RUN_ID"  # set by the sweep callback for every member run
MAX_PARAM_CHARS = 6000


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(uri: str, name: str) -> str:
    """The id of experiment `name`, created when missing."""
    client = _client(uri)
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name)


def log_evaluation(
    uri: str,
    experiment: str,
    run_name: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    curves: Iterable[dict[str, Any]],
    artifacts: Iterable[Union[str, Path]],
    config: dict[str, Any],
    tags: Optional[dict[str, str]] = None,
) -> str:
    """Log one evaluation (params, metrics, curves, artifact files, resolved config) as one MLflow run.

    Artifacts are local paths or URIs of any filesystem pyarrow knows (a run_dir in an object store).
    """
    from mlflow.entities import Metric, Param

    client = _client(uri)
    tags = dict(tags or {})
    parent = os.environ.get(PARENT_RUN_ENV)
    if parent:
        tags["mlflow.parentRunId"] = parent
    run = client.create_run(experiment_id(uri, experiment), run_name=run_name, tags=tags)
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    entries = [Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in sorted(params.items())]
    for start in range(0, len(entries), 100):
        client.log_batch(run_id, params=entries[start : start + 100])
    points = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    for row in curves:
        name = curve_metric(row["method"])
        for suffix, column in (("", "accuracy"), ("/ci_low", "ci_low"), ("/ci_high", "ci_high")):
            points.append(Metric(f"{name}{suffix}", float(row[column]), now, int(row["k"])))
    for start in range(0, len(points), 1000):
        client.log_batch(run_id, metrics=points[start : start + 1000])
    with tempfile.TemporaryDirectory() as staging:
        for path in artifacts:
            client.log_artifact(run_id, local_copy(str(path), staging))
    client.log_dict(run_id, config, "config.yaml")
    client.set_terminated(run_id)
    return run_id


def curve_metric(method: str) -> str:
    """The MLflow metric of a curve: `accuracy/<method>`, or `delta_vs_greedy/<method>` for a paired difference."""
    if method.endswith(DELTA_SUFFIX):
        return f"delta_vs_greedy/{method.removesuffix(DELTA_SUFFIX)}"
    return f"accuracy/{method}"


def local_copy(path: str, staging: str) -> str:
    """`path` itself when it is local, else a copy of the file it names, made in `staging`."""
    if "://" not in path:
        return path
    import pyarrow.fs as pafs

    from analysis.traces import filesystem

    fs, remote = filesystem(path)
    local = os.path.join(staging, remote.rsplit("/", 1)[-1])
    pafs.copy_files(remote, local, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return local


def start_run(uri: str, experiment: str, run_name: str, tags: dict[str, str]) -> str:
    """Create a run that stays open (a sweep's parent) and return its id."""
    return _client(uri).create_run(experiment_id(uri, experiment), run_name=run_name, tags=tags).info.run_id


def end_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    """Close a run opened by `start_run` as FINISHED or FAILED."""
    _client(uri).set_terminated(run_id, status)


def run_link(uri: str, run_id: str) -> str:
    """Where to look at a run: the server URL, or the command that opens a local store."""
    if uri.startswith("http"):
        return f"{uri.rstrip('/')}/#/experiments/runs/{run_id}"
    return f"run {run_id} in {uri} (mlflow ui --backend-store-uri {uri})"
