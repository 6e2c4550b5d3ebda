"""The main job: sample (with a greedy baseline), aggregate, plot, and log to MLflow.

    python -m jobs.evaluate                              # the embedded default, on this machine
    python -m jobs.evaluate dataset=gsm8k dataset.limit=50 sampling.n=32
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig, open_dict

from actors.decodings import DECODINGS
from jobs import cli
from jobs import config as config_module
from jobs.aggregate import Evaluation, aggregate_run, audit_lines, greedy_dir, summary_table, track
from jobs.sample import sample_runs
from storage import rundir
from tracking import mlflow_runs, runinfo, sweep


def greedy_config(cfg: DictConfig) -> DictConfig:
    """The same run with what conf/sampling/greedy.yaml changes in sampling/default.yaml (one sample at
    temperature 0), in run_dir/greedy."""
    default, greedy_sampling = cli.compose().sampling, cli.compose("sampling=greedy").sampling
    greedy = cfg.copy()
    with open_dict(greedy):
        greedy.run_dir = greedy_dir(cfg.run_dir)
        greedy.sampling.update({k: v for k, v in greedy_sampling.items() if v != default[k]})  # others: the run's
        greedy.adaptive.update(rules={}, max_samples=None)  # one sample: nothing to stop early
    return greedy


def aggregate_sampled(cfg: DictConfig) -> Evaluation:
    """Aggregate the sampled run with its answer.* (format, confidence, top_percent, seed: saved with the run,
    so a later jobs.aggregate of run_dir draws the same curves and intervals), titled by the run's name."""
    default = config_module.resolved(cli.compose())
    name = runinfo.run_name(config_module.resolved(cfg), default, sweep.member_overrides())
    return aggregate_run(cfg.run_dir, cfg.answer.format, cfg.answer.confidence, cfg.answer.seed, title=name,
                         top_percent=cfg.answer.top_percent)


def evaluate(cfg: DictConfig) -> str | None:
    """Sample, aggregate and track one configuration; returns the MLflow run id."""
    sampled = not DECODINGS[cfg.decoding].greedy and cfg.sampling.temperature > 0  # CoT-decoding's rank 0 is greedy
    runs = [cfg] + ([greedy_config(cfg)] if cfg.greedy_baseline and sampled else [])
    summaries = sample_runs(runs)
    result = aggregate_sampled(cfg)
    main = summaries[0]
    speed = ({"throughput/tokens_per_replica_s": main.tokens_per_replica_s, "throughput/engine_batch": main.engine_batch}
             if main.samples else {})
    run_id = track(cfg, result, rundir.saved_config(cfg.run_dir), result.title, "evaluate", speed)  # with its precision
    print(summary_table(result))
    if cfg.answer.audit:
        print("\n".join(audit_lines(result, cfg.answer.audit)))
    print(f"plots:  {', '.join(f for f in result.files if f.endswith('.png'))}\n"
          f"tables: {cfg.run_dir}/{{answers,problems,curves,grading}}.parquet", file=sys.stderr)
    if run_id:
        print(mlflow_runs.run_link(cfg.tracking.uri, run_id), file=sys.stderr)
    return run_id


@cli.entry_point("config")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
