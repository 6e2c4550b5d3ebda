"""Compare runs of an MLflow experiment: their scaling curves on one plot and one table, logged back to MLflow.

    python -m jobs.compare parent=RUN_ID                            # the members of a sweep
    python -m jobs.compare tag.override.prompt=cot                  # runs carrying a tag
    python -m jobs.compare filter="params.sampling.n = '32'"        # any MLflow search filter
    python -m jobs.compare parent=RUN_ID methods=[maj,pass] tracking.uri=http://127.0.0.1:5000

Selections combine (all must hold); sweep parents and earlier comparisons are never selected. Reads
through MlflowClient only: each run's `accuracy/<method>` history (step = k), its 95% intervals from
the logged table `curves.json`, and `tokens/per_problem`. Writes comparison.{png,parquet,csv,md} into `out` and logs them as the
artifacts of a new run tagged `comparison`.

Paired differences: each run against the first selected run (the oldest), on the problems both hold,
per method and k, with a paired bootstrap 95% interval over those problems (`paired.parquet`). They
are computed from each run's logged `answers.parquet` artifact; runs without one are named and skipped.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import numpy as np
from omegaconf import DictConfig, OmegaConf

from analysis.curves import Estimates, Votes, curve_rows, k_grid
from analysis.errors import ConfigError
from analysis.methods import METHODS, has_inputs, scaling_curves
from analysis.plots import curves_figure, save_figure
from jobs import cli
from jobs.aggregate import problem_votes
from storage import rundir
from storage.traces import in_sample_order
from tracking import mlflow_runs
from tracking.sweep import OVERRIDE_PREFIX, SWEEP_TAG

COMPARISON_TAG = "comparison"


@dataclass
class Comparison:
    """What one comparison produced."""

    table: pa.Table
    paired: pa.Table
    files: list[Path]
    run_id: str


def search_filter(parent: Optional[str], tags: dict[str, str], extra: Optional[str]) -> str:
    """One MLflow filter: children of `parent`, carrying every tag, and matching `extra`."""
    clauses = [f"tags.`mlflow.parentRunId` = '{parent}'"] if parent else []
    clauses += [f"tags.`{key}` = '{value}'" for key, value in sorted(tags.items())]
    return " and ".join(clauses + ([extra] if extra else []))


def select_runs(client: Any, experiment_id: str, filter_string: str) -> list[Any]:
    """The experiment's evaluation runs matching the filter, oldest first."""
    runs = client.search_runs([experiment_id], filter_string, order_by=["attributes.start_time ASC"])
    return [r for r in runs if COMPARISON_TAG not in r.data.tags and SWEEP_TAG not in r.data.tags]


def run_curves(client: Any, run_id: str, methods: list[str]) -> list[dict[str, Any]]:
    """A run's curves: one row per (method, k) with accuracy from its metric history, and the 95% interval
    from its logged `curves.json` table when it has one."""
    intervals = {(r["method"], r["k"]): r for r in logged_table(client, run_id)}
    rows = []
    for method in methods:
        for k, value in sorted({m.step: m.value for m in client.get_metric_history(run_id, f"accuracy/{method}")}.items()):
            bounds = intervals.get((method, k), {})
            rows.append({"method": method, "k": k, "accuracy": value,
                         **{c: bounds[c] for c in ("ci_low", "ci_high") if _known(bounds.get(c))}})
    return rows


def _known(value: Any) -> bool:
    """Whether a table cell holds a number (an empty cell reads back as None or NaN)."""
    return value is not None and value == value


def logged_table(client: Any, run_id: str) -> list[dict[str, Any]]:
    """The rows of a run's `curves.json` table (mlflow_runs.CURVES_TABLE, as `log_table` writes it: columns and
    data), none when it logged no such table. (`MlflowClient.load_table` searches the default tracking URI.)"""
    if mlflow_runs.CURVES_TABLE not in {a.path for a in client.list_artifacts(run_id)}:
        return []
    with tempfile.TemporaryDirectory() as staging:
        table = json.loads(Path(client.download_artifacts(run_id, mlflow_runs.CURVES_TABLE, staging)).read_text())
    return [dict(zip(table["columns"], row)) for row in table["data"]]


def run_labels(runs: list[Any]) -> dict[str, str]:
    """A short label per run: the overrides in which the selected runs differ, else the run's name."""
    overrides = {r.info.run_id: {key[len(OVERRIDE_PREFIX):]: value for key, value in r.data.tags.items()
                                 if key.startswith(OVERRIDE_PREFIX)} for r in runs}
    keys = sorted({key for values in overrides.values() for key in values})
    varying = [key for key in keys if len({values.get(key) for values in overrides.values()}) > 1]
    labels = {}
    for run in runs:
        values = overrides[run.info.run_id]
        labels[run.info.run_id] = " ".join(f"{k}={values[k]}" for k in varying if k in values) or run.info.run_name
    if len(set(labels.values())) < len(labels):
        labels = {run_id: f"{label} ({run_id[:8]})" for run_id, label in labels.items()}
    return labels


def comparison_table(runs: list[Any], curves: dict[str, list[dict[str, Any]]], labels: dict[str, str],
                     methods: list[str]) -> pa.Table:
    """One row per (run, method): accuracy at each k, tokens per problem, greedy accuracy."""
    ks = sorted({row["k"] for rows in curves.values() for row in rows})
    rows = []
    for run in runs:
        run_id, metrics = run.info.run_id, run.data.metrics
        for method in methods:
            by_k = {r["k"]: r["accuracy"] for r in curves[run_id] if r["method"] == method}
            if by_k:
                rows.append({"run_id": run_id, "run": labels[run_id], "method": method,
                             **{f"acc@{k}": by_k.get(k) for k in ks},
                             "tokens_per_problem": metrics.get("tokens/per_problem"),
                             "greedy": metrics.get("accuracy/greedy")})
    return pa.Table.from_pylist(rows)


def paired_differences(base: dict[str, Votes], other: dict[str, Votes], methods: list[str],
                       seed: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Per method and k, the mean of (other - base) over their shared problems with a paired bootstrap
    interval (the same resampled problems on both sides); also how many problems were shared. A method whose
    inputs a side lacks (weights without confidences, as its aggregation omits it) is left out."""
    shared = sorted(set(base) & set(other))
    if not shared:
        return [], 0
    methods = [m for m in methods if has_inputs(METHODS[m], [side[p] for side in (base, other) for p in shared])]
    ks = k_grid(min(min(len(base[p].labels), len(other[p].labels)) for p in shared))
    sides = [scaling_curves([side[p] for p in shared], ks=ks, methods=methods, seed=seed).per_problem
             for side in (base, other)]
    rows = []
    for method in methods:
        (b, o) = (side[method] for side in sides)
        rows += curve_rows(method, ks, Estimates(o.values - b.values, np.hypot(o.stderr, b.stderr),
                                                 o.estimated | b.estimated), seed=seed)
    return rows, len(shared)


def paired_table(client: Any, runs: list[Any], labels: dict[str, str], methods: list[str], staging: Path) -> pa.Table:
    """Every later run against the first one, from their answers.parquet artifacts."""
    problems, missing = {}, []
    for run in runs:
        if "answers.parquet" not in {a.path for a in client.list_artifacts(run.info.run_id)}:
            missing.append(labels[run.info.run_id])
            continue
        path = client.download_artifacts(run.info.run_id, "answers.parquet", str(staging / run.info.run_id))
        problems[run.info.run_id] = problem_votes(in_sample_order(pq.read_table(path)))
    if missing:
        print(f"note: no paired differences for {missing}: they have no answers.parquet artifact", file=sys.stderr)
    base, rows = runs[0].info.run_id, []
    for run in runs[1:]:
        if base not in problems or run.info.run_id not in problems:
            continue
        diffs, shared = paired_differences(problems[base], problems[run.info.run_id], methods)
        rows += [{"run": labels[run.info.run_id], "baseline": labels[base], "method": r["method"], "k": r["k"],
                  "difference": r["accuracy"], "ci_low": r["ci_low"], "ci_high": r["ci_high"], "problems": shared}
                 for r in diffs]
    return pa.Table.from_pylist(rows)


def markdown(table: pa.Table) -> str:
    """The table in Markdown, accuracies in percent."""
    def cell(name: str, value: Any) -> str:
        if value is None:
            return ""
        if name.startswith("acc@") or name == "greedy":
            return f"{100 * value:.1f}%"
        if name in ("difference", "ci_low", "ci_high"):
            return f"{100 * value:+.1f}"
        return f"{value:.1f}" if isinstance(value, float) else str(value)

    names = [n for n in table.column_names if n != "run_id"]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(cell(n, row[n]) for n in names) + " |" for row in table.to_pylist()]
    return "\n".join(lines) + "\n"


def write_outputs(table: pa.Table, paired: pa.Table, plot_rows: list[dict[str, Any]], out: Path, title: str) -> list[Path]:
    """comparison.{png,parquet,csv,md} in `out`, and paired.{parquet,md} when there are paired differences."""
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / "comparison.parquet")
    pacsv.write_csv(table, out / "comparison.csv")
    (out / "comparison.md").write_text(markdown(table))
    png = save_figure(curves_figure(plot_rows, title, label_key="label"), out / "comparison.png")
    files = [png, out / "comparison.parquet", out / "comparison.csv", out / "comparison.md"]
    if paired.num_rows:
        pq.write_table(paired, out / "paired.parquet")
        (out / "paired.md").write_text(markdown(paired))
        files += [out / "paired.parquet", out / "paired.md"]
    return files


def compare(uri: str, experiment: str, filter_string: str, methods: list[str], out: Path) -> Comparison:
    """Select runs, read their curves (`methods` registered ones: jobs.config.validate_compare), write the plot
    and table, and log them as a comparison run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ConfigError(f"experiment={experiment!r}: no such experiment in {uri}")
    runs = select_runs(client, found.experiment_id, filter_string)
    curves = {r.info.run_id: run_curves(client, r.info.run_id, methods) for r in runs}
    runs = [r for r in runs if curves[r.info.run_id]]
    if not runs:
        raise ConfigError(f"experiment={experiment!r}: no run matching {filter_string or 'anything'!r} "
                         f"has accuracy/{methods[0]} curves")
    labels = run_labels(runs)
    table = comparison_table(runs, curves, labels, methods)
    with tempfile.TemporaryDirectory() as staging:
        paired = paired_table(client, runs, labels, methods, Path(staging))
    plot_rows = [{**row, "label": labels[r.info.run_id] + (f" {row['method']}@k" if len(methods) > 1 else "")}
                 for r in runs for row in curves[r.info.run_id]]
    files = write_outputs(table, paired, plot_rows, out, f"{experiment}: {len(runs)} runs")
    tags = {COMPARISON_TAG: "true", "compare.filter": filter_string or "(every run)", "compare.runs": str(len(runs))}
    return Comparison(table, paired, files, log_comparison(client, found.experiment_id, files, tags))


def log_comparison(client: Any, experiment_id: str, files: list[Path], tags: dict[str, str]) -> str:
    """A finished run holding the comparison's files as artifacts; returns its id."""
    name = f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
    for path in files:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id)
    return run_id


def selection(cfg: DictConfig) -> str:
    """The MLflow filter for the runs that `parent`, `tag` and `filter` select."""
    tags = {key: str(value) for key, value in rundir.flatten(OmegaConf.to_container(cfg.tag)).items()}
    return search_filter(cfg.parent, tags, cfg.filter)


@cli.entry_point("compare")
def main(cfg: DictConfig) -> None:
    result = compare(cfg.tracking.uri, cfg.experiment, selection(cfg), list(cfg.methods), Path(cfg.out))
    print(markdown(result.table))
    if result.paired.num_rows:
        print(f"paired difference to {result.paired['baseline'][0]}, points (95% CI):\n{markdown(result.paired)}")
    print(f"table and plot: {Path(cfg.out) / 'comparison.{png,parquet,csv,md}'}", file=sys.stderr)
    print(mlflow_runs.run_link(cfg.tracking.uri, result.run_id), file=sys.stderr)


def hydra_args(argv: list[str]) -> list[str]:
    """The command line as Hydra must read it: `tag.KEY=VALUE` adds a key the config lacks (`+tag.KEY=VALUE`),
    and a `filter=` value stays one string whatever MLflow syntax it holds (spaces, quotes, comparisons)."""
    args = []
    for arg in argv:
        if arg.startswith("tag."):
            arg = "+" + arg
        elif arg.startswith("filter=") and not arg.startswith(("filter='", 'filter="')):
            arg = 'filter="' + arg[len("filter="):].replace('"', '\\"') + '"'
        args.append(arg)
    return args


if __name__ == "__main__":
    sys.argv = hydra_args(sys.argv)
    main()
