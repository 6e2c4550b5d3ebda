"""Connect to Ray and run a pool of engine replicas with the resources each one needs.

A job joins a cluster only when given an address (cluster.address or RAY_ADDRESS), else starts its own
local Ray. On GPU a replica takes `gpus_per_replica` GPUs, or with tensor parallelism a placement group of
`tensor_parallel_size` one-GPU bundles that vLLM's workers fill (`replica_resources`). On CPU a replica
takes `cpus_per_replica` cores and the engine runs in-process (env from the cluster config). A replica whose
engine is a client of a server elsewhere (`runs_model` false) takes one CPU and no GPU.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import ray
from ray._private import services
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from actors import pool
from actors.replica import EngineReplica
from actors.shard_writer import Flush
from actors.work import ClusterJoinError, ReplicaStartError, WorkUnit


def join_address(address: str | None) -> tuple[str, str] | None:
    """The cluster address to join and where it came from (cluster.address, else RAY_ADDRESS); None: start a local Ray."""
    if address:
        return address, "cluster.address"
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"], "RAY_ADDRESS"
    return None


def wait_for_cluster(address: str, source: str, timeout_s: float) -> None:
    """Return once the cluster's head port accepts a connection; raise ClusterJoinError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:  # "auto" reads the address of the last `ray start`; a host of 127.0.0.1 becomes this node's IP, as Ray does
            host, _, port = (services.canonicalize_bootstrap_address(address.removeprefix("ray://")) or "").rpartition(":")
            with socket.create_connection((host, int(port)), timeout=min(5.0, timeout_s)):
                return
        except (OSError, ValueError):  # ConnectionError (nothing listens, no cluster for "auto") is an OSError
            if time.monotonic() >= deadline:
                raise ClusterJoinError(
                    f"{source}={address}: no Ray cluster answers there after {timeout_s:g}s "
                    f"(cluster.join_timeout_s); start it, or unset {source} to run on a local Ray"
                ) from None
            time.sleep(0.5)


def connect(address: str | None, num_cpus: int | None, env: dict[str, str], join_timeout_s: float) -> None:
    """Join the cluster at `address` (or RAY_ADDRESS) if it answers within `join_timeout_s`, else start a
    local Ray of our own: never one recorded in /tmp/ray/ray_current_cluster by an earlier `ray start`."""
    if ray.is_initialized():
        return
    runtime_env = {"env_vars": dict(env)} if env else None
    if joined := join_address(address):
        wait_for_cluster(*joined, join_timeout_s)
        ray.init(address=joined[0], runtime_env=runtime_env, log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, runtime_env=runtime_env,
                 log_to_driver=False)


@dataclass(frozen=True)
class ReplicaResources:
    """What one replica asks Ray for: its actor's CPUs and GPUs, and with tensor parallelism a placement
    group's bundles (one GPU per vLLM worker), which hold all of the replica's resources."""

    cpus: float
    gpus: float
    bundles: tuple[dict[str, float], ...] = ()

    def total(self, resource: str) -> float:
        """CPUs or GPUs ("CPU", "GPU") the replica takes from the cluster."""
        if self.bundles:
            return sum(bundle.get(resource, 0) for bundle in self.bundles)
        return {"CPU": self.cpus, "GPU": self.gpus}[resource]


def replica_resources(cpus_per_replica: float, gpus_per_replica: float, tensor_parallel: int,
                      runs_model: bool = True) -> ReplicaResources:
    """One replica's resources. On GPU with tensor parallelism, as Ray's vLLMEngineStage: a bundle of one GPU
    per worker (vLLM's Ray workers ask for one GPU and no CPU), the first also holding the actor's CPUs. An
    engine that only sends requests (`runs_model` false) takes one CPU, for its event loop."""
    if not runs_model:
        return ReplicaResources(1, 0)
    if tensor_parallel > 1 and gpus_per_replica:
        bundles = ({"GPU": 1, "CPU": cpus_per_replica},) + ({"GPU": 1},) * (tensor_parallel - 1)
        return ReplicaResources(cpus_per_replica, 0, bundles)
    return ReplicaResources(cpus_per_replica, gpus_per_replica)


def scheduling(resources: ReplicaResources, groups: list[PlacementGroup]) -> dict[str, Any]:
    """`ray.remote` options that place one replica; a placement group it needs is created and added to `groups`."""
    options: dict[str, Any] = {"num_cpus": resources.cpus, "num_gpus": resources.gpus}
    if resources.bundles:
        group = placement_group(list(resources.bundles), strategy="STRICT_PACK")
        groups.append(group)
        options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
            group, placement_group_bundle_index=0, placement_group_capture_child_tasks=True)
    return options


def check_resources(replicas: int, resources: ReplicaResources) -> None:
    """Fail at once when the cluster could never hold the replicas asked for (no autoscaling)."""
    total = ray.cluster_resources()
    for name in ("CPU", "GPU"):
        each = resources.total(name)
        if each and replicas * each > total.get(name, 0) and not os.environ.get("MARGINAL_AUTOSCALING"):
            raise ReplicaStartError(
                f"replicas={replicas} x {each:g} {name} each needs {replicas * each:g} {name}; "
                f"the cluster has {total.get(name, 0):g} (set cluster.cpus_per_replica / gpus_per_replica, "
                f"or MARGINAL_AUTOSCALING=1 to wait for an autoscaler)"
            )


def replica_factory(cluster: Any, resources: ReplicaResources, engine: str, settings: dict[str, Any],
                    replica_class: type | None = None, groups: list[PlacementGroup] | None = None):
    """A function that starts one replica actor (of `replica_class`, default EngineReplica) of engine `engine`
    with `settings` and the resources it needs; its placement groups go to `groups`."""
    actor = ray.remote(replica_class or EngineReplica)
    # Ray starts workers at niceness 15; a replica does the job's work, so it must not yield to every other process.
    env = {"env_vars": {**cluster.env, "RAY_worker_niceness": "0"}}
    groups = [] if groups is None else groups

    def create():
        options = {**scheduling(resources, groups), "runtime_env": env, "max_restarts": 0,
                   "max_concurrency": cluster.max_inflight + 1}  # every queued unit runs, sharing the engine;
        # the one thread more answers `activity` while all of them run
        return actor.options(**options).remote(engine, settings, Flush(cluster.flush_s, cluster.flush_rows))

    return create


def serve(cluster: Any, replicas: int, resources: ReplicaResources, engine: str, settings: dict[str, Any],
          units: Iterable[WorkUnit], replica_class: type | None = None,
          tick: Callable[[dict[str, dict[str, Any]]], Iterable[WorkUnit]] | None = None,
          redo: Callable[[WorkUnit], WorkUnit | None] | None = None,
          started: Callable[[dict[str, Any]], None] | None = None) -> Iterator[dict[str, Any]]:
    """Run every unit on `replicas` replicas of `replica_class` (tests pass a double), each with `resources` and
    engine `engine` built from `settings`, yielding per-unit results;
    `tick` gets the replicas' activity (and the shards they wrote) every few seconds and gives units to run next
    (adaptive rounds), `redo` trims a dead replica's unit to what is not on disk, `started` gets each replica's
    report once its engine is loaded (pool.run)."""
    connect(cluster.address, cluster.num_cpus, dict(cluster.env), cluster.join_timeout_s)
    check_resources(replicas, resources)
    groups: list[PlacementGroup] = []
    create = replica_factory(cluster, resources, engine, settings, replica_class, groups)
    options = pool.PoolOptions(replicas, cluster.max_inflight, cluster.max_replica_restarts, cluster.startup_timeout_s)
    try:
        yield from pool.run(create, units, options, tick, redo, started)
    finally:  # the replicas' actors end with their handles; their GPUs are free only once the groups go too
        for group in groups:
            remove_placement_group(group)
