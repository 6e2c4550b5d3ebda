"""Sample `sampling.n` responses per problem on a pool of engine replicas (`engine=`), streaming Parquet traces.

    python -m jobs.sample dataset.limit=8 sampling.n=8 run_dir=runs/demo

Replicas keep each sample as it finishes (within `cluster.flush_s`). Rerunning with the same run_dir
computes only the missing samples, whatever shards the others are in (a damaged shard is quarantined and
redone); a second job on a run_dir that one is sampling fails at once, naming it. `python -m jobs.compact`
merges a run's many small shards into few (storage.compaction).
"""

from __future__ import annotations

import hashlib
import itertools
import sys
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Iterator, Optional

import pyarrow as pa
import pyarrow.dataset as ds
from omegaconf import DictConfig, OmegaConf

from actors.decodings import DECODINGS
from actors.engines import ENGINES
from actors.progress import Progress
from actors.work import Prompt, Ready, Request, RunColumns, SamplingSpec, WorkUnit
from jobs import cli
from jobs import config as config_module
from problems.datasets import Problem, load_problems
from problems.prompts import exemplars, render
from storage import rundir
from storage.lease import RunLeases
from storage.traces import QUARANTINE, DamagedShardError, RunDirError, ShardIndex, traces_dir

if TYPE_CHECKING:
    from actors.rounds import Rounds


def derive_seed(base_seed: int, problem_id: str, sample_idx: int) -> int:
    """A sample's own seed: the same whichever replica or batch draws it."""
    digest = hashlib.blake2b(f"{base_seed}\x00{problem_id}\x00{sample_idx}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF


def plan_units(problems: list[Problem], prompts: dict[str, Prompt], n: int, base_seed: int, unit_size: int,
               done: dict[str, set[int]], run_dir: str = "", run: Optional[RunColumns] = None,
               spec: Optional[SamplingSpec] = None, whole_problems: bool = False) -> Iterator[WorkUnit]:
    """Work units covering every (problem, sample_idx) not yet done, `unit_size` samples each; with
    `whole_problems`, at least `unit_size`, never splitting a problem's samples between units. `run_dir`,
    `run` and `spec` go into every unit."""
    batch: list[Request] = []
    for problem in problems:
        finished = done.get(problem.problem_id, set())
        for idx in range(n):
            if idx in finished:
                continue
            batch.append(request(problem, prompts, idx, base_seed))
            if len(batch) == unit_size and not whole_problems:
                yield WorkUnit(run_dir, run, spec, batch)
                batch = []
        if len(batch) >= unit_size and whole_problems:
            yield WorkUnit(run_dir, run, spec, batch)
            batch = []
    if batch:
        yield WorkUnit(run_dir, run, spec, batch)


def request(problem: Problem, prompts: dict[str, Prompt], idx: int, base_seed: int) -> Request:
    """Sample `idx` of a problem, with its own seed."""
    return Request(problem.problem_id, problem.question, problem.gold, prompts[problem.problem_id], idx,
                   derive_seed(base_seed, problem.problem_id, idx))


@dataclass
class SampleSummary:
    run_dir: str
    run_id: str
    problems: int
    samples: int = 0  # generated in this call
    skipped: int = 0  # already present from an earlier call
    tokens: int = 0
    errors: int = 0
    seconds: float = 0.0  # wall time of the call, shared by every run sampled in it
    replicas: int = 1  # the replicas the call's runs shared
    generate_seconds: float = 0.0  # summed over units, which overlap on a replica (the double reports CPU time)
    write_seconds: float = 0.0  # CPU seconds the replicas spent writing shards (all the call's runs)
    engine_batch: float = 0.0  # the replicas' mean running batch (sequences per engine step, time-weighted)

    @property
    def tokens_per_replica_s(self) -> float:
        """Generated tokens of this run per second of the call, per replica."""
        return self.tokens / (self.seconds * self.replicas) if self.seconds else 0.0


def prepare_problems(cfg: DictConfig) -> tuple[list[Problem], dict[str, Prompt]]:
    """The problems and each one's rendered prompt."""
    problems = load_problems(cfg.dataset)
    shots = exemplars(load_problems(cfg.dataset, split="train"), cfg.prompt.shots, cfg.prompt.shots_seed) if cfg.prompt.shots else []
    return problems, {p.problem_id: render(cfg.prompt, p, shots) for p in problems}


def samples_per_problem(cfg: DictConfig) -> int:
    """Rows per problem: `sampling.n` samples, or with CoT-decoding one per branch (`sampling.top_k_branches`)."""
    return cfg.sampling[DECODINGS[cfg.decoding].per_problem]


def stop_texts(prompt: DictConfig) -> tuple[str, ...]:
    """Where a completion-style sample ends: a new line opening the next question as the template does ("Q:")."""
    head = prompt.completion.split("{question}")[0].strip()
    return () if prompt.chat or not head else ("\n" + head,)


def sampling_spec(cfg: DictConfig) -> SamplingSpec:
    """How the run's samples are drawn (CoT-decoding: greedy branches)."""
    greedy = DECODINGS[cfg.decoding].greedy
    return SamplingSpec(
        temperature=0.0 if greedy else cfg.sampling.temperature,
        top_p=1.0 if greedy else cfg.sampling.top_p,
        max_tokens=cfg.sampling.max_tokens,
        logprobs=cfg.sampling.logprobs,
        decoding=cfg.decoding,
        branches=cfg.sampling.top_k_branches,
        answer_format=cfg.answer.format,
        stop=stop_texts(cfg.prompt),
    )


def _plan_run(cfg: DictConfig) -> tuple[SampleSummary, int, Iterator[WorkUnit], Optional["Rounds"]]:
    """Prepare one run's directory; its summary so far, the samples missing (with adaptive rounds: at most),
    their work units and, for an adaptive run, the rounds that plan its next units."""
    problems, prompts = prepare_problems(cfg)
    try:
        run_id = rundir.prepare(cfg.run_dir, config_module.resolved(cfg))
    except OSError as error:
        raise RunDirError(f"run_dir={cfg.run_dir}: cannot write there: {error}") from None
    done, damaged = rundir.resume_scan(cfg.run_dir)
    report_quarantined(cfg, damaged)
    summary = SampleSummary(cfg.run_dir, run_id, len(problems))
    n = cfg.adaptive.max_samples or samples_per_problem(cfg)
    summary.skipped = sum(len([i for i in done.get(p.problem_id, ()) if i < n]) for p in problems)
    missing = len(problems) * n - summary.skipped
    run, spec = RunColumns(run_id, cfg.model.name, cfg.prompt.name), sampling_spec(cfg)
    if cfg.adaptive.rules:
        from actors.rounds import Rounds, answer_labels  # the stopping rules and answer grouping: adaptive runs only
        from analysis.adaptive import Schedule
        from analysis.stopping import FITS, variants

        by_id = {p.problem_id: p for p in problems}

        def new_unit(samples: list[tuple[str, int]]) -> WorkUnit:
            batch = [request(by_id[pid], prompts, idx, cfg.sampling.seed) for pid, idx in samples]
            return WorkUnit(cfg.run_dir, run, spec, batch)

        a = cfg.adaptive
        [(_, rule, params)] = variants(OmegaConf.to_container(a.rules, resolve=True))
        prior = FITS[rule](answer_labels(a.prior_run, cfg.answer.format)) if rule in FITS and a.prior_run else None
        rounds = Rounds(rule, params, Schedule(a.min_samples, a.max_samples, a.batch), a.max_samples or cfg.sampling.n,
                        cfg.answer.format, cfg.answer.confidence, cfg.sampling.logprobs > 0, cfg.run_dir,
                        cfg.cluster.unit_size, list(by_id), new_unit, prior)
        units = rounds.first_units(resumed=summary.skipped > 0)
        return summary, missing if units else 0, iter(units), rounds
    units = plan_units(problems, prompts, n, cfg.sampling.seed, capped_unit_size(cfg.cluster.unit_size, missing, cfg.replicas),
                       done, cfg.run_dir, run, spec, whole_problems=DECODINGS[cfg.decoding].branched)
    return summary, missing, units, None


def report_quarantined(cfg: DictConfig, damaged: list[DamagedShardError]) -> None:
    """One warning line per shard moved to traces/.quarantine/."""
    for error in damaged:
        print(f"[sample] warning: {error.path} cannot be read whole ({error.reason}); moved to "
              f"{traces_dir(cfg.run_dir)}/{QUARANTINE}/, its samples are sampled again", file=sys.stderr)


def check_supported(cfg: DictConfig, ready: Ready) -> None:
    """Raise ConfigError naming what `cfg` asks of its engine that the engine, as built, cannot do."""
    can, asked = ready.supports, cfg.sampling.logprobs
    config_module.check_key(can.logprobs or not asked, "sampling.logprobs", asked,
                            f"the engine ({ready.line}) gives no logprobs: set sampling.logprobs=0")
    config_module.check_key(can.top_logprobs or asked < 2, "sampling.logprobs", asked,
                            f"the engine ({ready.line}) gives no top-k logprobs: set sampling.logprobs=1 or 0")
    config_module.check_key(can.branches or not DECODINGS[cfg.decoding].branched, "decoding", cfg.decoding,
                            f"the engine ({ready.line}) cannot branch on the first token's top-k")


def capped_unit_size(largest: int, missing: int, replicas: int) -> int:
    """`cluster.unit_size`, or less when a run has too few samples to give every replica a unit of it."""
    return max(1, min(largest, -(-missing // replicas)))


def sample_runs(runs: list[DictConfig], replica_class: type | None = None) -> list[SampleSummary]:
    """Sample every missing (problem, sample_idx) of several runs of one model on one pool of replicas.

    `replica_class` replaces the replica (tests and benchmarks pass actors.double.EngineDouble). Each
    run_dir is leased meanwhile: a job already sampling one fails this call at once (storage.lease).
    """
    settings = ENGINES[runs[0].engine.name].settings(config_module.resolved(runs[0]))  # before any run_dir is written
    with RunLeases([cfg.run_dir for cfg in runs]) as leases:
        return _sample_leased(runs, settings, replica_class, leases)


def _sample_leased(runs: list[DictConfig], settings: dict[str, Any], replica_class: type | None,
                   leases: RunLeases) -> list[SampleSummary]:
    """sample_runs once every run_dir is leased; no unit is sent after a lease is lost."""
    from actors import cluster  # Ray takes seconds to import: only once there is something to sample

    cfg = runs[0]
    planned = [_plan_run(cfg) for cfg in runs]
    summaries = {s.run_dir: s for s, _, _, _ in planned}
    rounds = {s.run_dir: r for s, _, _, r in planned if r is not None}
    todo = sum(missing for _, missing, _, _ in planned)
    if todo == 0:
        for s in summaries.values():
            print(f"[sample] {s.run_dir}: all {s.skipped} samples already present", file=sys.stderr)
        return list(summaries.values())

    units = leases.guard(itertools.chain.from_iterable(u for _, _, u, _ in planned))
    kept = {run_dir: ShardIndex(run_dir) for run_dir in summaries}  # what is on disk, as replicas report writing it
    for run_dir, index in kept.items():
        index.refresh()
        if run_dir in rounds:
            rounds[run_dir].seen(index.rows)  # graded when its first units were planned
    before = {run_dir: index.total for run_dir, index in kept.items()}

    def kept_now() -> int:
        return sum(index.total - before[run_dir] for run_dir, index in kept.items())

    def tick(activity: dict[str, dict[str, Any]]) -> list[WorkUnit]:
        """Count the shards replicas wrote; an adaptive run grades them and plans its problems' next batches."""
        for report in activity.values():
            for run_dir, path, rows in report["shards"]:
                kept[run_dir].add(path, rows)
        more: list[WorkUnit] = []
        for run_dir, adaptive in rounds.items():
            leases.check()
            more += adaptive.kept(kept[run_dir])
        progress.update(kept_now(), activity)
        return more

    def redo(unit: WorkUnit) -> Optional[WorkUnit]:
        """The part of a dead replica's unit that it did not keep (what it wrote is all on disk now)."""
        index = kept[unit.run_dir]
        index.refresh()
        problems = pa.array(sorted({r.problem_id for r in unit.requests}))
        table = index.read(index.rows, ["problem_id", "sample_idx"], ds.field("problem_id").isin(problems))
        done = set(zip(table["problem_id"].to_pylist(), table["sample_idx"].to_pylist()))
        left = [r for r in unit.requests if (r.problem_id, r.sample_idx) not in done]
        return replace(unit, requests=left) if left else None

    def started(report: dict[str, Any]) -> None:
        """Print what a replica runs (and any warning about it), refuse a run it cannot serve, and record its
        precision in every run's config.yaml."""
        progress.engines_loaded()
        ready = report["ready"]
        print(f"[sample] replica {report['replica']}: {ready.line}", file=sys.stderr)
        for run in runs:
            check_supported(run, ready)
        if ready.warning:
            print(f"[sample] warning: {ready.warning}", file=sys.stderr)
        for run_dir in summaries if ready.precision else ():
            rundir.record_precision(run_dir, ready.precision)

    start, tokens = time.monotonic(), 0
    batches: dict[str, float] = {}  # replica -> its engine's mean running batch, as last reported
    writes: dict[str, float] = {}  # replica -> its CPU seconds writing shards, as last reported
    with Progress(todo, at_most=bool(rounds)) as progress:
        engine = cfg.engine.name
        resources = cluster.replica_resources(cfg.cluster.cpus_per_replica, cfg.cluster.gpus_per_replica,
                                              cfg.model.tensor_parallel_size, ENGINES[engine].runs_model)
        for result in cluster.serve(cfg.cluster, cfg.replicas, resources, engine, settings, units, replica_class,
                                    tick, redo, started):
            summary = summaries[result["run_dir"]]
            summary.tokens += result["tokens"]
            summary.errors += result["errors"]
            summary.generate_seconds += result["generate_s"]
            batches[result["replica"]] = result["mean_batch"]
            writes[result["replica"]] = result["write_s"]
            tokens += result["tokens"]
    wall = time.monotonic() - start
    engine_batch = sum(batches.values()) / len(batches) if batches else 0.0
    for s in summaries.values():  # the runs share the replicas and the call's wall time
        s.seconds, s.replicas, s.engine_batch, s.write_seconds = wall, cfg.replicas, engine_batch, sum(writes.values())
        kept[s.run_dir].refresh()  # what a replica wrote but died before reporting
        s.samples = kept[s.run_dir].total - before[s.run_dir]
        print(f"[sample] {s.samples} samples ({s.skipped} already present, {s.errors} failed), {s.tokens} tokens "
              f"-> {s.run_dir}/traces", file=sys.stderr)
        if s.run_dir in rounds:
            print(f"[sample] {rounds[s.run_dir].report()}", file=sys.stderr)
    print(f"[sample] in all: {kept_now()} samples, {tokens} tokens in {wall:.1f}s on {cfg.replicas} replica(s): "
          f"{tokens / wall:.0f} tok/s, engine batch {engine_batch:.1f} sequences on average", file=sys.stderr)
    return list(summaries.values())


@cli.entry_point("config")
def main(cfg: DictConfig) -> None:
    sample_runs([cfg])


if __name__ == "__main__":
    main()
