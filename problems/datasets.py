"""Problems to evaluate: built-in arithmetic word problems, or rows of a JSONL / Parquet file.

Every dataset is described in conf/dataset/ by a field mapping; one loader serves them all. A bad
row fails with `file:line: reason`, and duplicate problem ids are an error.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from omegaconf import DictConfig

from analysis.errors import MarginalError


PARQUET_BATCH = 1024  # rows decoded at once when a Parquet file is read
GSM8K_GOLD = r"####\s*(.+?)\s*$"  # GSM8K's last solution line, '#### N': group 1 is the gold (conf/dataset/gsm8k.yaml)


class DatasetError(MarginalError, ValueError):
    """A dataset that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Problem:
    problem_id: str
    question: str
    gold: str
    solution: Optional[str] = None  # a worked solution, used for few-shot exemplars


def load_problems(cfg: DictConfig, split: str = "test") -> list[Problem]:
    """The problems of `cfg` (a dataset config): of the test split at most `cfg.limit`, of the train split all."""
    if cfg.name in BUILT_IN:
        problems = BUILT_IN[cfg.name].load(cfg, split)
    else:
        path = cfg.path if split == "test" else cfg.train_path
        if not path:
            raise DatasetError(f"dataset={cfg.name}: no path for the {split} split (dataset.path / dataset.train_path)")
        if cfg.source and not Path(path).is_file():
            raise DatasetError(missing_file_message(cfg, path))
        problems = list(_file_problems(Path(path), cfg))
    _check_unique(problems, cfg.name)
    return problems[: cfg.limit] if cfg.limit and split == "test" else problems  # exemplars come from the whole train split


def missing_file_message(cfg: DictConfig, path: str) -> str:
    """Where a named dataset's missing file goes, and where the public file comes from."""
    return (f"dataset={cfg.name}: {path}: no such file. Put {Path(path).name} there "
            f"(the folder above {Path(path).parent.name}/ is data_dir: set data_dir=DIR or MARGINAL_DATA_DIR); "
            f"the public file: {cfg.source}")


def _check_unique(problems: list[Problem], name: str) -> None:
    seen: dict[str, int] = {}
    for index, problem in enumerate(problems):
        if problem.problem_id in seen:
            raise DatasetError(
                f"dataset={name}: duplicate problem_id {problem.problem_id!r} (rows {seen[problem.problem_id] + 1} and {index + 1})"
            )
        seen[problem.problem_id] = index


def _parquet_records(path: Path) -> Iterator[tuple[int, Any]]:
    """(row number, record) pairs of a Parquet file, streamed a batch at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        number = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH):
            for row in batch.to_pylist():
                number += 1
                yield number, row
    except pa.ArrowException as error:
        raise DatasetError(f"{path}: not a readable Parquet file ({error})") from None


def _jsonl_records(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, record) pairs of a JSON-lines file, streamed; blank lines are skipped."""
    if path.stat().st_size == 0:
        raise DatasetError(f"{path}: empty file")
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DatasetError(f"{path}:{number}: not UTF-8 ({error.reason} at byte {error.start})") from None
            if not line.strip():
                continue
            try:
                yield number, json.loads(line.rstrip("\r\n"))  # a cut line reports its own column, not the next line's
            except json.JSONDecodeError as error:
                raise DatasetError(f"{path}:{number}: malformed JSON ({error.msg} at column {error.colno})") from None


# Dataset file formats by suffix (any other suffix is read as JSON lines): a new one is a reader and one line.
READERS: dict[str, Callable[[Path], Iterator[tuple[int, Any]]]] = {".parquet": _parquet_records, ".jsonl": _jsonl_records}


def records(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, record) pairs of a dataset file, by the reader of its suffix."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    return READERS.get(path.suffix, _jsonl_records)(path)


def record_field(record: Any, key: str, where: str) -> Any:
    """`record[key]`, or DatasetError at `where` (file:line) when the record is no object or lacks it."""
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if key not in record or record[key] is None:
        raise DatasetError(f"{where}: missing field {key!r} (has {sorted(record)[:8]})")
    return record[key]


def as_text(value: Any) -> str:
    """A field value as the text a prompt or a gold answer holds (145.0 stays '145.0')."""
    return value if isinstance(value, str) else json.dumps(value)


def gold_in(answer: str, pattern: Optional[str]) -> Optional[str]:
    """The gold a recorded answer holds, stripped: group 1 of `pattern` (None where it does not match), or
    without a pattern the whole answer."""
    if not pattern:
        return answer.strip()
    match = re.search(pattern, answer, re.MULTILINE)
    return match.group(1).strip() if match else None


def _file_problems(path: Path, cfg: DictConfig) -> Iterator[Problem]:
    count = 0
    for number, record in records(path):
        where = f"{path}:{number}"
        question = " ".join(as_text(record_field(record, key, where)).strip() for key in cfg.question_fields)
        if not question:
            raise DatasetError(f"{where}: empty question")
        gold = gold_in(as_text(record_field(record, cfg.answer_field, where)), cfg.gold_pattern)
        if gold is None:
            raise DatasetError(f"{where}: field {cfg.answer_field!r} does not match {cfg.gold_pattern!r}")
        if not gold:
            raise DatasetError(f"{where}: empty gold answer in field {cfg.answer_field!r}")
        problem_id = as_text(record_field(record, cfg.id_field, where)) if cfg.id_field else f"{cfg.name}/{count}"
        solution = record.get(cfg.solution_field) if cfg.solution_field else None
        count += 1
        yield Problem(problem_id, question, gold, solution)
    if count == 0:
        raise DatasetError(f"{path}: no problems in file")


# --- built-in multi-step arithmetic word problems --------------------------------------------

_NAMES = ["Ava", "Ben", "Chloe", "Dan", "Emma", "Finn", "Grace", "Hugo", "Ivy", "Jack", "Lena", "Omar"]
_ITEMS = ["apples", "marbles", "stickers", "books", "cookies", "pencils", "shells", "coins"]
_RELATIVES = ["dad", "mom", "sister", "brother", "friend", "aunt", "cousin", "neighbour"]


def arith_split(cfg: DictConfig, split: str) -> list[Problem]:
    """dataset=arith: `size` test problems, or a disjoint train split of at least 64."""
    seed = cfg.seed if split == "test" else cfg.seed + 1_000_003
    return arith_problems(cfg.size if split == "test" else max(cfg.size, 64), cfg.steps, seed, split)


def arith_problems(size: int, steps: int, seed: int, split: str = "test") -> list[Problem]:
    """`size` word problems, each chaining `steps` operations; the same seed gives the same problems."""
    rng = random.Random(f"arith:{seed}:{steps}")
    return [_arith_problem(rng, steps, f"arith-{split}/s{steps}/{index}") for index in range(size)]


def _arith_problem(rng: random.Random, steps: int, problem_id: str) -> Problem:
    """One problem: a start amount, then `steps` people each relative to the previous; ask for the total."""
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    relatives = rng.sample(_RELATIVES, k=min(steps, len(_RELATIVES))) + [f"friend #{i}" for i in range(steps - len(_RELATIVES))]
    amounts = [rng.randint(2, 12)]
    sentences = [f"{name} has {amounts[0]} {item}."]
    lines = [f"{name} has {amounts[0]}."]
    previous = name
    for relative in relatives[:steps]:
        before = amounts[-1]
        kind = rng.choice(["more", "fewer", "times"] if before > 2 else ["more", "times"])
        if kind == "more":
            delta = rng.randint(1, 9)
            amounts.append(before + delta)
            sentences.append(f"{name}'s {relative} has {delta} more than {previous}.")
            lines.append(f"The {relative} has {before} + {delta} = {amounts[-1]}.")
        elif kind == "fewer":
            delta = rng.randint(1, before - 1)
            amounts.append(before - delta)
            sentences.append(f"{name}'s {relative} has {delta} fewer than {previous}.")
            lines.append(f"The {relative} has {before} - {delta} = {amounts[-1]}.")
        else:
            factor = rng.randint(2, 3)
            amounts.append(before * factor)
            sentences.append(f"{name}'s {relative} has {factor} times as many as {previous}.")
            lines.append(f"The {relative} has {before} * {factor} = {amounts[-1]}.")
        previous = f"the {relative}"
    total = sum(amounts)
    question = " ".join(sentences) + f" How many {item} do they have together?"
    solution = " ".join(lines) + f" Together: {' + '.join(map(str, amounts))} = {total}. The answer is {total}."
    return Problem(problem_id, question, str(total), solution)


@dataclass(frozen=True)
class BuiltIn:
    """A dataset generated, not read: how to make a split of it, and its settings that count (each must be >= 1)."""

    load: Callable[[DictConfig, str], list[Problem]]
    counts: tuple[str, ...]


BUILT_IN: dict[str, BuiltIn] = {"arith": BuiltIn(arith_split, ("size", "steps"))}  # dataset=<name>: one line each
