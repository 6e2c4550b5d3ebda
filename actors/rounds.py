"""Online adaptive sampling: each problem gets `adaptive.batch` more samples until its stopping rule says stop.

The driver grades the samples replicas keep as it finds them on disk (each new shard read once), and
queues a problem's next batch as soon as its last batch is all in and its vote still undecided, so no
problem waits for a unit or a round of the others. Sample indices stay contiguous from 0 per problem and
keep their per-sample seeds: an adaptive run's samples are a prefix of the fixed-n run's, and a rerun
resumes from the samples already written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import numpy as np
import pyarrow as pa

from actors.work import WorkUnit
from analysis import confidence as conf_lib
from analysis.adaptive import Schedule, checkpoints
from analysis.stopping import FITS, Rule
from analysis.voting import extract_all, group_answers
from storage.traces import ShardIndex, in_sample_order, read_columns


@dataclass
class Tally:
    """One problem's answers so far, in sample order, and whether its rule has stopped it."""

    problem_id: str
    keys: list[Optional[str]] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    stopped: bool = False
    asked: int = 0  # samples asked for so far: its batch is all in when it holds this many
    early: dict[int, tuple[Optional[str], float]] = field(default_factory=dict)  # kept before an earlier index
    grouped: Optional[np.ndarray] = None  # the answer classes of `keys`, once computed for them


class Rounds:
    """An adaptive run's work units: the first batch of every problem, then each problem's next batch as
    soon as its last one is graded, until its rule stops it or it reaches `adaptive.max_samples`."""

    def __init__(self, rule: Rule, params: dict[str, Any], schedule: Schedule, budget: int, fmt: str, confidence: str,
                 weighted: bool, run_dir: str, unit_size: int, problem_ids: list[str],
                 new_unit: Callable[[list[tuple[str, int]]], WorkUnit], prior: Any = None):
        """`rule` with `params` asked at `schedule`'s checkpoints up to `budget` samples; answers read in `fmt`,
        weighted by `confidence` when `weighted`; new units of about `unit_size` (problem_id, sample_idx) pairs.
        A rule with a fit (stopping.FITS) gets `prior` (fitted on another run), else one refitted on every
        problem's answers each time new samples are graded."""
        self.rule, self.params, self.budget = rule, params, budget
        self.fit = FITS.get(rule) if prior is None else None
        if rule in FITS:
            self.params = {**params, "prior": prior if prior is not None else FITS[rule]([])}
        self.asks = [int(t) for t in checkpoints(schedule, budget)]
        self.fmt, self.confidence, self.weighted = fmt, confidence, weighted
        self.run_dir, self.unit_size, self.new_unit = run_dir, unit_size, new_unit
        self.state = {pid: Tally(pid) for pid in problem_ids}
        self.graded: set[str] = set()  # the shards read

    def first_units(self, resumed: bool) -> list[WorkUnit]:
        """Units of every problem's next batch; `resumed`: first read back the samples an earlier call wrote."""
        if resumed:
            self._grade(read_columns(self.run_dir, self._columns()))
            self._refit()
        return self._units(self.state.values())

    def seen(self, shards: Iterable[str]) -> None:
        """These shards were graded already (first_units read every shard on disk)."""
        self.graded.update(shards)

    def kept(self, index: ShardIndex) -> list[WorkUnit]:
        """Grade the shards `index` lists that are new; the next batches of the problems whose batch is now all in
        and whose rule says go on."""
        new = [path for path in index.rows if path not in self.graded]
        if not new:
            return []
        self.graded.update(new)
        table = index.read(new, self._columns())
        self._grade(table)
        self._refit()
        return self._units([self.state[pid] for pid in dict.fromkeys(table["problem_id"].to_pylist())])

    def report(self) -> str:
        """Samples used against the fixed budget, and how many problems the rule stopped early."""
        used = [len(s.keys) for s in self.state.values()]
        early = sum(s.stopped and len(s.keys) < self.budget for s in self.state.values())
        return (f"adaptive: {sum(used)} of {self.budget * len(used)} samples ({sum(used) / len(used):.2f} per problem, "
                f"savings {1 - sum(used) / (self.budget * len(used)):.0%}); {early} of {len(used)} problems stopped early")

    def _columns(self) -> list[str]:
        return ["problem_id", "sample_idx", "text", "question"] + (["token_logprobs", "top_logprobs"] if self.weighted else [])

    def _grade(self, table: pa.Table) -> None:
        """Add each sample's answer key (and confidence) to its problem, in sample order: one kept before an
        earlier index waits for it."""
        data = table.to_pydict()
        pairs = extract_all(data["text"], self.fmt, workers=1, questions=data["question"])
        for i, (pid, index, (_, key)) in enumerate(zip(data["problem_id"], data["sample_idx"], pairs)):
            weight = 0.0
            if self.weighted and data["token_logprobs"][i] is not None:
                weight = conf_lib.trace_confidence(data["token_logprobs"][i], data["top_logprobs"][i], self.confidence)
            s = self.state[pid]
            s.early[index] = (key, weight)
            while len(s.keys) in s.early:
                key, weight = s.early.pop(len(s.keys))
                s.keys.append(key)
                s.weights.append(weight)

    def _refit(self) -> None:
        """A rule learning from the run: its prior fitted anew on every problem's answers so far."""
        if self.fit is not None:
            self.params["prior"] = self.fit([self._labels(s) for s in self.state.values()])

    def _labels(self, s: Tally) -> np.ndarray:
        """A problem's answer classes in sample order, grouped again only when it has new answers."""
        if s.grouped is None or len(s.grouped) != len(s.keys):
            s.grouped = group_answers(s.keys, self.fmt)[0]
        return s.grouped

    def _decide(self, s: Tally) -> bool:
        """Whether a problem is done: its rule stopped it at a checkpoint, or it holds the budget."""
        t = len(s.keys)
        if t >= self.budget:
            s.stopped = True
        elif t in self.asks:
            weights = np.asarray(s.weights) if self.weighted else None
            s.stopped = bool(self.rule(self._labels(s), weights, budget=self.budget, **self.params))
        return s.stopped

    def _units(self, tallies: Iterable[Tally]) -> list[WorkUnit]:
        """The next batch (up to its next checkpoint) of each problem whose batch is all in and whose rule says go
        on, grouped into units of about unit_size."""
        units, batch = [], []
        for s in tallies:
            t = len(s.keys)
            if s.stopped or t < s.asked or self._decide(s):
                continue
            s.asked = next(a for a in self.asks if a > t)
            batch += [(s.problem_id, i) for i in range(t, s.asked) if i not in s.early]
            if len(batch) >= self.unit_size:
                units.append(self.new_unit(batch))
                batch = []
        return units + ([self.new_unit(batch)] if batch else [])


def answer_labels(run_dir: str, fmt: str) -> list[np.ndarray]:
    """Each problem's answer classes in sample order (-1: no answer), as online rounds grade them: what a rule's
    prior is fitted on when adaptive.prior_run names this run."""
    table = in_sample_order(read_columns(run_dir, ["problem_id", "sample_idx", "text", "question"]))
    data = table.to_pydict()
    keys = [key for _, key in extract_all(data["text"], fmt, questions=data["question"])]
    by_problem: dict[str, list[Optional[str]]] = {}
    for pid, key in zip(data["problem_id"], keys):
        by_problem.setdefault(pid, []).append(key)
    return [group_answers(k, fmt)[0] for k in by_problem.values()]
