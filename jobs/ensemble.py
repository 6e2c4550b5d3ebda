"""Votes across models: marginalize over the samples of several runs on the same problems.

    python -m jobs.ensemble run_dirs=[runs/a,runs/b] out=runs/ensemble/ab [weights=[1,2]]

Reads each run's answers.parquet (written by jobs.aggregate), groups every run's answers per problem into
shared vote classes, and reports ensemble@k (k samples from each run, `k` in the table counting all of
them) beside each run's own maj@k, with 95% bootstrap intervals over problems. Writes curves.parquet and
curves.png into `out` and logs an MLflow run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa
from omegaconf import DictConfig

from analysis.curves import k_grid
from analysis.ensemble import METHOD, EnsembleProblem, ensemble_curve, ensemble_problem
from analysis.errors import MarginalError
from analysis.methods import scaling_curves
from analysis.plots import curves_figure
from jobs import cli
from jobs.config import saved_answer
from storage import rundir
from storage.traces import in_sample_order
from tracking import mlflow_runs


class EnsembleError(MarginalError, ValueError):
    """Runs that cannot be ensembled; the message names them."""


def read_answers(run_dir: str) -> pa.Table:
    """A run's answers (problem_id, sample_idx, canonical, gold_key), sorted; fails clearly before aggregation."""
    table = rundir.read_table(run_dir, "answers.parquet", None)
    if table is None or "gold_key" not in table.column_names:
        state = "no answers.parquet" if table is None else "answers.parquet without a gold_key column"
        raise EnsembleError(f"{run_dir}: {state}; run `python -m jobs.aggregate run_dir={run_dir}` first")
    return in_sample_order(table.select(["problem_id", "sample_idx", "canonical", "gold_key"]))


def check_same_problems(answers: dict[str, pa.Table]) -> list[str]:
    """The problem ids every run holds, in order; an error naming the runs when their problems differ."""
    ids = {run: set(table["problem_id"].to_pylist()) for run, table in answers.items()}
    first, common = next(iter(ids)), set.intersection(*ids.values())
    for run, held in ids.items():
        if held != ids[first]:
            raise EnsembleError(
                f"runs {first} and {run} hold different problems ({len(ids[first] - held)} only in {first}, "
                f"{len(held - ids[first])} only in {run}); ensemble runs of the same problems (dataset.limit)"
            )
    return sorted(common)


def per_problem(table: pa.Table) -> dict[str, list[Optional[str]]]:
    """A run's canonical answers per problem, in sample order."""
    keys: dict[str, list[Optional[str]]] = {}
    for pid, key in zip(table["problem_id"].to_pylist(), table["canonical"].to_pylist()):
        keys.setdefault(pid, []).append(key)
    return keys


def ensemble_problems(answers: dict[str, pa.Table], fmt: str) -> list[EnsembleProblem]:
    """Each problem's answers from every run, grouped into shared classes (the gold's key from the first run,
    as its aggregation read it: a choice gold given as an option's text is already its letter)."""
    problem_ids = check_same_problems(answers)
    keys = [per_problem(table) for table in answers.values()]
    first = next(iter(answers.values()))
    gold = dict(zip(first["problem_id"].to_pylist(), first["gold_key"].to_pylist()))
    return [ensemble_problem([run[pid] for run in keys], gold[pid], fmt) for pid in problem_ids]


def run_names(run_dirs: list[str]) -> list[str]:
    """Short labels: each run_dir's last folder, with its parents where that is ambiguous."""
    names = [Path(d).name for d in run_dirs]
    return [n if names.count(n) == 1 else d for n, d in zip(names, run_dirs)]


def ensemble(run_dirs: list[str], fmt: str, weights: Optional[list[float]], seed: int) -> list[dict[str, Any]]:
    """Curve rows: ensemble@k over all runs (at least two, one weight each: jobs.config.validate_ensemble), then
    each run's maj@k on the same shared classes (key "run")."""
    problems = ensemble_problems({d: read_answers(d) for d in run_dirs}, fmt)
    rows = [{**row, "run": METHOD} for row in ensemble_curve(problems, model_weights=weights, seed=seed)]
    for i, name in enumerate(run_names(run_dirs)):
        members = [p.member(i) for p in problems]
        ks = k_grid(min(len(p.labels) for p in members))
        rows += [{**row, "run": name} for row in scaling_curves(members, ks, ("maj",), seed).rows]
    return rows


def table_text(rows: list[dict[str, Any]]) -> str:
    """Accuracy (%) per curve and k, as a short text table."""
    ks = sorted({r["k"] for r in rows})
    lines = [f"{'curve':<28}" + "".join(f"{'k=' + str(k):>9}" for k in ks)]
    for run in dict.fromkeys(r["run"] for r in rows):
        by_k = {r["k"]: r for r in rows if r["run"] == run}
        label = run if run == METHOD else f"{run} maj"
        lines.append(f"{label:<28}" + "".join(f"{100 * by_k[k]['accuracy']:>8.1f}%" if k in by_k else f"{'':>9}" for k in ks))
    return "\n".join(lines)


@cli.entry_point("ensemble")
def main(cfg: DictConfig) -> None:
    run_dirs = list(cfg.run_dirs)
    answer = saved_answer(cfg.answer, rundir.saved_config(run_dirs[0]))
    fmt, seed = answer["format"], answer["seed"]
    weights = list(cfg.weights) if cfg.weights is not None else None
    rows = ensemble(run_dirs, fmt, weights, seed)
    out = cfg.out.rstrip("/")
    table = rundir.write_table(pa.Table.from_pylist(rows), out, "curves.parquet")
    title = f"ensemble of {len(run_dirs)} runs"
    plot = rundir.write_figure(curves_figure(rows, title, label_key=("run", "method")), out, "curves.png")
    print(table_text(rows))
    if cfg.tracking.enabled:
        logged = [r if r["run"] == METHOD else {**r, "method": f"{r['method']}/{r['run']}"} for r in rows]
        config = {"run_dirs": run_dirs, "weights": weights, "answer": {"format": fmt, "seed": seed}, "out": out}
        run_id = mlflow_runs.log_evaluation(
            cfg.tracking.uri, cfg.tracking.experiment, f"ensemble-{'+'.join(run_names(run_dirs))}",
            rundir.flatten(config), {"runs": float(len(run_dirs))}, logged,
            [table, plot], config, {"ensemble": "true"},
        )
        print(mlflow_runs.run_link(cfg.tracking.uri, run_id), file=sys.stderr)
    print(f"table and plot: {table}, {plot}", file=sys.stderr)


if __name__ == "__main__":
    main()
