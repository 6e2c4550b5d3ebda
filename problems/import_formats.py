"""Readers of other harnesses' sample files, each streaming one ImportedProblem per problem.

FORMATS maps a `format=` name to its Format: the file names it collects from a folder and its reader,
`read(files, cfg, peers)`. A reader holds one record (a line, a Parquet batch) at a time, plus the ids
of the problems seen so far; it adds the source's own per-problem numbers to `peers`. A bad record
fails with DatasetError naming `file:line` and the reason.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from omegaconf import DictConfig

from problems.datasets import DatasetError, as_text, gold_in, record_field, records

DATE = r"\d{4}-\d{2}-\d{2}T[\d.\-]+"  # lm-eval's and lighteval's date_id: isoformat() with ':' as '-'
LM_EVAL_SAMPLES = re.compile(rf"^samples_(?P<task>.+?)(?:_(?P<date>{DATE}))?\.jsonl$")
LIGHTEVAL_DETAILS = re.compile(rf"^details_(?P<task>.+)_(?P<date>{DATE})\.parquet$")
NEMO_OUTPUT = re.compile(r"^output-rs(?P<seed>\d+)\.jsonl$")
# lighteval sample metrics marginal recomputes: maj@8 (older) or maj@n:n=8; pass@k:k=1&n=4.
LIGHTEVAL_METRICS = {"first_k_vote": re.compile(r"^maj@(?:n:n=)?(\d+)"), "pass": re.compile(r"^pass@(?:k:k=)?(\d+)")}
NEMO_QUESTION_KEYS = ("problem", "question")  # after fields.question
NEMO_VERDICT_KEYS = ("symbolic_correct", "is_correct")  # NeMo-Skills' own grade of one generation


@dataclass
class ImportedProblem:
    """One problem of a source: its samples' texts in stored order, and where its record is."""

    where: str  # file:line
    problem_id: str
    question: str
    gold: str
    texts: list[str]
    prompt: str  # the task or benchmark name
    model: Optional[str]
    num_tokens: Optional[list[int]] = None
    temperature: Optional[float] = None


@dataclass
class PeerTally:
    """The source's own per-problem numbers, summed per metric, and how marginal recomputes each
    (`method` of analysis.peers on the problems whose id starts with `subset`, `k` samples; None: all)."""

    tool: str
    sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, name: str, value: Any, subset: str, method: Optional[str], k: Optional[int], why: str = "") -> None:
        if isinstance(value, bool) or isinstance(value, (int, float)):
            self.sums[name] += float(value)
            self.counts[name] += 1
            self.specs.setdefault(name, {"subset": subset, "method": method, "k": k, "why": why})

    def entries(self) -> list[dict[str, Any]]:
        """One entry per metric: its mean over problems, as the tool reports it, and its recomputation."""
        return [{"name": name, "value": self.sums[name] / self.counts[name], "problems": self.counts[name], **spec}
                for name, spec in self.specs.items()]


def gold_of(raw: Any, cfg: DictConfig, where: str) -> str:
    """The recorded gold, or group 1 of `gold_pattern` where it matches (GSM8K's '#### N')."""
    text = as_text(raw).strip()
    gold = gold_in(text, cfg.gold_pattern)
    gold = text if gold is None else gold
    if not gold:
        raise DatasetError(f"{where}: empty gold answer")
    return gold


def texts_of(value: Any, key: str, where: str) -> list[str]:
    """A list of generated texts, or DatasetError naming the first entry that is none."""
    if not isinstance(value, list) or not value:
        raise DatasetError(f"{where}: {key} is {type(value).__name__ if value else 'empty'}, not a list of texts")
    for index, text in enumerate(value):
        if not isinstance(text, str):
            raise DatasetError(f"{where}: {key}[{index}] is {type(text).__name__}, not text (a task without generations?)")
    return value


def first_present(record: dict[str, Any], keys: tuple[str, ...]) -> Optional[Any]:
    return next((record[k] for k in keys if record.get(k) is not None), None)


# --- lm-evaluation-harness: samples_<task>_<date>.jsonl, one line per (doc, filter) ---------------------

def lm_eval_results(folder: Path, date: Optional[str]) -> dict[str, Any]:
    """The run's results_<date>.json beside its samples (the only results file there when no date matches)."""
    same_run = folder / f"results_{date}.json"
    candidates = [same_run] if date and same_run.is_file() else sorted(folder.glob("results*.json"))
    if len(candidates) != 1:
        return {}
    try:
        return json.loads(candidates[0].read_text())
    except json.JSONDecodeError as error:
        raise DatasetError(f"{candidates[0]}: malformed JSON ({error.msg} at line {error.lineno})") from None


def lm_eval_vote(steps: Optional[list[dict[str, Any]]]) -> tuple[Optional[str], Optional[int], str]:
    """How an lm-eval filter picks the answer it grades: a vote over the first k samples (take_first_k, then
    majority_vote; majority_vote alone: all), or the first sample (take_first alone)."""
    if steps is None:
        return None, None, "no results_*.json beside the samples names this filter's steps"
    functions = [step.get("function") for step in steps]
    k = next((step.get("k") for step in steps if step.get("function") == "take_first_k"), None)
    if "majority_vote" in functions:
        return "first_k_vote", k, ""
    if "take_first" in functions:
        return "first_k_vote", 1, ""
    return None, None, f"filter steps {functions} pick no single answer marginal can recompute"


def read_lm_eval(files: list[Path], cfg: DictConfig, peers: PeerTally) -> Iterator[ImportedProblem]:
    """Every repeat of a doc's `resps` is one sample; `doc` gives the question, `target` the gold. A doc is
    logged once per filter: its samples are taken from the first, every filter's metrics are tallied."""
    for path in files:
        match = LM_EVAL_SAMPLES.match(path.name)
        if not match:
            raise DatasetError(f"{path}: not an lm-eval samples file (samples_<task>_<date>.jsonl)")
        task = match["task"]
        results = lm_eval_results(path.parent, match["date"])
        task_config = (results.get("configs") or {}).get(task)
        filters = None if task_config is None else {
            f["name"]: f.get("filter", []) for f in task_config.get("filter_list") or [{"name": "none", "filter": [{"function": "take_first"}]}]}
        temperature = ((task_config or {}).get("generation_kwargs") or {}).get("temperature")
        model = cfg.model_name or results.get("model_name") or path.parent.name  # lm-eval writes into <output>/<model>/
        seen: set[Any] = set()
        for number, record in records(path):
            where = f"{path}:{number}"
            doc_id = record_field(record, "doc_id", where)
            filter_name = record.get("filter", "none")
            method, k, why = lm_eval_vote(None if filters is None else filters.get(filter_name))
            for metric in record.get("metrics") or []:
                peers.add(f"{task} {metric},{filter_name}", record.get(metric), f"{task}/", method, k, why)
            if doc_id in seen:
                continue
            seen.add(doc_id)
            resps = record_field(record, "resps", where)  # one list of `repeats` texts per request
            texts = [text for request in (resps if isinstance(resps, list) else [resps])
                     for text in (request if isinstance(request, list) else [request])]
            doc = record_field(record, "doc", where)
            question = doc.get(cfg.fields.question) if isinstance(doc, dict) else None
            if question is None:  # the prompt it sent: arguments.gen_args_0.arg_0
                question = ((record.get("arguments") or {}).get("gen_args_0") or {}).get("arg_0")
            if question is None:
                raise DatasetError(f"{where}: doc has no field {cfg.fields.question!r} (fields.question) and no prompt in arguments")
            yield ImportedProblem(where, f"{task}/{doc_id}", as_text(question), gold_of(record_field(record, "target", where), cfg, where),
                                  texts_of(texts, "resps", where), task, model, temperature=temperature)


# --- lighteval: details_<task>_<date>.parquet, one row per doc with all n responses ---------------------

def lighteval_model(path: Path) -> str:
    """The model folder lighteval writes details under: details/<model name, with its org>/<date>/."""
    parts = path.parts
    if "details" in parts[:-2]:
        start = len(parts) - 1 - parts[::-1].index("details")
        return "/".join(parts[start + 1 : -2]) or path.parent.name
    return path.parent.name


def column(record: dict[str, Any], names: tuple[str, str], where: str) -> Any:
    """The first of `names` (lighteval's documented `__doc__`, or `doc` as its tracker writes now) a row holds."""
    value = first_present(record, names)
    if not isinstance(value, dict):
        raise DatasetError(f"{where}: no {' or '.join(names)} record (has {sorted(record)[:8]})")
    return value


def read_lighteval(files: list[Path], cfg: DictConfig, peers: PeerTally) -> Iterator[ImportedProblem]:
    """`__model_response__.text` holds all n responses; `__doc__` the query and its gold among `choices`."""
    for path in files:
        match = LIGHTEVAL_DETAILS.match(path.name)
        if not match:
            raise DatasetError(f"{path}: not a lighteval details file (details_<task>_<date>.parquet)")
        task, model = match["task"], cfg.model_name or lighteval_model(path)
        for number, record in records(path):
            where = f"{path}:{number}"
            doc = column(record, ("__doc__", "doc"), where)
            response = column(record, ("__model_response__", "model_response"), where)
            metric = first_present(record, ("__metric__", "metric")) or {}
            for name, value in metric.items():
                method = next((m for m, pattern in LIGHTEVAL_METRICS.items() if pattern.match(name)), None)
                k = int(LIGHTEVAL_METRICS[method].match(name).group(1)) if method else None
                peers.add(f"{task} {name}", value, f"{task}/", method, k, "" if method else "not a vote or pass@k")
            texts = texts_of(response.get("text"), "__model_response__.text", where)
            choices, index = record_field(doc, "choices", where), record_field(doc, "gold_index", where)
            index = index[0] if isinstance(index, list) else index
            if not isinstance(choices, list) or not isinstance(index, int) or not 0 <= index < len(choices):
                raise DatasetError(f"{where}: __doc__.gold_index {index!r} names none of its {len(choices)} choices")
            tokens = response.get("output_tokens")
            num_tokens = [len(t) for t in tokens] if isinstance(tokens, list) and len(tokens) == len(texts) else None
            yield ImportedProblem(where, f"{task}/{doc.get('id') or number - 1}", as_text(record_field(doc, "query", where)),
                                  gold_of(choices[index], cfg, where), texts, task, model, num_tokens)


# --- NeMo-Skills: output-rs<seed>.jsonl, line i of every seed's file is problem i -----------------------

def read_nemo_skills(files: list[Path], cfg: DictConfig, peers: PeerTally) -> Iterator[ImportedProblem]:
    """One sample per seed file (`generation`); `expected_answer` is the gold. The seeds' files of a folder
    (a benchmark) are read in step, so they must list the same problems in the same order."""
    folders: dict[Path, list[Path]] = defaultdict(list)
    for path in files:
        if not NEMO_OUTPUT.match(path.name):
            raise DatasetError(f"{path}: not a NeMo-Skills output file (output-rs<seed>.jsonl)")
        folders[path.parent].append(path)
    for folder, paths in folders.items():
        paths.sort(key=lambda p: int(NEMO_OUTPUT.match(p.name)["seed"]))
        benchmark = folder.name
        for index, lines in enumerate(zip_longest(*(records(p) for p in paths))):
            if None in lines:
                short = paths[lines.index(None)]
                raise DatasetError(f"{short}: ends after {index} problems, but {paths[0]} lists more")
            wheres = [f"{p}:{number}" for p, (number, _) in zip(paths, lines)]
            rows = [record for _, record in lines]
            texts = texts_of([record_field(row, "generation", where) for where, row in zip(wheres, rows)], "generation", wheres[0])
            keys = (cfg.fields.question, *NEMO_QUESTION_KEYS)
            question = first_present(rows[0], keys)
            if question is None:
                raise DatasetError(f"{wheres[0]}: no question field ({', '.join(keys)})")
            for where, row in zip(wheres[1:], rows[1:]):
                if first_present(row, keys) != question:
                    raise DatasetError(f"{where}: a different problem than {wheres[0]} (every output-rs file must list "
                                       "the same problems in the same order)")
            tokens = [row.get("num_generated_tokens") for row in rows]
            verdicts = [first_present(row, NEMO_VERDICT_KEYS) for row in rows]
            if all(isinstance(v, bool) for v in verdicts):
                peers.add(f"{benchmark} pass@1[avg-of-{len(rows)}]", sum(verdicts) / len(rows), f"{benchmark}/", "pass", 1)
                peers.add(f"{benchmark} pass@{len(rows)}", any(verdicts), f"{benchmark}/", "pass", len(rows))
            yield ImportedProblem(wheres[0], f"{benchmark}/{index}", as_text(question),
                                  gold_of(record_field(rows[0], "expected_answer", wheres[0]), cfg, wheres[0]), texts,
                                  benchmark, cfg.model_name, tokens if all(isinstance(t, int) for t in tokens) else None)


# --- jsonl: one line per problem with a list of responses, fields mapped by config ----------------------

def read_jsonl(files: list[Path], cfg: DictConfig, peers: PeerTally) -> Iterator[ImportedProblem]:
    """`fields.question`, `fields.answer` and `fields.responses` name a line's parts; `fields.id` its id
    (null: `<file stem>/<line number>`)."""
    f = cfg.fields
    for path in files:
        for number, record in records(path):
            where = f"{path}:{number}"
            problem_id = as_text(record_field(record, f.id, where)) if f.id else f"{path.stem}/{number}"
            yield ImportedProblem(where, problem_id, as_text(record_field(record, f.question, where)),
                                  gold_of(record_field(record, f.answer, where), cfg, where),
                                  texts_of(record_field(record, f.responses, where), f.responses, where), path.stem, cfg.model_name)


@dataclass(frozen=True)
class Format:
    pattern: str  # the files it collects from a folder (recursively)
    read: Callable[[list[Path], DictConfig, PeerTally], Iterator[ImportedProblem]]
    fields: bool  # it reads ingest.fields (recorded in the run's config.yaml)


FORMATS: dict[str, Format] = {
    "lm_eval": Format("samples_*.jsonl", read_lm_eval, fields=True),
    "lighteval": Format("details_*.parquet", read_lighteval, fields=False),
    "nemo_skills": Format("output-rs*.jsonl", read_nemo_skills, fields=True),
    "jsonl": Format("*.jsonl", read_jsonl, fields=True),
}
