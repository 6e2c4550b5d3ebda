"""The tables of docs/strategies.md, recomputed from the runs published in docs/results/ (no engine).

    python -m benchmarks.published                  # every table whose runs are published, in Markdown
    python -m benchmarks.published temperature     # one table

Each run is aggregated as `python -m jobs.aggregate run_dir=<run>` aggregates it (its saved answer format and
seed, so the same intervals), into a scratch copy: docs/results/ keeps only traces and config.yaml. A table
whose runs are not all published yet is left out, with a line saying which run is missing.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pyarrow.compute as pc
from omegaconf import OmegaConf

from actors.decodings import DECODINGS
from jobs.aggregate import Evaluation, aggregate_run
from storage.rundir import saved_config
from storage.traces import open_traces

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
TEMPERATURE_RUNS = "gsm8k_train-cot-50x16"  # t<T>/ per temperature, each with greedy/
HEADLINE_RUN = "gsm8k-cot-100x16"
STYLES = ("cot", "direct", "few_shot_cot", "analogical", "step_back")  # gsm8k-<style>-50x8 each
COT_DECODING_RUN = "gsm8k-plain-cot_decoding-50x10"
DEEPCONF_TOP = 50  # DeepConf's filter: the top 50% most confident of each draw vote
ADAPTIVE_RULES = ("esc", "beta", "dirichlet", "confident", "eb")  # replayed at their conf/adaptive/ defaults
ADAPTIVE_SCHEDULE = ("adaptive.min_samples=4", "adaptive.batch=4")  # rounds of 4, as reproduce.sh's online run
ONLINE_RUNS = "gsm8k-cot-20x16-adaptive-*"  # online adaptive runs on the headline's first problems: -<rule>


class Missing(LookupError):
    """A table's run is not published (yet)."""


def aggregated(run_dir: Path, scratch: Path, top_percent: Optional[float] = None, adaptive: bool = False) -> Evaluation:
    """The run aggregated as `jobs.aggregate run_dir=<run> [answer.top_percent=...]` does, from a copy in `scratch`
    (links followed): its saved answer format, confidence and seed. An `adaptive` run holds fewer samples than it
    planned by design."""
    if not (run_dir / "traces").is_dir():
        raise Missing(f"{run_dir.relative_to(RESULTS)} is not published")
    for part in (run_dir, run_dir / "greedy"):
        if (part / "config.yaml").is_file() and not adaptive and (held := samples(part)) < (planned := planned_samples(part)):
            raise Missing(f"{part.relative_to(RESULTS)} is published in part: {held} of {planned} samples")
    copy = scratch / run_dir.relative_to(RESULTS)
    if not copy.exists():
        shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("lease"))
    answer = saved_config(str(run_dir))["answer"]
    return aggregate_run(str(copy), answer["format"], answer["confidence"], answer["seed"], title=str(run_dir.name),
                         top_percent=top_percent if top_percent is not None else answer["top_percent"])


def samples(run_dir: Path) -> int:
    """Trace rows a run holds."""
    return open_traces(str(run_dir)).count_rows() if (run_dir / "traces").is_dir() else 0


def planned_samples(run_dir: Path) -> int:
    """Rows the run's config asks for: dataset.limit problems x sampling.n (CoT-decoding: its branches)."""
    config = saved_config(str(run_dir))
    return config["dataset"]["limit"] * config["sampling"][DECODINGS[config["decoding"]].per_problem]


def by_key(result: Evaluation) -> dict[tuple[str, int], dict]:
    return {(r["method"], r["k"]): r for r in result.curves}


def pct(row: Optional[dict], ci: bool = False) -> str:
    """A curve cell in %, with its 95% interval when `ci`; empty when the method was not reported."""
    if row is None:
        return ""
    return f"{100 * row['accuracy']:.1f}" + (f" [{100 * row['ci_low']:.1f}, {100 * row['ci_high']:.1f}]" if ci else "")


def delta(row: Optional[dict]) -> str:
    """A paired difference to greedy in points, with its 95% interval."""
    if row is None:
        return ""
    return f"{100 * row['accuracy']:+.1f} [{100 * row['ci_low']:+.1f}, {100 * row['ci_high']:+.1f}]"


def capped(run_dir: Path) -> str:
    """The share of samples that stopped at sampling.max_tokens (finish_reason = length), in %."""
    reasons = open_traces(str(run_dir)).to_table(columns=["finish_reason"])["finish_reason"]
    return f"{100 * pc.sum(pc.equal(reasons, 'length')).as_py() / len(reasons):.1f}"


def temperature(scratch: Path) -> str:
    """maj@k per sampling temperature on GSM8K train, and the paired maj@n - greedy."""
    root = RESULTS / TEMPERATURE_RUNS
    runs = sorted(root.glob("t*/config.yaml"), key=lambda p: float(p.parent.name[1:]))
    rows, partial = [], []
    for config in runs:
        try:
            rows.append(temperature_row(config.parent, scratch))
        except Missing as missing:
            partial.append(f"not in the table yet: {missing}")
    if not rows:
        raise Missing(" and ".join(partial) or f"{TEMPERATURE_RUNS} is not published")
    lines = ["| T | greedy | maj@1 | maj@4 | maj@16 [95% CI] | pass@16 | maj@16 − greedy, points [paired 95% CI] "
             "| capped % | tokens/sample |", "|---|---|---|---|---|---|---|---|---|", *rows]
    return "\n".join(lines + ([""] + partial if partial else []))  # the notes after a blank line: not the table


def temperature_row(run: Path, scratch: Path) -> str:
    """One temperature's row of the temperature table."""
    result = aggregated(run, scratch)
    c, n = by_key(result), max(k for m, k in by_key(result) if m == "maj")
    return (f"| {saved_config(str(run))['sampling']['temperature']} | {100 * result.greedy:.1f} | {pct(c['maj', 1])} "
            f"| {pct(c.get(('maj', 4)))} | {pct(c['maj', n], ci=True)} | {pct(c['pass', n])} "
            f"| {delta(c.get(('maj_minus_greedy', n)))} | {capped(run)} | {result.metrics['tokens/per_sample']:.0f} |")


def headline(scratch: Path) -> str:
    """The zero-shot CoT headline: greedy, maj@k, pass@k, the DeepConf-weighted votes and the paired maj@k − greedy."""
    result = aggregated(RESULTS / HEADLINE_RUN, scratch, top_percent=DEEPCONF_TOP)
    c = by_key(result)
    ks = sorted(k for m, k in c if m == "maj")
    rows = [("maj@k", "maj", pct), ("pass@k", "pass", pct), ("DeepConf-weighted maj@k (mean confidence)", "weighted_maj", pct),
            (f"DeepConf top-{DEEPCONF_TOP}% weighted maj@k", f"weighted_maj_top{DEEPCONF_TOP}", pct),
            ("maj@k − greedy, points [paired 95% CI]", "maj_minus_greedy", lambda r, ci=False: delta(r))]
    problems = int(result.metrics["problems"])
    lines = [f"| {problems} problems x {ks[-1]} | " + " | ".join(f"k={k}" for k in ks) + " |", "|---" * (len(ks) + 1) + "|",
             f"| greedy | {100 * result.greedy:.1f} |" + " |" * (len(ks) - 1)]
    for label, method, cell in rows:
        if not any((method, k) in c for k in ks):  # not reported (no logprobs): no row, aggregation says why
            continue
        lines.append(f"| {label} | " + " | ".join(cell(c.get((method, k)), ci=k == ks[-1]) for k in ks) + " |")
    return "\n".join(lines)


def strategies(scratch: Path) -> str:
    """Every prompt style on the same problems: greedy, self-consistency, the confidence-weighted vote, their cost;
    a style not published yet is named under the table."""
    rows, partial = [], []
    for style in STYLES:
        try:
            rows.append(strategy_row(RESULTS / f"gsm8k-{style}-50x8", style, scratch))
        except Missing as missing:
            partial.append(f"not in the table yet: {missing}")
    if not rows:
        raise Missing(" and ".join(partial))
    lines = ["| prompt | greedy | maj@1 | maj@8 [95% CI] | pass@8 | maj@8 − greedy, points [paired 95% CI] "
             "| weighted maj@8 | no answer % | capped % | tokens/sample |", "|---" * 10 + "|", *rows]
    return "\n".join(lines + ([""] + partial if partial else []))  # the notes after a blank line: not the table


def strategy_row(run: Path, style: str, scratch: Path) -> str:
    """One prompt style's row of the strategies table."""
    result = aggregated(run, scratch)
    c = by_key(result)
    n = max(k for m, k in c if m == "maj")
    return (f"| {style} | {100 * result.greedy:.1f} | {pct(c['maj', 1])} | {pct(c['maj', n], ci=True)} "
            f"| {pct(c['pass', n])} | {delta(c.get(('maj_minus_greedy', n)))} | {pct(c.get(('weighted_maj', n)))} "
            f"| {100 * result.metrics['no_answer_rate']:.1f} | {capped(run)} | {result.metrics['tokens/per_sample']:.0f} |")


def cot_decoding(scratch: Path) -> str:
    """CoT-decoding's selections over the top-k first-token branches, against greedy decoding of the same prompt."""
    result = aggregated(RESULTS / COT_DECODING_RUN, scratch)
    c = by_key(result)
    ks = sorted(k for m, k in c if m == "cot_decoding_max")
    lines = ["| selection over the top-k branches | " + " | ".join(f"k={k}" for k in ks) + " | − greedy at k=" + f"{ks[-1]} |",
             "|---" * (len(ks) + 2) + "|"]
    for label, method in (("branch of highest Δ (`cot_decoding_max`)", "cot_decoding_max"),
                          ("answer of highest summed Δ (`cot_decoding_agg`)", "cot_decoding_agg"),
                          ("majority over branches (maj@k)", "maj"), ("any branch right (pass@k)", "pass")):
        lines.append(f"| {label} | " + " | ".join(pct(c.get((method, k)), ci=k == ks[-1]) for k in ks)
                     + f" | {delta(c.get((f'{method}_minus_greedy', ks[-1])))} |")
    return "\n".join(lines)


def ensemble(scratch: Path) -> str:
    """The vote across prompt styles (`jobs.ensemble`) beside each style's own maj@k on the shared classes."""
    from analysis.ensemble import METHOD
    from jobs.ensemble import ensemble as ensemble_rows

    dirs = []
    for style in STYLES:
        aggregated(RESULTS / f"gsm8k-{style}-50x8", scratch)  # writes the answers.parquet jobs.ensemble reads
        dirs.append(str(scratch / f"gsm8k-{style}-50x8"))
    answer = saved_config(str(RESULTS / f"gsm8k-{STYLES[0]}-50x8"))["answer"]
    rows = ensemble_rows(dirs, answer["format"], None, answer["seed"])
    ks = sorted({r["k"] for r in rows})
    lines = ["| curve | " + " | ".join(f"k={k}" for k in ks) + " |", "|---" * (len(ks) + 1) + "|"]
    for run in dict.fromkeys(r["run"] for r in rows):
        at = {r["k"]: r for r in rows if r["run"] == run}
        style = run.removeprefix("gsm8k-").removesuffix("-50x8")
        label = f"ensemble (k/{len(STYLES)} samples from each style)" if run == METHOD else f"{style} maj@k"
        lines.append(f"| {label} | " + " | ".join(pct(at.get(k), ci=k == ks[-1]) for k in ks) + " |")
    return "\n".join(lines)


def adaptive(scratch: Path) -> str:
    """Every stopping rule replayed on the headline's traces (`jobs.aggregate adaptive=[...]`): samples per
    problem, accuracy, and the paired change against the full budget's vote."""
    from analysis.adaptive import Schedule, replay, summarize
    from analysis.stopping import variants
    from jobs.cli import compose

    cfg = compose(f"run_dir={RESULTS / HEADLINE_RUN}", f"adaptive=[{','.join(ADAPTIVE_RULES)}]", *ADAPTIVE_SCHEDULE,
                  config_name="aggregate").adaptive
    result = aggregated(RESULTS / HEADLINE_RUN, scratch)
    rules = variants(OmegaConf.to_container(cfg.rules, resolve=True))
    summary = summarize(replay(result.votes, rules, Schedule(cfg.min_samples, cfg.max_samples, cfg.batch), cfg.orders,
                               cfg.seed), cfg.seed)
    n = max(k for m, k in by_key(result) if m == "maj")
    lines = [f"| rule (conf/adaptive/ default; rounds of 4) | samples/problem | accuracy | − maj@{n}, points [paired 95% CI] | savings % |",
             "|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['rule']} | {s['samples_per_problem']:.2f} | {100 * s['accuracy']:.1f} "
                     f"| {100 * s['delta']:+.1f} [{100 * s['delta_low']:+.1f}, {100 * s['delta_high']:+.1f}] "
                     f"| {100 * s['savings']:.1f} |")
    lines.append(f"| maj@{n} (every sample) | {n:.2f} | {pct(by_key(result)['maj', n])} | | 0.0 |")
    return "\n".join(lines)


def online(scratch: Path) -> str:
    """The online adaptive runs against the headline's fixed n on the same problems: samples, tokens, and the vote on
    the samples each drew (ties split); how many of its texts equal the fixed run's of the same seed, and how many
    problems stopped where the rule, replayed on the fixed run's stored order (its prior from the run's
    adaptive.prior_run, as online), stops."""
    from actors.rounds import answer_labels
    from analysis.adaptive import Schedule, replay, vote_scores
    from analysis.stopping import variants

    runs = sorted(RESULTS.glob(ONLINE_RUNS))
    if not runs:
        raise Missing(f"no {ONLINE_RUNS} run is published")
    fixed_rows = open_traces(str(RESULTS / HEADLINE_RUN)).to_table(columns=["problem_id", "sample_idx", "text", "num_tokens"])
    fixed = {(r["problem_id"], r["sample_idx"]): r for r in fixed_rows.to_pylist()}
    result = aggregated(RESULTS / HEADLINE_RUN, scratch)
    order = result.problems["problem_id"].to_pylist()
    table, notes = [], []
    for run in runs:
        rule = run.name.rsplit("-", 1)[-1]
        drawn = open_traces(str(run)).to_table(columns=["problem_id", "sample_idx", "text", "num_tokens"]).to_pylist()
        same = sum(fixed[r["problem_id"], r["sample_idx"]]["text"] == r["text"] for r in drawn)
        used = Counter(r["problem_id"] for r in drawn)  # samples drawn per problem, in the order first drawn
        own = aggregated(run, scratch, adaptive=True)  # its own samples' votes
        votes = [result.votes[order.index(pid)] for pid in used]
        saved = saved_config(str(run))
        cfg = saved["adaptive"]  # the rule, schedule and prior the online run stopped by
        reference = answer_labels(cfg["prior_run"], saved["answer"]["format"]) if cfg.get("prior_run") else None
        rows = replay(votes, variants(cfg["rules"]), Schedule(cfg["min_samples"], cfg["max_samples"], cfg["batch"]), 1,
                      cfg["seed"], reference)
        stops = [r["samples_used_stored"] for r in rows]
        n = len(votes[0].labels)
        if not table:
            fixed_tokens = sum(r["num_tokens"] for key, r in fixed.items() if key[0] in used)
            table = ["| run | problems | samples | tokens | accuracy (vote on the samples drawn) |", "|---|---|---|---|---|",
                     f"| fixed n={n} (`{HEADLINE_RUN}`, the same problems) | {len(used)} | {n * len(used)} | "
                     f"{fixed_tokens:,} | {100 * np.mean([r['correct_full'] for r in rows]):.1f} |"]
        table.append(f"| online `adaptive={rule}` (`{run.name}`) | {len(used)} | {len(drawn)} "
                     f"| {sum(r['num_tokens'] for r in drawn):,} "
                     f"| {100 * np.mean([vote_scores(v.labels[None, :], v.correct_class)[0, -1] for v in own.votes]):.1f} |")
        notes.append(f"`{rule}`: texts identical to the fixed run's sample of the same seed: {same} of {len(drawn)}. "
                     f"Problems that stopped where the rule, replayed on the fixed run's samples in stored order, stops: "
                     f"{sum(s == u for s, u in zip(stops, used.values()))} of {len(used)}.")
    return "\n".join(table + [""] + notes)


TABLES: dict[str, Callable[[Path], str]] = {  # a table of the docs: one function here and one line
    "temperature": temperature,
    "headline": headline,
    "strategies": strategies,
    "cot_decoding": cot_decoding,
    "ensemble": ensemble,
    "adaptive": adaptive,
    "online": online,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tables", nargs="*", choices=[[], *TABLES], help="default: all")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="published-") as scratch:
        for name in args.tables or TABLES:
            try:
                print(f"<!-- benchmarks.published {name} -->\n{TABLES[name](Path(scratch))}\n")
            except Missing as missing:
                print(f"<!-- benchmarks.published {name}: not printed, {missing} -->\n")


if __name__ == "__main__":
    main()
