"""Online adaptive sampling: each problem gets `adaptive.batch` more samples until its stopping rule says stop.

The driver grades a work unit's shard as soon as it lands (that shard's rows only) and queues the next
batch of every problem in it whose vote is still undecided, so no problem waits for a round of the
others. Sample indices stay contiguous from 0 per problem and keep their per-sample seeds: an adaptive
run's samples are a prefix of the fixed-n run's, and a rerun resumes from the samples already written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import pyarrow as pa
from omegaconf import DictConfig, OmegaConf

from actors.work import WorkUnit
from analysis import confidence as conf_lib
from analysis.adaptive import Schedule, checkpoints
from analysis.stopping import variants
from analysis.traces import filesystem, read_columns, read_shard, traces_dir
from analysis.voting import extract_all, group_answers
from jobs.problems import Problem


@dataclass
class Tally:
    """One problem's answers so far, in sample order, and whether its rule has stopped it."""

    problem: Problem
    keys: list[Optional[str]] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    stopped: bool = False


class Rounds:
    """An adaptive run's work units: the first batch of every problem, then each problem's next batch as
    soon as its last one is graded, until its rule stops it or it reaches `adaptive.max_samples`."""

    def __init__(self, cfg: DictConfig, problems: list[Problem], new_unit: Callable[[list[tuple[Problem, int]]], WorkUnit]):
        [(_, self.rule, self.params)] = variants(OmegaConf.to_container(cfg.adaptive.rules, resolve=True))
        a = cfg.adaptive
        self.budget = a.max_samples or cfg.sampling.n
        self.asks = [int(t) for t in checkpoints(Schedule(a.min_samples, a.max_samples, a.batch), self.budget)]
        self.fmt, self.confidence, self.weighted = cfg.answer.format, cfg.answer.confidence, cfg.sampling.logprobs > 0
        self.run_dir, self.unit_size, self.new_unit = cfg.run_dir, cfg.cluster.unit_size, new_unit
        self.state = {p.problem_id: Tally(p) for p in problems}

    def first_units(self, resumed: bool) -> list[WorkUnit]:
        """Units of every problem's next batch; `resumed`: first read back the samples an earlier call wrote."""
        if resumed:
            self._grade(read_columns(self.run_dir, self._columns()))
        return self._units([s for s in self.state.values() if not self._decide(s)])

    def after(self, unit: WorkUnit) -> list[WorkUnit]:
        """The next batches of the problems `unit` sampled whose rule says go on (only its shard is read)."""
        fs, root = filesystem(traces_dir(self.run_dir))
        self._grade(read_shard(fs, f"{root}/{unit.name}.parquet").select(self._columns()))
        ids = dict.fromkeys(r.problem_id for r in unit.requests)
        return self._units([self.state[pid] for pid in ids if not self._decide(self.state[pid])])

    def report(self) -> str:
        """Samples used against the fixed budget, and how many problems the rule stopped early."""
        used = [len(s.keys) for s in self.state.values()]
        early = sum(s.stopped and len(s.keys) < self.budget for s in self.state.values())
        return (f"adaptive: {sum(used)} of {self.budget * len(used)} samples ({sum(used) / len(used):.2f} per problem, "
                f"savings {1 - sum(used) / (self.budget * len(used)):.0%}); {early} of {len(used)} problems stopped early")

    def _columns(self) -> list[str]:
        return ["problem_id", "sample_idx", "text", "question"] + (["token_logprobs", "top_logprobs"] if self.weighted else [])

    def _grade(self, table: pa.Table) -> None:
        """Append each sample's answer key (and confidence) to its problem, in sample order."""
        data = table.sort_by([("problem_id", "ascending"), ("sample_idx", "ascending")]).to_pydict()
        pairs = extract_all(data["text"], self.fmt, workers=1, questions=data["question"])
        for i, (pid, index, (_, key)) in enumerate(zip(data["problem_id"], data["sample_idx"], pairs)):
            s = self.state[pid]
            assert index == len(s.keys), f"{pid}: sample {index} arrived after {len(s.keys)} samples"
            s.keys.append(key)
            if self.weighted:
                lps, tops = data["token_logprobs"][i], data["top_logprobs"][i]
                s.weights.append(0.0 if lps is None else conf_lib.trace_confidence(lps, tops, self.confidence))

    def _decide(self, s: Tally) -> bool:
        """Whether a problem is done: its rule stopped it at a checkpoint, or it holds the budget."""
        t = len(s.keys)
        if t >= self.budget:
            s.stopped = True
        elif t in self.asks:
            labels, _ = group_answers(s.keys, self.fmt)
            weights = np.asarray(s.weights) if self.weighted else None
            s.stopped = bool(self.rule(labels, weights, budget=self.budget, **self.params))
        return s.stopped

    def _units(self, going: list[Tally]) -> list[WorkUnit]:
        """Each going problem's next batch (up to its next checkpoint), grouped into units of about unit_size."""
        units, batch = [], []
        for s in going:
            t = len(s.keys)
            batch += [(s.problem, i) for i in range(t, next(a for a in self.asks if a > t))]
            if len(batch) >= self.unit_size:
                units.append(self.new_unit(batch))
                batch = []
        return units + ([self.new_unit(batch)] if batch else [])
