"""Connect to Ray and run a pool of engine replicas with the resources each one needs.

On GPU a replica takes `gpus_per_replica` GPUs, or with tensor parallelism a placement group of
`tensor_parallel_size` one-GPU bundles that vLLM's workers fill. On CPU a replica takes
`cpus_per_replica` cores and the engine runs in-process (env from the cluster config).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import ray
from ray._private import services

from analysis.errors import MarginalError
from actors import pool
from actors.replica import EngineReplica


class ModelNotFoundError(FileNotFoundError):
    """model.path names neither a local folder nor a model in the Hugging Face cache."""


def check_model(path: str) -> str:
    """`path` if vLLM can load it here; offline, a hub id must already be in the local cache."""
    if Path(path).exists() or path.startswith(("/", ".", "~")):
        if not (Path(path).expanduser() / "config.json").is_file():
            raise ModelNotFoundError(f"model.path={path!r}: no Hugging Face model folder (config.json) there")
        return str(Path(path).expanduser())
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(path, "config.json"), str):
            raise ModelNotFoundError(f"model.path={path!r}: not a local folder, and not in the Hugging Face cache (offline)")
    return path


class ClusterJoinError(MarginalError, ConnectionError):
    """The cluster at a given address did not answer within cluster.join_timeout_s."""


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


def check_resources(replicas: int, cpus: float, gpus: float) -> None:
    """Fail at once when the cluster could never hold the replicas asked for (no autoscaling)."""
    total = ray.cluster_resources()
    for name, each in (("CPU", cpus), ("GPU", gpus)):
        if each and replicas * each > total.get(name, 0) and not os.environ.get("MARGINAL_AUTOSCALING"):
            raise pool.ReplicaStartError(
                f"replicas={replicas} x {each:g} {name} each needs {replicas * each:g} {name}; "
                f"the cluster has {total.get(name, 0):g} (set cluster.cpus_per_replica / gpus_per_replica, "
                f"or MARGINAL_AUTOSCALING=1 to wait for an autoscaler)"
            )


def replica_factory(cluster: Any, tensor_parallel: int, model_path: str, engine_kwargs: dict[str, Any],
                    replica_class: type = EngineReplica):
    """A function that starts one replica actor with the resources it needs."""
    actor = ray.remote(replica_class)
    # Ray starts workers at niceness 15; a replica does the job's work, so it must not yield to every other process.
    env = {"env_vars": {**cluster.env, "RAY_worker_niceness": "0"}}

    def create():
        options: dict[str, Any] = {"num_cpus": cluster.cpus_per_replica, "runtime_env": env, "max_restarts": 0}
        if tensor_parallel > 1 and cluster.gpus_per_replica:
            from ray.util.placement_group import placement_group
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            group = placement_group([{"GPU": 1, "CPU": 1}] * tensor_parallel, strategy="STRICT_PACK")
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(group, placement_group_capture_child_tasks=True)
            options["num_gpus"] = 0
            engine_kwargs.setdefault("distributed_executor_backend", "ray")
        else:
            options["num_gpus"] = cluster.gpus_per_replica
        return actor.options(**options).remote(model_path, engine_kwargs)

    return create


def serve(cluster: Any, replicas: int, tensor_parallel: int, model_path: str, engine_kwargs: dict[str, Any],
          units: Iterable[Any], replica_class: type = EngineReplica) -> Iterator[dict[str, Any]]:
    """Run every unit on `replicas` replicas of `replica_class` (tests pass a double), yielding per-unit results."""
    connect(cluster.address, cluster.num_cpus, dict(cluster.env), cluster.join_timeout_s)
    gpus = cluster.gpus_per_replica * (tensor_parallel if tensor_parallel > 1 else 1)
    check_resources(replicas, cluster.cpus_per_replica, gpus)
    create = replica_factory(cluster, tensor_parallel, model_path, dict(engine_kwargs), replica_class)
    options = pool.PoolOptions(replicas, cluster.max_inflight, cluster.max_replica_restarts, cluster.startup_timeout_s)
    yield from pool.run(create, units, options)
