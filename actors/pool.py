"""A pool of engine replicas on Ray, fed work units with bounded in-flight work.

A replica that dies (killed actor, crashed process, lost node) has the unkept part of its units
reassigned to the others and is replaced, up to `max_restarts` times; a replica that cannot start
fails the run with its cause within `startup_timeout_s`.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional

import ray
from ray.exceptions import GetTimeoutError, OutOfMemoryError, RayActorError, RayTaskError

from actors.work import ReplicaStartError, WorkUnit

# A replica is gone: it died, or Ray's memory monitor killed it (then its calls raise OutOfMemoryError).
REPLICA_GONE = (RayActorError, OutOfMemoryError)

TICK_S = 2.0  # how often pool.run asks the replicas what they are doing and the caller what comes next
ACTIVITY_S = 1.0  # how long it waits for their answers


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
    except REPLICA_GONE as error:
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


def activity(replicas: dict[int, Any], seen: dict[int, int]) -> dict[str, dict[str, Any]]:
    """Each replica's `activity(seen)` by its name: its engine's counters and the shards it wrote since the
    `seen[slot]` it already reported (then counted in `seen`). One that does not answer within ACTIVITY_S is left
    out this time; what it wrote comes with its next answer."""
    refs = {replica.activity.remote(seen.get(slot, 0)): slot for slot, replica in replicas.items()}
    ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=ACTIVITY_S)
    reports = {}
    for ref in ready:
        try:
            report = ray.get(ref)
        except REPLICA_GONE:
            continue
        seen[refs[ref]] = seen.get(refs[ref], 0) + len(report["shards"])
        reports[report.pop("replica")] = report
    return reports


def run(create: Callable[[], Any], units: Iterable[WorkUnit], options: PoolOptions,
        tick: Optional[Callable[[dict[str, dict[str, Any]]], Iterable[WorkUnit]]] = None,
        redo: Optional[Callable[[WorkUnit], Optional[WorkUnit]]] = None,
        started: Optional[Callable[[dict[str, Any]], None]] = None) -> Iterator[dict[str, Any]]:
    """Serve every unit on a replica, yielding each unit's result as it completes (in any order).

    Every TICK_S, and once more before it returns, `tick` gets the live replicas' `activity()` by name (with the
    shards each wrote since the last tick) and gives units to serve next (an adaptive run's next batches, planned
    from the samples kept so far). A unit whose replica died is served again as `redo(unit)`, the part of it not
    yet on disk (None: all of it is; without `redo`, the whole unit). `started` gets the `ready()` report of every
    replica started, replacements included."""
    replicas = dict(enumerate(start(create, options.replicas, options.startup_timeout_s, started)))  # slot -> handle
    load = dict.fromkeys(replicas, 0)
    todo, queued = iter(units), deque()  # queued: redone units and next batches, served before new ones
    inflight: dict[Any, tuple[int, WorkUnit]] = {}  # ObjectRef -> (slot, unit)
    restarts, next_tick = 0, time.monotonic() + TICK_S
    seen: dict[int, int] = {}  # slot -> shards its replica has reported
    while True:
        while load[slot := min(replicas, key=load.__getitem__)] < options.max_inflight:  # least loaded first
            unit = queued.popleft() if queued else next(todo, None)
            if unit is None:
                break
            inflight[replicas[slot].run.remote(unit)] = (slot, unit)
            load[slot] += 1
        if not inflight:
            queued.extend(tick(activity(replicas, seen)) if tick else ())
            if queued:
                continue
            return
        ready, _ = ray.wait(list(inflight), num_returns=1, timeout=max(0.0, next_tick - time.monotonic()))
        if tick and time.monotonic() >= next_tick:
            queued.extend(tick(activity(replicas, seen)))
            next_tick = time.monotonic() + TICK_S
        if not ready:
            continue
        [ref] = ready
        slot, unit = inflight.pop(ref)
        load[slot] -= 1
        try:
            yield ray.get(ref)
        except REPLICA_GONE as error:
            again = redo(unit) if redo else unit  # the replica is dead: what it kept of the unit is all there is
            if again is not None:
                queued.appendleft(again)
            if slot in replicas:  # first failure seen from this replica: replace it
                del replicas[slot]
                if restarts < options.max_restarts:
                    restarts += 1
                    new_slot = max(load) + 1
                    replicas[new_slot], load[new_slot] = start(create, 1, options.startup_timeout_s, started)[0], 0
            if not replicas:
                raise RuntimeError(
                    f"every replica died ({restarts} replaced, cluster.max_replica_restarts={options.max_restarts}); "
                    f"last cause: {_cause(error)}. The samples they kept are on disk: rerun to resume."
                ) from None
        except RayTaskError as error:  # the unit itself failed (e.g. run_dir full): the replica is fine, stop
            raise error.cause from error
