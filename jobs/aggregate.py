"""Aggregate a run's traces: answers, votes, scaling curves, a plot, and an MLflow run.

    python -m jobs.aggregate run_dir=DIR [answer.format=gsm8k|math|number|auto|text|choice] [answer.audit=N]
                             [adaptive=esc|beta|dirichlet|confident|[esc,beta,...]]

Works on any directory whose traces/ holds at least problem_id, sample_idx, text and gold. Writes
answers.parquet, problems.parquet, curves.parquet, grading.parquet, curves.png and tokens.png into run_dir. A
method whose inputs are missing (weighted votes without logprobs, greedy without a greedy run) is not
reported; the table's notes, curves.parquet's metadata ("omitted") and MLflow tags say why. With
adaptive=<rule>, the stopping rules are replayed on the stored samples (analysis/adaptive.py): adaptive.parquet
and adaptive.png.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from omegaconf import DictConfig, OmegaConf

from actors.decodings import DECODINGS
from actors.rounds import answer_labels
from analysis import confidence as conf_lib
from analysis.adaptive import Schedule, budget_line, budget_replay, replay, rules_table, summarize
from analysis.answers import answer_format, answer_type, canonicalize
from analysis.curves import DELTA_SUFFIX, Curves, Estimates, Votes, majority_vote, paired_deltas
from analysis.errors import ConfigError
from analysis.grading import audit, grading_report
from analysis.methods import registry, scaling_curves
from analysis.plots import curves_figure, frontier_figure, tokens_figure
from analysis.stopping import variants
from analysis.voting import extract_all, grade_classes, group_answers, options_of
from jobs import cli, ingest
from jobs.config import budgets, resolved, saved_answer
from storage import rundir
from storage.traces import NoTracesError, RunDirError, in_sample_order, open_traces, scan
from tracking import mlflow_runs, runinfo, sweep

GREEDY_SUBDIR = "greedy"
READ_BATCH = 65_536


@dataclass
class Evaluation:
    """What one aggregation produced."""

    run_dir: str
    answers: pa.Table
    problems: pa.Table
    curves: list[dict[str, Any]]
    greedy: Optional[float] = None
    grading: Optional[pa.Table] = None  # per answer type: answers, graded exactly / symbolically / fell back
    omitted: dict[str, str] = field(default_factory=dict)  # method -> why it is not reported
    metrics: dict[str, float] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)  # local paths, or URIs when run_dir is one
    figures: dict[str, Any] = field(default_factory=dict)  # file name -> matplotlib Figure (also among files)
    votes: list[Votes] = field(default_factory=list)  # per problem, in problems' order
    title: str = ""  # what its plots are titled: the run's name, else its run_dir


def answers_from_traces(run_dir: str, fmt: str, confidence: str) -> pa.Table:
    """One row per sample: its extracted and canonical answer, the gold's key, confidence (null without
    logprobs), tokens and, from a CoT-decoding run, its branch's rank and Δ (texts are not kept)."""
    dataset = open_traces(run_dir)
    wanted = ["problem_id", "sample_idx", "text", "gold", "num_tokens", "token_logprobs", "top_logprobs", "decoding",
              "branch_rank", "answer_confidence"] + (["question"] if answer_format(fmt).options else [])
    columns = [c for c in wanted if c in dataset.schema.names]
    parts = []
    gold_keys: dict[tuple[str, Optional[str]], Optional[str]] = {}
    for batch in scan(dataset, columns=columns, batch_size=READ_BATCH):
        data = batch.to_pydict()
        n = batch.num_rows
        questions = data.get("question", [None] * n)
        pairs = extract_all([t or "" for t in data["text"]], fmt, questions=questions)
        scores = [
            None if lps is None else conf_lib.trace_confidence(lps, tops, confidence)
            for lps, tops in zip(data.get("token_logprobs", [None] * n), data.get("top_logprobs", [None] * n))
        ]
        for gold, question in zip(data["gold"], questions):
            if (str(gold), question) not in gold_keys:
                gold_keys[str(gold), question] = canonicalize(str(gold), fmt, options_of(question, fmt))
        parts.append(
            pa.table(
                {
                    "problem_id": data["problem_id"],
                    "sample_idx": pa.array(data["sample_idx"], pa.int64()),
                    "gold": [str(g) for g in data["gold"]],
                    "gold_key": pa.array([gold_keys[str(g), q] for g, q in zip(data["gold"], questions)], pa.string()),
                    "extracted": pa.array([a for a, _ in pairs], pa.string()),  # typed: a batch may hold no answer
                    "canonical": pa.array([k for _, k in pairs], pa.string()),
                    "confidence": pa.array(scores, pa.float64()),
                    "num_tokens": pa.array(data.get("num_tokens", [None] * n), pa.int64()),
                    "decoding": pa.array(data.get("decoding", [None] * n), pa.string()),  # null: traces from elsewhere
                    "branch_rank": pa.array(data.get("branch_rank", [None] * n), pa.int64()),  # CoT-decoding
                    "answer_confidence": pa.array(data.get("answer_confidence", [None] * n), pa.float64()),  # its Δ
                }
            )
        )
    table = in_sample_order(pa.concat_tables(parts))
    keys = pc.binary_join_element_wise(table["problem_id"], pc.cast(table["sample_idx"], pa.string()), "\x00")
    if pc.count_distinct(keys).as_py() != table.num_rows:
        raise RunDirError(f"{run_dir}: traces hold a (problem_id, sample_idx) more than once")
    return table


def _problem_slices(table: pa.Table):
    """(start, stop) of each problem's rows in a table sorted by problem_id."""
    ids = table["problem_id"].to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.array([], int)
    return zip(starts, np.r_[starts[1:], len(ids)])


def vote(answers: pa.Table, fmt: str) -> tuple[pa.Table, pa.Table, list[Votes]]:
    """Group answers per problem; the answers table gains class, correct, answer_type and graded_by
    (how its class's verdict was reached), plus one row per problem, and each problem's votes (problem_votes)."""
    labels_all, correct_all, graded_all, rows = [], [], [], []
    canonical = answers["canonical"].to_pylist()
    tokens = answers["num_tokens"].to_numpy(zero_copy_only=False).astype(float)  # NaN: not recorded
    for start, stop in _problem_slices(answers):
        gold = answers["gold"][int(start)].as_py()
        labels, classes = group_answers(canonical[start:stop], fmt)
        verdicts = grade_classes(classes, answers["gold_key"][int(start)].as_py(), fmt)
        right = next((i for i, verdict in enumerate(verdicts) if verdict.equal), -1)
        graded_all += [verdicts[label].how if label >= 0 else None for label in labels]
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
                "tokens": None if np.isnan(tokens[start:stop]).any() else int(tokens[start:stop].sum()),
            }
        )
    answers = answers.append_column("class", pa.array(np.concatenate(labels_all) if labels_all else [], pa.int64()))
    answers = answers.append_column("correct", pa.array(np.concatenate(correct_all) if correct_all else [], pa.bool_()))
    answers = answers.append_column("answer_type", pa.array([answer_type(k, fmt) for k in canonical], pa.string()))
    answers = answers.append_column("graded_by", pa.array(graded_all, pa.string()))
    return answers, pa.Table.from_pylist(rows), list(problem_votes(answers).values())


def problem_votes(answers: pa.Table) -> dict[str, Votes]:
    """Per problem id, its Votes from a voted answers table in sample order (as answers.parquet holds it): weights
    only when every sample that answered has a confidence, deltas (branch Δ) when it was CoT-decoded."""
    labels_all = answers["class"].to_numpy(zero_copy_only=False)
    correct_all = answers["correct"].to_numpy(zero_copy_only=False)
    weights_all = answers["confidence"].to_numpy(zero_copy_only=False)
    deltas_all = answers["answer_confidence"].to_numpy(zero_copy_only=False).astype(float)  # NaN: no answer
    branching = pa.array([name for name, d in DECODINGS.items() if d.branched])
    branched = pc.is_in(answers["decoding"], branching).fill_null(False).to_numpy(zero_copy_only=False)
    votes = {}
    for start, stop in _problem_slices(answers):
        labels = labels_all[start:stop]
        right = labels[correct_all[start:stop]]  # the right class's samples: none when no class is right
        weights = weights_all[start:stop]
        weights = None if np.isnan(weights[labels >= 0]).any() else np.nan_to_num(weights, nan=0.0)
        deltas = deltas_all[start:stop] if branched[start:stop].all() else None
        pid = answers["problem_id"][int(start)].as_py()
        votes[pid] = Votes(labels, int(right[0]) if len(right) else -1, weights, deltas)
    return votes


def greedy_dir(run_dir: str) -> str:
    """Where the greedy baseline of a run is sampled and read (jobs.evaluate, jobs.aggregate)."""
    return f"{run_dir.rstrip('/')}/{GREEDY_SUBDIR}"


def greedy_correct(run_dir: str, fmt: str, confidence: str) -> tuple[Optional[dict[str, bool]], Optional[float]]:
    """Per problem, whether the greedy baseline stored in run_dir/greedy is right (its one vote: `confidence`
    changes nothing), and its mean tokens per problem (None when its traces hold no num_tokens); (None, None)
    without one."""
    try:
        answers = answers_from_traces(greedy_dir(run_dir), fmt, confidence)
    except NoTracesError:
        return None, None
    first = answers.filter(pc.equal(answers["sample_idx"], 0))
    if first.num_rows == 0:
        return None, None
    _, table, _ = vote(first, fmt)
    tokens = first["num_tokens"]
    mean_tokens = None if tokens.null_count else float(pc.mean(tokens).as_py())
    return dict(zip(table["problem_id"].to_pylist(), table["correct"].to_pylist())), mean_tokens


def first_branch_correct(answers: pa.Table) -> dict[str, bool]:
    """Per problem, whether a CoT-decoding run's rank-0 branch (greedy decoding of the same prompt) is right."""
    first = answers.filter(pc.equal(answers["branch_rank"], 0))
    return dict(zip(first["problem_id"].to_pylist(), first["correct"].to_pylist()))


def deltas_to_greedy(curves: Curves, problem_ids: list[str], greedy: dict[str, bool], seed: int) -> list[dict]:
    """Paired differences of every curve to greedy, on the problems both have."""
    shared = np.array([pid in greedy for pid in problem_ids])
    baseline = np.array([float(greedy[pid]) for pid in problem_ids if pid in greedy])
    if not shared.any():
        return []
    per_problem = {m: Estimates(e.values[shared], e.stderr[shared], e.estimated[shared]) for m, e in curves.per_problem.items()}
    return paired_deltas(per_problem, curves.ks, baseline, seed=seed)


def aggregate_run(run_dir: str, fmt: str, confidence: str, seed: int = 0, title: str = "",
                  top_percent: Optional[float] = None) -> Evaluation:
    """Everything from traces to curves for one run directory; tables and plots (titled `title`, else the
    run_dir) land in run_dir.

    Every method of analysis.methods whose inputs the run holds is drawn (`top_percent` adds the
    DeepConf-filtered curve; a CoT-decoding run gets its max and agg curves)."""
    answers, problems_table, problems = vote(answers_from_traces(run_dir, fmt, confidence), fmt)
    part = scaling_curves(problems, seed=seed, top_percent=top_percent)
    curves = list(part.rows)
    branched = all(p.deltas is not None for p in problems)
    by_problem, greedy_tokens = greedy_correct(run_dir, fmt, confidence)
    by_problem = by_problem or (first_branch_correct(answers) if branched else None)
    ids = problems_table["problem_id"].to_pylist()
    greedy = None
    if by_problem:
        shared = [by_problem[pid] for pid in ids if pid in by_problem]
        greedy = float(np.mean(shared)) if shared else None
        curves += deltas_to_greedy(part, ids, by_problem, seed)
    grading = pa.Table.from_pylist(grading_report(answers["answer_type"].to_pylist(), answers["graded_by"].to_pylist(),
                                                  answers["correct"].to_pylist()))
    tokens = problems_table["tokens"].to_numpy(zero_copy_only=False).astype(float)
    result = Evaluation(run_dir, answers, problems_table, curves, greedy, grading,
                       omitted_methods(run_dir, problems, top_percent, greedy, tokens_known=not np.isnan(tokens).any()),
                       votes=problems, title=title or run_dir)
    curves_table = pa.Table.from_pylist(curves).replace_schema_metadata({"omitted": json.dumps(result.omitted)})
    for name, table in (("answers.parquet", answers), ("problems.parquet", problems_table),
                        ("curves.parquet", curves_table), ("grading.parquet", grading)):
        result.files.append(rundir.write_table(table, run_dir, name))
    accuracy_rows = [r for r in curves if not r["method"].endswith(DELTA_SUFFIX)]
    result.figures["curves.png"] = curves_figure(accuracy_rows, result.title, greedy=greedy)
    if "tokens" not in result.omitted:
        greedy_point = (greedy_tokens, greedy) if greedy is not None and greedy_tokens is not None else None
        result.figures["tokens.png"] = tokens_figure(accuracy_rows, float(tokens.sum()) / answers.num_rows,
                                                     result.title, greedy=greedy_point)
    result.files += [rundir.write_figure(fig, run_dir, name) for name, fig in result.figures.items()]
    result.metrics = {
        "problems": float(problems_table.num_rows),
        "samples": float(answers.num_rows),
        "no_answer_rate": float(pc.sum(pc.is_null(answers["canonical"])).as_py() / max(answers.num_rows, 1)),
    }
    if "tokens" not in result.omitted:
        result.metrics.update({"tokens/total": float(tokens.sum()), "tokens/per_problem": float(tokens.mean()),
                               "tokens/per_sample": float(tokens.sum() / answers.num_rows)})
    if greedy is not None:
        result.metrics["accuracy/greedy"] = greedy
    for name in (name for name, d in DECODINGS.items() if d.branched):  # cot_decoding_max -> cot_decoding/max
        result.metrics.update({r["method"].replace(f"{name}_", f"{name}/", 1): r["accuracy"] for r in part.rows
                               if r["method"].startswith(f"{name}_") and r["k"] == part.ks[-1]})
    return result


def omitted_methods(run_dir: str, problems: list[Votes], top_percent: Optional[float],
                    greedy: Optional[float], tokens_known: bool) -> dict[str, str]:
    """The methods (and token counts) whose inputs are missing, each with why it is not reported (a
    CoT-decoding method on a sampled run is not missing anything: it does not apply)."""
    omitted = {}
    unweighted = sum(p.weights is None for p in problems)
    if unweighted:
        why = (f"{unweighted} of {len(problems)} problems have answers without per-token logprobs "
               "(sample with sampling.logprobs >= 1 to weight votes)")
        omitted.update({name: why for name, method in registry(top_percent).items() if method.needs == "weights"})
    if greedy is None:
        omitted["greedy"] = f"no greedy run in {greedy_dir(run_dir)} (jobs.evaluate samples one)"
    if not tokens_known:
        omitted["tokens"] = "some traces hold no num_tokens"
    return omitted


def audit_lines(result: Evaluation, n: int, seed: int = 0) -> list[str]:
    """`n` random (extracted, gold, verdict) lines per answer type, to eyeball the grading."""
    answers = result.answers
    return audit(*(answers[c].to_pylist() for c in ("answer_type", "extracted", "gold", "correct", "graded_by")), n, seed)


def summary_table(result: Evaluation, ks: tuple[int, ...] = (1, 4, 16, 64, 256, 1024)) -> str:
    """A short text table: greedy, maj@k and pass@k (and the others) at a few k, then each method's
    paired difference to greedy in points, with its 95% interval at the largest k."""
    by = {(r["method"], r["k"]): r for r in result.curves}
    shown = sorted({k for _, k in by if k in ks} | {max(k for _, k in by)})
    methods = list(dict.fromkeys(m for m, _ in by))
    lines = [f"{'method':<26}" + "".join(f"{'k=' + str(k):>9}" for k in shown)]
    if result.greedy is not None:
        lines.append(f"{'greedy':<26}{100 * result.greedy:>8.1f}%")
    for method in (m for m in methods if not m.endswith(DELTA_SUFFIX)):
        cells = "".join(f"{100 * by[(method, k)]['accuracy']:>8.1f}%" if (method, k) in by else f"{'':>9}" for k in shown)
        lines.append(f"{method + '@k':<26}{cells}")
    deltas = [m for m in methods if m.endswith(DELTA_SUFFIX)]
    if deltas:
        lines.append(f"paired difference to greedy, points (95% CI at k={shown[-1]}):")
    for method in deltas:
        cells = "".join(f"{100 * by[(method, k)]['accuracy']:>+9.1f}" if (method, k) in by else f"{'':>9}" for k in shown)
        last = by.get((method, shown[-1]))
        interval = f"  [{100 * last['ci_low']:+.1f}, {100 * last['ci_high']:+.1f}]" if last else ""
        lines.append(f"{method.removesuffix(DELTA_SUFFIX) + '@k - greedy':<26}{cells}{interval}")
    lines += [f"note: {method} not reported: {why}" for method, why in result.omitted.items()]
    return "\n".join(lines)


def track(cfg: DictConfig, result: Evaluation, config: dict[str, Any], name: str, job: str,
          extra_metrics: Optional[dict[str, float]] = None, extra_params: Optional[dict[str, Any]] = None) -> Optional[str]:
    """Log the aggregation to MLflow as run `name` of `job` (evaluate | aggregate) when tracking is on;
    returns the MLflow run id. Greedy is logged at every k of the curves, a flat reference line."""
    if not cfg.tracking.enabled:
        return None
    settings = rundir.flatten(config)
    metrics = {**result.metrics, **(extra_metrics or {})}
    tags = {"job": job, "run_dir": result.run_dir, **{key: str(settings.get(f"{key}.name", "")) for key in ("model", "dataset", "prompt")},
            **sweep.override_tags(), **{f"omitted.{method}": why for method, why in result.omitted.items()},
            mlflow_runs.NOTE_TAG: runinfo.description(name, result.curves, metrics, result.omitted, DELTA_SUFFIX)}
    sampling_run = rundir.run_id(result.run_dir)
    if sampling_run:
        tags["sampling_run"] = sampling_run
    if job == "aggregate":
        evaluation = mlflow_runs.find_run(cfg.tracking.uri, cfg.tracking.experiment, {"run_dir": result.run_dir, "job": "evaluate"})
        if evaluation:
            tags["sampling_mlflow_run"] = evaluation
    greedy = metrics.pop("accuracy/greedy", None)
    ks = sorted({r["k"] for r in result.curves if r["method"] == "maj"})
    curves = result.curves + ([{"method": "greedy", "k": k, "accuracy": greedy} for k in ks] if greedy is not None else [])
    files = [f for f in result.files if f.rsplit("/", 1)[-1] not in result.figures]
    return mlflow_runs.log_evaluation(cfg.tracking.uri, cfg.tracking.experiment, name,
                                   runinfo.params(config, metrics, extra_params or {}), metrics, curves, files, config,
                                   tags, result.figures)


def replay_adaptive(cfg: DictConfig, result: Evaluation, fmt: str) -> tuple[dict[str, float], str]:
    """Replay `cfg` (the adaptive node, checked by jobs.config.check_adaptive: its rules, its budgets) on an
    evaluation's votes (answers read in `fmt`): adaptive.parquet, adaptive.png (joining result.files), metrics and
    the text. A rule with a prior gets it from adaptive.prior_run's answers, as online rounds do, else from the
    run's other half. Without rules or budget (adaptive=none) nothing is replayed."""
    rules = variants(OmegaConf.to_container(cfg.rules, resolve=True))
    totals = budgets(cfg)
    if not rules and not totals:
        return {}, ""
    summary, metrics, lines = [], {}, []
    maj = [r for r in result.curves if r["method"] == "maj"]
    if rules:
        summary = _replay_rules(rules, cfg, result, fmt)
        metrics = {f"adaptive/{s['rule']}/{key}": s[key] for s in summary for key in ("accuracy", "samples_per_problem",
                                                                                      "savings")}
        lines.append(rules_table(summary, maj))
    allocated = []
    for total in totals:
        try:
            b = budget_replay(result.votes, total, cfg.min_samples, cfg.batch, cfg.orders, cfg.seed)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        allocated.append(b)
        metrics.update({f"adaptive/budget{total}/{key}": b[key] for key in ("accuracy", "uniform_accuracy", "delta")})
        lines.append(budget_line(b))
    result.figures["adaptive.png"] = frontier_figure(summary, maj, result.title, allocated)
    result.files.append(rundir.write_figure(result.figures["adaptive.png"], result.run_dir, "adaptive.png"))
    return metrics, "\n".join(lines)


def _replay_rules(rules: list, cfg: DictConfig, result: Evaluation, fmt: str) -> list[dict[str, Any]]:
    """The stopping rules' replay, written as adaptive.parquet; its summary per rule."""
    ids = result.problems["problem_id"].to_pylist()
    for pid, problem in zip(ids, result.votes):
        if cfg.max_samples is not None and cfg.max_samples > len(problem.labels):
            raise ConfigError(f"adaptive.max_samples={cfg.max_samples}: problem {pid} has only "
                              f"{len(problem.labels)} stored samples")
    reference = answer_labels(cfg.prior_run, fmt) if cfg.prior_run else None
    rows = replay(result.votes, rules, Schedule(cfg.min_samples, cfg.max_samples, cfg.batch), cfg.orders, cfg.seed,
                  reference)
    for row in rows:
        row["problem_id"] = ids[row.pop("problem")]
    columns = ["rule", "problem_id", "samples_used", "correct", "n", "samples_used_stored", "correct_stored", "correct_full"]
    result.files.append(rundir.write_table(pa.Table.from_pylist([{c: r[c] for c in columns} for r in rows]),
                                           result.run_dir, "adaptive.parquet"))
    return summarize(rows, cfg.seed)


@cli.entry_point("aggregate")
def main(cfg: DictConfig) -> None:
    sampled = rundir.saved_config(cfg.run_dir) or {}
    answer = saved_answer(cfg.answer, sampled)  # the format and seed the run was aggregated with, unless given
    # The sampling run's config with this aggregation's own settings and tracking in place of its answer and tracking.
    config = {**{k: v for k, v in sampled.items() if k != "tracking"}, "run_dir": cfg.run_dir, "answer": answer,
              "adaptive": OmegaConf.to_container(cfg.adaptive, resolve=True),
              "tracking": OmegaConf.to_container(cfg.tracking, resolve=True)}
    name = runinfo.run_name(config, resolved(cli.compose()), sweep.member_overrides()) or cfg.run_dir
    result = aggregate_run(cfg.run_dir, answer["format"], answer["confidence"], answer["seed"], title=name,
                           top_percent=answer["top_percent"])
    adaptive_metrics, adaptive_table = replay_adaptive(cfg.adaptive, result, answer["format"])
    rules = ",".join(cfg.adaptive.rules) or None
    run_id = track(cfg, result, config, name, "aggregate", adaptive_metrics,
                   {"adaptive": rules, "adaptive.budget": cfg.adaptive.budget})
    print(summary_table(result))
    for line in ingest.peer_lines(cfg.run_dir, result.problems["problem_id"].to_pylist(), result.votes):
        print(line)  # an imported run: the source's own numbers beside marginal's
    if adaptive_table:
        print(adaptive_table)
    if answer["audit"]:
        print("\n".join(audit_lines(result, answer["audit"])))
    print(f"tables and plots: {', '.join(result.files)}", file=sys.stderr)
    if run_id:
        print(mlflow_runs.run_link(cfg.tracking.uri, run_id), file=sys.stderr)


if __name__ == "__main__":
    main()
