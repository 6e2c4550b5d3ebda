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
from pathlib import Path
from typing import Callable, Optional

import pyarrow.compute as pc

from jobs.aggregate import Aggregate, aggregate
from jobs.rundir import saved_config

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
TEMPERATURE_RUNS = "gsm8k_train-cot-50x16"  # t<T>/ per temperature, each with greedy/


def aggregated(run_dir: Path, scratch: Path) -> Aggregate:
    """The run aggregated with its saved answer settings, from a copy in `scratch` (links followed)."""
    copy = scratch / run_dir.relative_to(RESULTS)
    if not copy.exists():
        shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("lease"))
    answer = saved_config(str(run_dir))["answer"]
    return aggregate(str(copy), answer["format"], answer["confidence"], answer["seed"], title=str(run_dir.name),
                     top_percent=answer["top_percent"])


def by_key(result: Aggregate) -> dict[tuple[str, int], dict]:
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


def capped(result: Aggregate, run_dir: Path) -> str:
    """The share of samples that stopped at sampling.max_tokens (finish_reason = length), in %."""
    import pyarrow.dataset as ds

    reasons = ds.dataset(str(run_dir / "traces"), format="parquet").to_table(columns=["finish_reason"])["finish_reason"]
    return f"{100 * pc.sum(pc.equal(reasons, 'length')).as_py() / len(reasons):.1f}"


def temperature(scratch: Path) -> str:
    """maj@k per sampling temperature on GSM8K train, and the paired maj@n - greedy."""
    root = RESULTS / TEMPERATURE_RUNS
    runs = sorted(root.glob("t*/config.yaml"), key=lambda p: float(p.parent.name[1:]))
    lines = ["| T | greedy | maj@1 | maj@4 | maj@16 [95% CI] | pass@16 | maj@16 − greedy, points [paired 95% CI] "
             "| capped % | tokens/sample |", "|---|---|---|---|---|---|---|---|---|"]
    for config in runs:
        run = config.parent
        result = aggregated(run, scratch)
        c, n = by_key(result), max(k for m, k in by_key(result) if m == "maj")
        lines.append(f"| {saved_config(str(run))['sampling']['temperature']} | {100 * result.greedy:.1f} | {pct(c['maj', 1])} "
                     f"| {pct(c.get(('maj', 4)))} | {pct(c['maj', n], ci=True)} | {pct(c['pass', n])} "
                     f"| {delta(c.get(('maj_minus_greedy', n)))} | {capped(result, run)} "
                     f"| {result.metrics['tokens/per_sample']:.0f} |")
    return "\n".join(lines)


TABLES: dict[str, Callable[[Path], str]] = {  # a table of the docs: one function here and one line
    "temperature": temperature,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tables", nargs="*", choices=[[], *TABLES], help="default: all")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="published-") as scratch:
        for name in args.tables or TABLES:
            print(f"<!-- benchmarks.published {name} -->\n{TABLES[name](Path(scratch))}\n")


if __name__ == "__main__":
    main()
