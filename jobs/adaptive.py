"""jobs.aggregate's adaptive replay: run the configured stopping rules on a run's stored samples.

Writes adaptive.parquet (one row per rule and problem) and adaptive.png (accuracy against samples per
problem, beside maj@k) into run_dir; with adaptive.budget, also compares a total budget allocated to the
least decided problems with uniform maj@k. Returns the MLflow metrics and a text table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa
from omegaconf import DictConfig, OmegaConf

from analysis.adaptive import Schedule, budget_replay, replay, summarize
from analysis.plots import frontier_figure
from analysis.stopping import variants
from jobs import rundir
from jobs.config import ConfigError

if TYPE_CHECKING:  # jobs.aggregate imports this module
    from jobs.aggregate import Aggregate


def replay_run(cfg: DictConfig, result: "Aggregate") -> tuple[dict[str, float], str]:
    """Replay `cfg` (the adaptive node, checked by jobs.config.check_adaptive: its rules, its budget) on an
    Aggregate's votes; files join result.files. Without rules or budget (adaptive=none) nothing is replayed."""
    rules = variants(OmegaConf.to_container(cfg.rules, resolve=True))
    metrics, text = replay_rules(rules, cfg, result) if rules else ({}, "")
    if cfg.budget is None:
        return metrics, text
    try:
        b = budget_replay(result.votes, cfg.budget, cfg.min_samples, cfg.batch, cfg.orders, cfg.seed)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    metrics.update({"adaptive/budget/accuracy": b["accuracy"], "adaptive/budget/uniform_accuracy": b["uniform_accuracy"]})
    line = (f"budget {cfg.budget} samples ({cfg.budget / len(result.votes):.2f} per problem): least decided first "
            f"{100 * b['accuracy']:.1f}%, uniform maj@{int(b['uniform_k'])} {100 * b['uniform_accuracy']:.1f}% "
            f"(stored order: {100 * b['accuracy_stored']:.1f}% vs {100 * b['uniform_accuracy_stored']:.1f}%)")
    return metrics, "\n".join(filter(None, [text, line]))


def replay_rules(rules: list, cfg: DictConfig, result: "Aggregate") -> tuple[dict[str, float], str]:
    """The stopping rules' replay: adaptive.parquet, adaptive.png, metrics and the table."""
    ids = result.problems["problem_id"].to_pylist()
    for pid, problem in zip(ids, result.votes):
        if cfg.max_samples is not None and cfg.max_samples > len(problem.labels):
            raise ConfigError(f"adaptive.max_samples={cfg.max_samples}: problem {pid} has only "
                              f"{len(problem.labels)} stored samples")
    rows = replay(result.votes, rules, Schedule(cfg.min_samples, cfg.max_samples, cfg.batch), cfg.orders, cfg.seed)
    for row in rows:
        row["problem_id"] = ids[row.pop("problem")]
    columns = ["rule", "problem_id", "samples_used", "correct", "n", "samples_used_stored", "correct_stored", "correct_full"]
    result.files.append(rundir.write_table(pa.Table.from_pylist([{c: r[c] for c in columns} for r in rows]),
                                           result.run_dir, "adaptive.parquet"))
    summary = summarize(rows, cfg.seed)
    maj = [r for r in result.curves if r["method"] == "maj"]
    result.figures["adaptive.png"] = frontier_figure(summary, maj, result.title)
    result.files.append(rundir.write_figure(result.figures["adaptive.png"], result.run_dir, "adaptive.png"))
    metrics = {f"adaptive/{s['rule']}/{key}": s[key] for s in summary for key in ("accuracy", "samples_per_problem", "savings")}
    return metrics, table(summary, maj)


def table(summary: list[dict[str, Any]], maj: list[dict[str, Any]]) -> str:
    """Per rule: accuracy and samples per problem (random orders, stored order), savings; maj@n last."""
    full = max(maj, key=lambda r: r["k"])
    lines = [f"{'adaptive rule':<20}{'accuracy':>10}{'samples':>10}{'savings':>10}{'stored acc':>12}{'stored smp':>12}"
             "  vs full budget [paired 95% CI]"]
    for s in summary:
        lines.append(f"{s['rule']:<20}{100 * s['accuracy']:>9.1f}%{s['samples_per_problem']:>10.2f}"
                     f"{100 * s['savings']:>9.1f}%{100 * s['accuracy_stored']:>11.1f}%{s['samples_per_problem_stored']:>12.2f}"
                     f"  {100 * s['delta']:+.1f} [{100 * s['delta_low']:+.1f}, {100 * s['delta_high']:+.1f}]")
    lines.append(f"{'maj@' + str(full['k']) + ' (full budget)':<20}{100 * full['accuracy']:>9.1f}%{full['k']:>10.2f}"
                 f"{0.0:>9.1f}%")
    return "\n".join(lines)
