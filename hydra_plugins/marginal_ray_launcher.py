"""A Hydra launcher that runs sweep members concurrently on Ray, never asking for more than the cluster has.

    python -m jobs.evaluate -m hydra/launcher=ray prompt=direct,cot sampling.temperature=0.3,0.7,1.0

Each member runs as a Ray task (no resources of its own) whose engine replicas ask for
`replicas` times what `actors.cluster.replica_resources` gives one replica (with tensor parallelism, one GPU per worker).
A member starts only when the members already running leave that much of the cluster's CPUs and GPUs
(counted at launch) free, so members never wait on each other's GPUs; one that needs more than the
whole cluster runs alone, and its job says why it cannot start. With `hydra.launcher.max_concurrent=N`
up to N members run at once whatever the cluster holds now, their replicas waiting for the autoscaler
to add nodes (run them with MARGINAL_AUTOSCALING=1). Members see the launcher's MARGINAL_* and MLFLOW_*
environment, so their runs nest under the sweep's MLflow parent run.

Hydra finds this plugin in the `hydra_plugins` namespace package: run jobs from the project folder.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)
FORWARDED_ENV_PREFIXES = ("MARGINAL_", "MLFLOW_")
RESOURCES = ("CPU", "GPU")


class Member(NamedTuple):  # not a dataclass: Hydra's plugin scan runs this module outside sys.modules
    """One sweep member: its index, config and the resources its replicas hold."""

    idx: int
    config: DictConfig
    needs: dict[str, float]


def member_needs(config: DictConfig) -> dict[str, float]:
    """CPUs and GPUs the member's replicas ask Ray for (actors.cluster.replica_resources, as its job asks)."""
    from actors.cluster import replica_resources

    cluster = config.cluster
    each = replica_resources(cluster.cpus_per_replica, cluster.gpus_per_replica, config.model.tensor_parallel_size)
    return {r: config.replicas * each.total(r) for r in RESOURCES}


def fits(needs: dict[str, float], free: dict[str, float]) -> bool:
    return all(needs[r] <= free.get(r, 0) + 1e-9 for r in RESOURCES)


def forwarded_env() -> dict[str, str]:
    """The environment members need from the launcher: MLflow parent run and credentials, marginal settings."""
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}


def _run_member(hydra_context: HydraContext, config: DictConfig, task_function: TaskFunction,
                singleton_state: dict[Any, Any]) -> JobReturn:
    """Run one member inside a Ray task, as Hydra's basic launcher would in-process."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import run_job

    setup_globals()
    Singleton.set_state(singleton_state)
    HydraConfig.instance().set_config(config)
    return run_job(hydra_context=hydra_context, task_function=task_function, config=config,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


class RayLauncher(Launcher):
    """Sweep members as Ray tasks, started as the cluster's free CPUs and GPUs allow."""

    def __init__(self, address: Optional[str] = None, max_concurrent: Optional[int] = None) -> None:
        self.address = address
        self.max_concurrent = max_concurrent
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import ray

        from actors.cluster import connect

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        connect(self.address, None, {}, self.config.cluster.join_timeout_s)
        members = [self._member(initial_job_idx + i, overrides) for i, overrides in enumerate(job_overrides)]
        total = {r: float(ray.cluster_resources().get(r, 0)) for r in RESOURCES}
        log.info(f"Ray launcher: {len(members)} members on a cluster of {total['CPU']:g} CPUs, {total['GPU']:g} GPUs")
        returns = self._run(members, total)
        return [returns[m.idx] for m in members]

    def _member(self, idx: int, overrides: Sequence[str]) -> Member:
        assert self.config is not None and self.hydra_context is not None
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = f"ray_{idx}"
            config.hydra.job.num = idx
        log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        return Member(idx, config, member_needs(config))

    def _run(self, members: list[Member], total: dict[str, float]) -> dict[int, JobReturn]:
        """Start members in order whenever the running ones leave room; their returns by index."""
        import ray

        task = ray.remote(num_cpus=0, max_retries=0)(_run_member).options(runtime_env={"env_vars": forwarded_env()})
        waiting, running, returns = list(members), {}, {}
        while waiting or running:
            while waiting and self._can_start(waiting[0], list(running.values()), total):
                member = waiting.pop(0)
                running[task.remote(self.hydra_context, member.config, self.task_function, Singleton.get_state())] = member
                log.info(f"#{member.idx} started ({len(running)} running)")
            [done], _ = ray.wait(list(running), num_returns=1)
            member = running.pop(done)
            returns[member.idx] = ray.get(done)
            log.info(f"#{member.idx} finished: {returns[member.idx].status.name}")
        return returns

    def _can_start(self, member: Member, running: list[Member], total: dict[str, float]) -> bool:
        """Up to max_concurrent members when it is set, else whenever the running ones leave room (or none runs)."""
        if self.max_concurrent:
            return len(running) < self.max_concurrent
        free = {r: total[r] - sum(m.needs[r] for m in running) for r in RESOURCES}
        return not running or fits(member.needs, free)
