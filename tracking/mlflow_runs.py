"""MLflow logging of one evaluation: a short param list, curves as metrics with step=k, figures, links.

Each curve is the metric `accuracy/<method>` logged at step k, so MLflow's chart view overlays the scaling
curves of several runs; a paired difference to greedy is `delta_vs_greedy/<method>` at step k. The 95%
intervals stay out of the metric list: they are in the logged table `curves.json` (and curves.parquet).
Runs of a sweep are nested under the sweep's parent run.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union
from urllib.parse import urlparse

from analysis.curves import DELTA_SUFFIX

PARENT_RUN_ENV = "MARGINAL_PARENT_RUN_ID"  # set by the sweep callback for every member run
NOTE_TAG = "mlflow.note.content"  # the run's description in the MLflow UI (Markdown)
CURVES_TABLE = "curves.json"  # the logged table of every curve point with its interval
TABLE_COLUMNS = ("method", "k", "accuracy", "ci_low", "ci_high")
MAX_PARAM_CHARS = 6000
UI_ADDRESS = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store by default
RUNS_VIEW = "workflowType=machine_learning"  # the query the UI's own "Model training" switch puts in its URL


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
    figures: Optional[Mapping[str, Any]] = None,
) -> str:
    """Log one evaluation as one MLflow run: params, metrics, curves (metrics at step k and the table
    `curves.json`), artifact files, matplotlib figures (name -> Figure) and the resolved config.

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
    curves = list(curves)
    points = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    points += [Metric(curve_metric(row["method"]), float(row["accuracy"]), now, int(row["k"])) for row in curves]
    for start in range(0, len(points), 1000):
        client.log_batch(run_id, metrics=points[start : start + 1000])
    if curves:
        client.log_table(run_id, {c: [row.get(c) for row in curves] for c in TABLE_COLUMNS}, CURVES_TABLE)
    with tempfile.TemporaryDirectory() as staging:
        for path in artifacts:
            client.log_artifact(run_id, local_copy(str(path), staging))
    for name, figure in (figures or {}).items():
        client.log_figure(run_id, figure, name)
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

    from storage.traces import filesystem

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


def find_run(uri: str, experiment: str, tags: dict[str, str]) -> Optional[str]:
    """The newest run of `experiment` carrying every tag in `tags`, or None."""
    client = _client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    clauses = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
    runs = client.search_runs([found.experiment_id], clauses, order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def browsable_uri(uri: str) -> str:
    """A local store's URI that names the same store from any folder: a relative sqlite path made absolute."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + os.path.abspath(uri.removeprefix("sqlite:///"))
    if "://" not in uri:
        return os.path.abspath(uri)
    return uri


def run_link(uri: str, run_id: str) -> str:
    """Where to look at a run, as lines to print: for a server, the run's page and its experiment's runs;
    for a local store, first the `mlflow ui` command that serves it, then the same pages there."""
    experiment = _client(uri).get_run(run_id).info.experiment_id
    served = urlparse(uri).scheme in ("http", "https")
    address = uri.rstrip("/") if served else UI_ADDRESS
    lines = [] if served else [f"MLflow: mlflow ui --backend-store-uri {browsable_uri(uri)}   (serves the store at {address})"]
    return "\n".join(lines + [f"MLflow run:  {address}/#/experiments/{experiment}/runs/{run_id}",
                              f"MLflow runs: {address}/#/experiments/{experiment}?{RUNS_VIEW}"])
