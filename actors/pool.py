"""A pool of engine replicas on Ray, fed work units with bounded in-flight work.

A replica that dies (killed actor, crashed process, lost node) has its units reassigned to the
others and is replaced, up to `max_restarts` times; a replica that cannot start fails the run with
its cause within `startup_timeout_s`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from actors.work import ReplicaStartError, WorkUnit

WATCH_S = 15.0  # how long pool.run waits for a unit before it asks the replicas what they are doing


@dataclass(frozen=True)
class PoolOptions:
    """How the pool runs (from the cluster config: replicas, cluster.max_inflight, max_replica_restarts,
    startup_timeout_s)."""

    replicas: int
    max_inflight: int  # work units a replica serves at once (they share its engine)
    max_restarts: int  # replacements for replicas that die, over the whole run
    startup_timeout_s: float


def start(create: Callable[[], Any], count: int, timeout_s: float,
          started: Optional[Callable[[dict[str, Any]], None]] = None) -> list[Any]:
    """Start `count` replicas and wait until every engine is loaded; `started` gets each one's `ready()` report."""
    handles = [create() for _ in range(count)]
    refs = [h.ready.remote() for h in handles]
    try:
        reports = ray.get(refs, timeout=timeout_s)
    except GetTimeoutError:
        for handle in handles:
            ray.kill(handle)
        raise ReplicaStartError(
            f"{count} replica(s) not ready after {timeout_s:.0f}s (cluster.startup_timeout_s): "
            f"the cluster lacks the resources they ask for, or the engine hangs while loading"
        ) from None
    except RayActorError as error:
        for handle in handles:
            ray.kill(handle)
        raise ReplicaStartError(f"a replica failed to start: {_cause(error)}") from None
    for report in reports if started else ():
        started(report)
    return handles


def _cause(error: BaseException) -> str:
    """The innermost useful line of a Ray actor error."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line and not line.lstrip().startswith(("File", "ray."))]
    return (errors or lines or [repr(error)])[-1].strip()


def activity(replicas: list[Any]) -> dict[str, int]:
    """The replicas' `activity()` summed; a replica that does not answer within WATCH_S counts nothing (if it
    died, its units' results say so)."""
    refs = [replica.activity.remote() for replica in replicas]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=WATCH_S)
    total = {"in_flight": 0, "generated": 0}
    for ref in ready:
        try:
            for key, value in ray.get(ref).items():
                total[key] += value
        except RayActorError:
            pass
    return total


def run(create: Callable[[], Any], units: Iterable[WorkUnit], options: PoolOptions,
        follow: Optional[Callable[[WorkUnit], Iterable[WorkUnit]]] = None,
        watch: Optional[Callable[[dict[str, int]], None]] = None,
        started: Optional[Callable[[dict[str, Any]], None]] = None) -> Iterator[dict[str, Any]]:
    """Serve every unit on a replica, yielding each unit's result as it completes (in any order); `follow(unit)`,
    called once a unit's result is in, gives units to serve next (an adaptive run's next batches). While no unit
    lands for WATCH_S, `watch` gets the live replicas' summed `activity()` (requests in flight, tokens so far).
    `started` gets the `ready()` report of every replica started, replacements included."""
    replicas = dict(enumerate(start(create, options.replicas, options.startup_timeout_s, started)))  # slot -> handle
    load = dict.fromkeys(replicas, 0)
    todo, retry, followers = iter(units), deque(), deque()
    inflight: dict[Any, tuple[int, WorkUnit]] = {}  # ObjectRef -> (slot, unit)
    restarts = 0
    while True:
        while load[slot := min(replicas, key=load.__getitem__)] < options.max_inflight:  # least loaded first
            unit = retry.popleft() if retry else followers.popleft() if followers else next(todo, None)
            if unit is None:
                break
            inflight[replicas[slot].run.remote(unit)] = (slot, unit)
            load[slot] += 1
        if not inflight:
            return
        ready, _ = ray.wait(list(inflight), num_returns=1, timeout=WATCH_S if watch else None)
        if not ready:
            watch(activity(list(replicas.values())))
            continue
        [ref] = ready
        slot, unit = inflight.pop(ref)
        load[slot] -= 1
        try:
            result = ray.get(ref)
            if follow is not None:
                followers.extend(follow(unit))
            yield result
        except RayActorError as error:
            retry.append(unit)  # the dead replica's other units come back here too, unless they had finished
            if slot in replicas:  # first failure seen from this replica: replace it
                del replicas[slot]
                if restarts < options.max_restarts:
                    restarts += 1
                    new_slot = max(load) + 1
                    replicas[new_slot], load[new_slot] = start(create, 1, options.startup_timeout_s, started)[0], 0
            if not replicas:
                raise RuntimeError(
                    f"every replica died ({restarts} replaced, cluster.max_replica_restarts={options.max_restarts}); "
                    f"last cause: {_cause(error)}. Finished shards are kept: rerun to resume."
                ) from None
        except RayTaskError as error:  # the unit itself failed (e.g. run_dir full): the replica is fine, stop
            raise error.cause from error
