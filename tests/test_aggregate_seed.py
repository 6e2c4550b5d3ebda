"""One aggregation seed, saved with the run: jobs.aggregate redraws the intervals jobs.evaluate drew."""

import pyarrow.parquet as pq

from jobs.aggregate import aggregate_run
from jobs.cli import compose
from jobs.config import resolved
from jobs.evaluate import aggregate_sampled
from storage import rundir
from storage.traces import write_shard
from tests.test_mlflow_server import run_module



def sampled_run(run_dir: str, *overrides: str):
    """A run as jobs.evaluate leaves it before aggregating: its resolved config saved, 20 problems of 8 samples,
    problem p with (5 p mod 9) right answers and the rest split between two wrong ones."""
    cfg = compose(f"run_dir={run_dir}", "tracking=none", *overrides)
    run_id = rundir.prepare(run_dir, resolved(cfg))
    for p in range(20):
        right = 5 * p % 9
        answers = ["4" if i < right else str(5 + i % 2) for i in range(8)]
        rows = [{"run_id": run_id, "problem_id": f"p{p}", "sample_idx": i, "gold": "4", "num_tokens": 5,
                 "text": f"The answer is {answer}."} for i, answer in enumerate(answers)]
        write_shard(rows, run_dir, f"part-{p}")
    return cfg


def intervals(rows) -> dict:
    return {(r["method"], r["k"]): (r["ci_low"], r["ci_high"]) for r in rows}


def test_reaggregating_a_run_gives_the_intervals_of_its_evaluation(tmp_path):
    run = str(tmp_path / "run")
    cfg = sampled_run(run, "answer.seed=7", "greedy_baseline=false")
    evaluated = intervals(aggregate_sampled(cfg).curves)
    assert rundir.saved_config(run)["answer"]["seed"] == 7
    other_seed = aggregate_run(run, "number", cfg.answer.confidence, seed=0)
    assert intervals(other_seed.curves) != evaluated  # the seed matters to the intervals

    done = run_module("jobs.aggregate", f"run_dir={run}", "tracking=none")
    assert done.returncode == 0, done.stderr[-3000:]
    assert intervals(pq.read_table(f"{run}/curves.parquet").to_pylist()) == evaluated
