"""Hydra sweeps tracked in MLflow: one parent run per sweep, each member's run nested under it.

    python -m jobs.evaluate -m prompt=direct,cot sampling.temperature=0.3,0.7,1.0

`SweepTracking` (conf/config.yaml, `hydra.callbacks`) opens the parent run when the multirun starts and
exports its id (`mlflow_runs.PARENT_RUN_ENV`) to the members, whose runs nest under it and carry their
overrides as tags (`override_tags`). The parent closes FINISHED when every member succeeded, else FAILED.
Only the jobs it is given open one: a sweep of `jobs.sample`, which logs nothing, opens none.
Members run one after another, or concurrently on Ray with `hydra/launcher=ray`.
"""

from __future__ import annotations

import os
import time
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from tracking import mlflow_runs

SWEEP_TAG = "sweep"  # marks a sweep's parent run
OVERRIDES_TAG = "overrides"  # all of a run's command-line overrides, space-separated
OVERRIDE_PREFIX = "override."  # one tag per override: override.<key> = value


def overrides() -> list[tuple[str, str]]:
    """The running Hydra job's command-line overrides as (key, value) pairs (none outside a Hydra job)."""
    if not HydraConfig.initialized():
        return []
    typed = OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False)
    return [(o.key_or_group, str(o.value())) for o in OverridesParser.create().parse_overrides(typed)]


def member_overrides() -> list[tuple[str, str]]:
    """A sweep member's overrides (what tells it from the other members); none outside a sweep."""
    return overrides() if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN else []


def override_tags() -> dict[str, str]:
    """The running Hydra job's command-line overrides as MLflow tags (none outside a Hydra job)."""
    pairs = overrides()
    if not pairs:
        return {}
    return {OVERRIDES_TAG: " ".join(f"{k}={v}" for k, v in pairs), **{OVERRIDE_PREFIX + k: v for k, v in pairs}}


class SweepTracking(Callback):
    """Opens a sweep's MLflow parent run, nests the members under it, and closes it with the sweep's outcome."""

    def __init__(self, tracked_jobs: list[str]):
        self.tracked_jobs = set(tracked_jobs)  # Hydra job names (`jobs.<name>`) whose members log to MLflow

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.tracking.enabled or config.hydra.job.name not in self.tracked_jobs:
            return
        overrides = " ".join(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))  # as typed
        name = f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
        run_id = mlflow_runs.start_run(config.tracking.uri, config.tracking.experiment, name,
                                    {SWEEP_TAG: "true", OVERRIDES_TAG: overrides})
        os.environ[mlflow_runs.PARENT_RUN_ENV] = run_id

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        parent = os.environ.get(mlflow_runs.PARENT_RUN_ENV)
        failed = job_return.status == JobStatus.FAILED
        if parent and failed and config.tracking.enabled and config.hydra.mode == RunMode.MULTIRUN:
            mlflow_runs.end_run(config.tracking.uri, parent, "FAILED")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        parent = os.environ.pop(mlflow_runs.PARENT_RUN_ENV, None)
        if parent and config.tracking.enabled:
            mlflow_runs.end_run(config.tracking.uri, parent, "FINISHED")
