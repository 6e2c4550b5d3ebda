"""jobs.aggregate's adaptive replay: run the configured stopping rules on a run's stored samples.

Writes adaptive.parquet (one row per rule and problem) and adaptive.png (accuracy against samples per
problem, beside maj@k) into run_dir; returns the MLflow metrics and a text table.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from omegaconf import DictConfig, OmegaConf

from analysis.adaptive import Schedule, replay, summarize
from analysis.plots import plot_frontier
from analysis.stopping import variants
from jobs import rundir
from jobs.config import ConfigError, check_adaptive


def replay_run(cfg: DictConfig, result: Any) -> tuple[dict[str, float], str]:
    """Replay `cfg` (the adaptive node) on an Aggregate's votes; its files join result.files."""
    check_adaptive(cfg)
    try:
        rules = variants(OmegaConf.to_container(cfg.rules, resolve=True))
    except ValueError as error:
        raise ConfigError(str(error)) from None
    ids = result.problems["problem_id"].to_pylist()
    for pid, problem in zip(ids, result.votes):
        if cfg.max_samples is not None and cfg.max_samples > len(problem.labels):
            raise ConfigError(f"adaptive.max_samples={cfg.max_samples}: problem {pid} has only "
                              f"{len(problem.labels)} stored samples")
    rows = replay(result.votes, rules, Schedule(cfg.min_samples, cfg.max_samples, cfg.batch), cfg.orders, cfg.seed)
    for row in rows:
        row["problem_id"] = ids[row.pop("problem")]
    columns = ["rule", "problem_id", "samples_used", "correct", "n", "samples_used_stored", "correct_stored"]
    result.files.append(rundir.write_table(pa.Table.from_pylist([{c: r[c] for c in columns} for r in rows]),
                                           result.run_dir, "adaptive.parquet"))
    summary = summarize(rows)
    maj = [r for r in result.curves if r["method"] == "maj"]
    result.files.append(rundir.write_figure(lambda path: plot_frontier(summary, maj, path, result.run_dir),
                                            result.run_dir, "adaptive.png"))
    metrics = {f"adaptive/{s['rule']}/{key}": s[key] for s in summary for key in ("accuracy", "samples_per_problem", "savings")}
    return metrics, table(summary, maj)


def table(summary: list[dict[str, Any]], maj: list[dict[str, Any]]) -> str:
    """Per rule: accuracy and samples per problem (random orders, stored order), savings; maj@n last."""
    lines = [f"{'adaptive rule':<20}{'accuracy':>10}{'samples':>10}{'savings':>10}{'stored acc':>12}{'stored smp':>12}"]
    for s in summary:
        lines.append(f"{s['rule']:<20}{100 * s['accuracy']:>9.1f}%{s['samples_per_problem']:>10.2f}"
                     f"{100 * s['savings']:>9.1f}%{100 * s['accuracy_stored']:>11.1f}%{s['samples_per_problem_stored']:>12.2f}")
    full = max(maj, key=lambda r: r["k"])
    lines.append(f"{'maj@' + str(full['k']) + ' (full budget)':<20}{100 * full['accuracy']:>9.1f}%{full['k']:>10.2f}"
                 f"{0.0:>9.1f}%")
    return "\n".join(lines)
