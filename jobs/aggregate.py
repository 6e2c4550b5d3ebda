"""Aggregate a run's traces: answers, votes, scaling curves, a plot, and an MLflow run.

    python -m jobs.aggregate run_dir=DIR [answer.format=gsm8k|math|number|auto]

Works on any directory whose traces/ holds at least problem_id, sample_idx, text and gold. Writes
answers.parquet, problems.parquet, curves.parquet and curves.png into run_dir.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from omegaconf import DictConfig

from analysis import confidence as conf_lib
from analysis.cot_decoding import cot_decoding_curves
from analysis.curves import Problem as VoteProblem
from analysis.curves import majority_vote, scaling_curves
from analysis.plots import plot_curves
from analysis.traces import open_traces, scan
from analysis.voting import correct_class, extract_all, group_answers
from jobs.config import check_top_percent
from jobs import cli, rundir, sweep, tracking

GREEDY_SUBDIR = "greedy"
READ_BATCH = 65_536


@dataclass
class Aggregate:
    """What one aggregation produced."""

    run_dir: str
    answers: pa.Table
    problems: pa.Table
    curves: list[dict[str, Any]]
    greedy: Optional[float] = None
    metrics: dict[str, float] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)  # local paths, or URIs when run_dir is one


def read_answers(run_dir: str, fmt: str, confidence: str) -> pa.Table:
    """One row per sample: its extracted and canonical answer, confidence and tokens (texts are not kept)."""
    dataset = open_traces(run_dir)
    wanted = ["problem_id", "sample_idx", "text", "gold", "num_tokens", "token_logprobs", "top_logprobs",
              "branch_rank", "answer_confidence"]
    columns = [c for c in wanted if c in dataset.schema.names]
    parts = []
    for batch in scan(dataset, columns=columns, batch_size=READ_BATCH):
        data = batch.to_pydict()
        pairs = extract_all([t or "" for t in data["text"]], fmt)
        n = len(pairs)
        scores = [
            conf_lib.trace_confidence(lps or [], tops, confidence)
            for lps, tops in zip(data.get("token_logprobs", [None] * n), data.get("top_logprobs", [None] * n))
        ]
        parts.append(
            pa.table(
                {
                    "problem_id": data["problem_id"],
                    "sample_idx": pa.array(data["sample_idx"], pa.int64()),
                    "gold": [str(g) for g in data["gold"]],
                    "extracted": pa.array([a for a, _ in pairs], pa.string()),  # typed: a batch may hold no answer
                    "canonical": pa.array([k for _, k in pairs], pa.string()),
                    "confidence": pa.array(scores, pa.float64()),
                    "num_tokens": pa.array(data.get("num_tokens", [0] * n), pa.int64()),
                    "branch_rank": pa.array(data.get("branch_rank", [None] * n), pa.int64()),  # CoT-decoding
                    "answer_confidence": pa.array(data.get("answer_confidence", [None] * n), pa.float64()),  # its Δ
                }
            )
        )
    table = pa.concat_tables(parts).sort_by([("problem_id", "ascending"), ("sample_idx", "ascending")])
    keys = pc.binary_join_element_wise(table["problem_id"], pc.cast(table["sample_idx"], pa.string()), "\x00")
    if pc.count_distinct(keys).as_py() != table.num_rows:
        raise ValueError(f"{run_dir}: traces hold a (problem_id, sample_idx) more than once")
    return table


def _problem_slices(table: pa.Table):
    """(start, stop) of each problem's rows in a table sorted by problem_id."""
    ids = table["problem_id"].to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.array([], int)
    return zip(starts, np.r_[starts[1:], len(ids)])


def vote(answers: pa.Table, fmt: str) -> tuple[pa.Table, pa.Table, list[VoteProblem]]:
    """Group answers per problem; the answers table gains class and correct, plus one row per problem."""
    labels_all, correct_all, rows, problems = [], [], [], []
    canonical = answers["canonical"].to_pylist()
    weights_all = answers["confidence"].to_numpy(zero_copy_only=False)
    tokens = answers["num_tokens"].to_numpy()
    for start, stop in _problem_slices(answers):
        gold = answers["gold"][int(start)].as_py()
        labels, classes = group_answers(canonical[start:stop], fmt)
        right = correct_class(classes, gold, fmt)
        weights = np.nan_to_num(weights_all[start:stop], nan=0.0)
        problems.append(VoteProblem(labels, right, weights))
        top, share = majority_vote(labels)
        labels_all.append(labels)
        correct_all.append((labels == right) & (labels >= 0))
        rows.append(
            {
                "problem_id": answers["problem_id"][int(start)].as_py(),
                "gold": gold,
                "n": int(stop - start),
                "majority_answer": classes[top] if top >= 0 else None,
                "vote_share": share,
                "correct": bool(top >= 0 and top == right),
                "distinct_answers": len(classes),
                "no_answer": int((labels < 0).sum()),
                "samples_correct": int(((labels == right) & (labels >= 0)).sum()),
                "tokens": int(tokens[start:stop].sum()),
            }
        )
    answers = answers.append_column("class", pa.array(np.concatenate(labels_all) if labels_all else [], pa.int64()))
    answers = answers.append_column("correct", pa.array(np.concatenate(correct_all) if correct_all else [], pa.bool_()))
    return answers, pa.Table.from_pylist(rows), problems


def greedy_accuracy(run_dir: str, fmt: str) -> Optional[float]:
    """Accuracy of the greedy baseline stored in run_dir/greedy, if the run has one."""
    greedy_dir = f"{run_dir.rstrip('/')}/{GREEDY_SUBDIR}"
    try:
        answers = read_answers(greedy_dir, fmt, "mean")
    except FileNotFoundError:
        return None
    first = answers.filter(pc.equal(answers["sample_idx"], 0))
    if first.num_rows == 0:
        return None
    _, table, _ = vote(first, fmt)
    return float(np.mean(table["correct"].to_numpy(zero_copy_only=False)))


def branch_problems(answers: pa.Table, problems: list[VoteProblem]) -> list[VoteProblem]:
    """A CoT-decoding run's problems with each branch's Δ as its weight (branches in rank order)."""
    deltas = answers["answer_confidence"].to_numpy(zero_copy_only=False)
    return [VoteProblem(p.labels, p.correct_class, deltas[start:stop]) for p, (start, stop) in zip(problems, _problem_slices(answers))]


def aggregate(run_dir: str, fmt: str, confidence: str = "mean", seed: int = 0, title: str = "",
              top_percent: Optional[float] = None) -> Aggregate:
    """Everything from traces to curves for one run directory; tables and the plot land in run_dir.

    `top_percent` adds the DeepConf-filtered curve; a CoT-decoding run gets its max and agg curves."""
    answers, problems_table, problems = vote(read_answers(run_dir, fmt, confidence), fmt)
    curves = scaling_curves(problems, seed=seed, top_percent=top_percent).rows
    branched = answers["branch_rank"].null_count < answers.num_rows
    cot_rows = cot_decoding_curves(branch_problems(answers, problems), seed=seed) if branched else []
    curves += cot_rows
    greedy = greedy_accuracy(run_dir, fmt)
    result = Aggregate(run_dir, answers, problems_table, curves, greedy)
    for name, table in (("answers.parquet", answers), ("problems.parquet", problems_table),
                        ("curves.parquet", pa.Table.from_pylist(curves))):
        result.files.append(rundir.write_table(table, run_dir, name))
    result.files.append(rundir.write_figure(lambda path: plot_curves(curves, path, title or run_dir, greedy=greedy),
                                            run_dir, "curves.png"))
    tokens = problems_table["tokens"].to_numpy()
    result.metrics = {
        "problems": float(problems_table.num_rows),
        "samples": float(answers.num_rows),
        "tokens/total": float(tokens.sum()),
        "tokens/per_problem": float(tokens.mean()) if len(tokens) else 0.0,
        "tokens/per_sample": float(tokens.sum() / max(answers.num_rows, 1)),
        "no_answer_rate": float(pc.sum(pc.is_null(answers["canonical"])).as_py() / max(answers.num_rows, 1)),
    }
    if greedy is not None:
        result.metrics["accuracy/greedy"] = greedy
    widest = max((r["k"] for r in cot_rows), default=0)
    result.metrics.update({f"cot_decoding/{r['method'].removeprefix('cot_decoding_')}": r["accuracy"]
                           for r in cot_rows if r["k"] == widest})
    return result


def summary_table(result: Aggregate, ks: tuple[int, ...] = (1, 4, 16, 64, 256, 1024)) -> str:
    """A short text table: greedy, then maj@k and pass@k (and weighted) at a few k."""
    by = {(r["method"], r["k"]): r for r in result.curves}
    shown = sorted({k for _, k in by if k in ks} | {max(k for _, k in by)})
    lines = [f"{'method':<22}" + "".join(f"{'k=' + str(k):>9}" for k in shown)]
    if result.greedy is not None:
        lines.append(f"{'greedy':<22}{100 * result.greedy:>8.1f}%")
    for method in dict.fromkeys(m for m, _ in by):
        cells = "".join(f"{100 * by[(method, k)]['accuracy']:>8.1f}%" if (method, k) in by else f"{'':>9}" for k in shown)
        lines.append(f"{method + '@k':<22}{cells}")
    return "\n".join(lines)


def track(cfg: DictConfig, result: Aggregate, config: dict[str, Any], extra_metrics: Optional[dict[str, float]] = None) -> Optional[str]:
    """Log the aggregation to MLflow when tracking is on; returns the MLflow run id."""
    if not cfg.tracking.enabled:
        return None
    params = rundir.flatten(config)
    names = [str(params.get(k, "")) for k in ("model.name", "dataset.name", "prompt.name")]
    tags = {"run_dir": result.run_dir, "model": names[0], "dataset": names[1], "prompt": names[2], **sweep.override_tags()}
    return tracking.log_evaluation(
        cfg.tracking.uri, cfg.tracking.experiment, "-".join(filter(None, names)) or result.run_dir, params,
        {**result.metrics, **(extra_metrics or {})}, result.curves, result.files, config, tags,
    )


@cli.entry_point("aggregate")
def main(cfg: DictConfig) -> None:
    check_top_percent(cfg.answer.top_percent)
    config = rundir.saved_config(cfg.run_dir) or {"run_dir": cfg.run_dir}
    fmt = cfg.answer.format or config.get("answer", {}).get("format") or "auto"
    result = aggregate(cfg.run_dir, fmt, cfg.answer.confidence, top_percent=cfg.answer.top_percent)
    answer = {"format": fmt, "confidence": cfg.answer.confidence, "top_percent": cfg.answer.top_percent}
    run_id = track(cfg, result, {**config, "answer": answer})
    print(summary_table(result))
    print(f"tables and plot: {cfg.run_dir}/{{answers,problems,curves}}.parquet, {result.files[-1]}", file=sys.stderr)
    if run_id:
        print(f"MLflow: {tracking.run_link(cfg.tracking.uri, run_id)}", file=sys.stderr)


if __name__ == "__main__":
    main()
