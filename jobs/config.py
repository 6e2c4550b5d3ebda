"""Structured configs behind conf/, and one validator per schema, run by the job's entry point before any work.

Hydra type-checks every key against these dataclasses (an unknown key or option fails at once); the
schema's validator (VALIDATORS, called by jobs.cli.entry_point) then checks ranges and names the
offending key. Each default is declared once: a field is MISSING when every option of its group (or the
job's YAML) sets it, and otherwise its default here is the one no YAML repeats (tests/test_config.py
checks both ways).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from actors.decodings import DECODINGS
from actors.precision import DTYPES
from analysis.answers import ANSWER_FORMATS
from analysis.confidence import TRACE_SCORES
from analysis.errors import ConfigError
from problems.datasets import BUILT_IN


@dataclass
class ModelConfig:
    name: str = MISSING
    path: str = MISSING  # Hugging Face id, local folder, or embedded://NAME
    dtype: str = MISSING  # one of actors.precision.DTYPES; auto: resolved by the replica for its machine
    max_model_len: int = MISSING
    tensor_parallel_size: int = 1


@dataclass
class DatasetConfig:
    name: str = MISSING
    path: Optional[str] = None  # null: built in (problems.datasets.BUILT_IN)
    train_path: Optional[str] = None  # where few-shot exemplars come from; never the evaluated split
    question_fields: list[str] = field(default_factory=lambda: ["question"])
    answer_field: str = "answer"
    id_field: Optional[str] = None  # null: "<name>/<row index>"
    gold_pattern: Optional[str] = None  # regex whose group 1 is the gold inside answer_field
    solution_field: Optional[str] = None  # worked solution, for few-shot exemplars
    limit: Optional[int] = None  # null: every problem
    answer_format: str = "auto"
    source: Optional[str] = None  # where the public file comes from, named when the file is missing
    size: Optional[int] = None  # arith only: problems generated
    steps: Optional[int] = None  # arith only: operations per problem
    seed: Optional[int] = None  # arith only


@dataclass
class PromptConfig:
    name: str = MISSING
    chat: bool = MISSING
    system: Optional[str] = None
    user: str = MISSING  # chat: the user turn, with {question}
    completion: str = MISSING  # plain completion (chat=false), with {question}
    shots: int = 0  # few-shot exemplars from dataset.train_path
    shots_seed: int = 0


@dataclass
class SamplingConfig:  # conf/sampling/default.yaml
    n: int = MISSING
    temperature: float = MISSING
    top_p: float = MISSING
    max_tokens: int = MISSING
    seed: int = MISSING
    logprobs: int = MISSING
    top_k_branches: int = MISSING  # cot_decoding: branches on the top-k first tokens


@dataclass
class ClusterConfig:  # conf/cluster/local.yaml, gpu.yaml
    name: str = MISSING
    address: Optional[str] = MISSING
    join_timeout_s: float = MISSING
    num_cpus: Optional[int] = MISSING
    cpus_per_replica: float = MISSING
    gpus_per_replica: float = MISSING
    unit_size: int = MISSING
    flush_s: float = MISSING
    flush_rows: int = MISSING
    max_inflight: int = MISSING
    max_replica_restarts: int = MISSING
    startup_timeout_s: float = MISSING
    env: dict[str, str] = MISSING


@dataclass
class VllmEngineConfig:  # conf/engine/vllm.yaml
    name: str = MISSING
    args: dict[str, Any] = MISSING  # vllm.LLM arguments on every device
    cpu: dict[str, Any] = MISSING  # ... and on CPU only
    gpu: dict[str, Any] = MISSING  # ... and on GPU only


@dataclass
class OpenAIEngineConfig:  # conf/engine/openai.yaml
    name: str = MISSING
    base_url: str = MISSING
    model: Optional[str] = MISSING
    api: str = MISSING  # completions | chat
    api_key_env: Optional[str] = MISSING  # an environment variable's name: the key itself is in no config
    max_concurrency: int = MISSING
    timeout_s: float = MISSING
    retries: int = MISSING
    tokenizer: Optional[str] = MISSING


@dataclass
class TrackingConfig:  # conf/tracking/
    enabled: bool = MISSING
    uri: str = MISSING
    experiment: str = MISSING


@dataclass
class AnswerConfig:  # conf/answer/default.yaml: how answers are read, votes weighted and curves drawn
    format: Optional[str] = MISSING  # one of ANSWER_FORMATS; null (jobs.aggregate, ensemble): the run's saved one
    confidence: str = MISSING  # one of TRACE_SCORES
    top_percent: Optional[float] = MISSING
    audit: int = MISSING
    seed: Optional[int] = MISSING  # the curves' bootstrap and Monte Carlo draws; null: the run's saved one


@dataclass
class AdaptiveConfig:
    rules: dict[str, Any] = MISSING  # rule name -> its parameters (conf/adaptive/<rule>.yaml)
    min_samples: int = 1  # the rule is first asked after this many samples
    max_samples: Optional[int] = None  # the budget per problem; null: sampling.n (in replay: the stored n)
    batch: int = 1  # samples per round: the rule is asked again after this many more
    orders: int = 50  # replay: random orders of each problem's samples (besides the stored order)
    seed: int = 0  # replay: seed of those orders
    budget: Any = None  # replay: total samples for all problems, round the undecided ones first; a list: each (null: off)
    prior_run: Optional[str] = None  # a run whose answers fit the prior of a rule that learns one (analysis.stopping
    # FITS), the same for replay and online; null: the run itself (replay: the other half; online: answers so far)


@dataclass
class Config:  # conf/config.yaml
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    prompt: PromptConfig = MISSING
    sampling: SamplingConfig = MISSING
    cluster: ClusterConfig = MISSING
    engine: Any = MISSING  # conf/engine/<name>.yaml, checked by its own schema (ENGINE_SCHEMAS)
    tracking: TrackingConfig = MISSING
    answer: AnswerConfig = MISSING
    adaptive: AdaptiveConfig = MISSING  # online stopping rules (conf/adaptive/); none: every problem gets sampling.n
    run_dir: str = MISSING
    data_dir: str = MISSING  # holds <dataset>/test.jsonl (and train.jsonl): $MARGINAL_DATA_DIR, else the XDG data dir
    replicas: int = MISSING
    decoding: str = MISSING
    greedy_baseline: bool = MISSING


@dataclass
class AggregateConfig:  # conf/aggregate.yaml
    tracking: TrackingConfig = MISSING
    answer: AnswerConfig = MISSING
    adaptive: AdaptiveConfig = MISSING
    run_dir: str = MISSING


@dataclass
class ExportSettings:
    max_per_problem: int = MISSING  # at most this many right samples per problem (after deduplication)


@dataclass
class ExportConfig:  # conf/export.yaml
    run_dir: str = MISSING
    out: Optional[str] = MISSING  # null: <run_dir>/sft
    export: ExportSettings = MISSING


@dataclass
class CompactConfig:  # conf/compact.yaml
    run_dir: str = MISSING


@dataclass
class EnsembleConfig:  # conf/ensemble.yaml
    tracking: TrackingConfig = MISSING
    answer: AnswerConfig = MISSING
    run_dirs: list[str] = MISSING
    weights: Optional[list[float]] = MISSING  # one vote weight per run; null: equal
    out: str = MISSING


@dataclass
class CompareConfig:  # conf/compare.yaml
    tracking: TrackingConfig = MISSING
    experiment: str = MISSING
    parent: Optional[str] = MISSING
    tag: dict[str, Any] = MISSING
    filter: Optional[str] = MISSING
    methods: list[str] = MISSING
    out: str = MISSING


@dataclass
class IngestFields:
    question: str = MISSING
    answer: str = MISSING
    responses: str = MISSING
    id: Optional[str] = None  # null: the line number


@dataclass
class IngestAnswer:
    format: str = MISSING


@dataclass
class IngestConfig:
    format: str = MISSING
    path: str = MISSING
    run_dir: str = MISSING
    model_name: Optional[str] = None  # not `model`: that is a config group of conf/
    gold_pattern: Optional[str] = None
    shard_rows: int = MISSING
    fields: IngestFields = field(default_factory=IngestFields)
    answer: IngestAnswer = field(default_factory=IngestAnswer)


def xdg_data_home() -> str:
    """$XDG_DATA_HOME, or ~/.local/share where it is unset or empty (the XDG base directory rule)."""
    return os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")


OmegaConf.register_new_resolver("xdg_data_home", xdg_data_home, replace=True)
ConfigStore.instance().store(name="schema", node=Config)
ENGINE_SCHEMAS = {"vllm": VllmEngineConfig, "openai": OpenAIEngineConfig}  # one per actors.engines.ENGINES
for engine_name, schema in ENGINE_SCHEMAS.items():
    ConfigStore.instance().store(group="engine", name=f"{engine_name}_schema", node=schema)
ConfigStore.instance().store(name="ingest_schema", node=IngestConfig)
ConfigStore.instance().store(name="aggregate_schema", node=AggregateConfig)
ConfigStore.instance().store(name="export_schema", node=ExportConfig)
ConfigStore.instance().store(name="compact_schema", node=CompactConfig)
ConfigStore.instance().store(name="ensemble_schema", node=EnsembleConfig)
ConfigStore.instance().store(name="compare_schema", node=CompareConfig)


def check_key(ok: bool, key: str, value: Any, rule: str) -> None:
    """Raise ConfigError `key=value: rule` unless `ok`."""
    if not ok:
        raise ConfigError(f"{key}={value!r}: {rule}")


def budgets(a: DictConfig) -> list[Any]:
    """adaptive.budget as a list: none, one total, or several."""
    return [] if a.budget is None else [a.budget] if isinstance(a.budget, int) else list(a.budget)


def check_adaptive(a: DictConfig) -> None:
    """Raise ConfigError naming the first adaptive.* key out of range, or the rule or parameter at fault."""
    check_key(a.min_samples >= 1, "adaptive.min_samples", a.min_samples, "must be >= 1")
    check_key(a.max_samples is None or a.max_samples >= 1, "adaptive.max_samples", a.max_samples, "must be >= 1 or null")
    check_key(a.batch >= 1, "adaptive.batch", a.batch, "must be >= 1")
    check_key(a.orders >= 50, "adaptive.orders", a.orders, "must be >= 50")
    check_key(all(isinstance(b, int) and b >= 1 for b in budgets(a)), "adaptive.budget", a.budget,
              "must be an integer >= 1, a list of them, or null")
    check_key(a.prior_run is None or Path(a.prior_run, "traces").is_dir(), "adaptive.prior_run", a.prior_run,
              "holds no traces/ folder: name a run sampled or imported before")
    from analysis.stopping import variants  # scipy: imported only by the jobs that aggregate

    try:
        variants(OmegaConf.to_container(a.rules, resolve=True))
    except ValueError as error:
        raise ConfigError(str(error)) from None


def check_answer(a: DictConfig, saved_format: bool = False) -> None:
    """Raise ConfigError naming the first answer.* key out of range; `saved_format`: null format and seed
    stand for the run's saved ones."""
    formats = ANSWER_FORMATS + ((None,) if saved_format else ())
    check_key(a.format in formats, "answer.format", a.format, f"must be one of {formats}")
    check_key(a.confidence in TRACE_SCORES, "answer.confidence", a.confidence, f"must be one of {tuple(TRACE_SCORES)}")
    check_key(a.top_percent is None or 0 < a.top_percent <= 100, "answer.top_percent", a.top_percent,
           "must be in (0, 100] or null")
    check_key(a.audit >= 0, "answer.audit", a.audit, "must be >= 0 (answers to print per type)")
    check_key(saved_format or a.seed is not None, "answer.seed", a.seed, "must be an integer")


def validate(cfg: DictConfig) -> None:
    """conf/config.yaml (jobs.sample, jobs.evaluate): raise ConfigError naming the first key out of range."""
    s, m, c = cfg.sampling, cfg.model, cfg.cluster
    check_key(s.n >= 1, "sampling.n", s.n, "must be >= 1")
    check_key(s.temperature >= 0, "sampling.temperature", s.temperature, "must be >= 0")
    check_key(0 < s.top_p <= 1, "sampling.top_p", s.top_p, "must be in (0, 1]")
    check_key(s.max_tokens >= 1, "sampling.max_tokens", s.max_tokens, "must be >= 1")
    check_key(
        s.max_tokens < m.max_model_len,
        "sampling.max_tokens",
        s.max_tokens,
        f"must be below the model's context (model.max_model_len={m.max_model_len})",
    )
    check_key(s.logprobs >= 0, "sampling.logprobs", s.logprobs, "must be >= 0")
    check_key(s.top_k_branches >= 1, "sampling.top_k_branches", s.top_k_branches, "must be >= 1")
    check_key(cfg.replicas >= 1, "replicas", cfg.replicas, "must be >= 1")
    check_key(m.tensor_parallel_size >= 1, "model.tensor_parallel_size", m.tensor_parallel_size, "must be >= 1")
    check_key(m.dtype in DTYPES, "model.dtype", m.dtype, f"must be one of {DTYPES}")
    check_key(bool(m.path), "model.path", m.path, "must name a Hugging Face id, a folder or embedded://NAME")
    check_key(cfg.decoding in DECODINGS, "decoding", cfg.decoding, f"must be one of {tuple(DECODINGS)}")
    check_answer(cfg.answer)
    decoding = DECODINGS[cfg.decoding]
    check_key(s.max_tokens >= decoding.min_tokens, "sampling.max_tokens", s.max_tokens,
              f"must be >= {decoding.min_tokens} with decoding={cfg.decoding}")
    d = cfg.dataset
    check_key(d.answer_format in ANSWER_FORMATS, "dataset.answer_format", d.answer_format, f"must be one of {ANSWER_FORMATS}")
    check_key(d.limit is None or d.limit >= 1, "dataset.limit", d.limit, "must be >= 1 or null")
    for key in BUILT_IN[d.name].counts if d.name in BUILT_IN else ():
        check_key(d[key] is not None and d[key] >= 1, f"dataset.{key}", d[key], "must be >= 1")
    check_key(c.unit_size >= 1, "cluster.unit_size", c.unit_size, "must be >= 1")
    check_key(c.max_inflight >= 1, "cluster.max_inflight", c.max_inflight, "must be >= 1")
    check_key(c.flush_s > 0, "cluster.flush_s", c.flush_s, "must be > 0 (seconds)")
    check_key(c.flush_rows >= 1, "cluster.flush_rows", c.flush_rows, "must be >= 1")
    check_key(c.cpus_per_replica > 0, "cluster.cpus_per_replica", c.cpus_per_replica, "must be > 0")
    check_key(c.gpus_per_replica >= 0, "cluster.gpus_per_replica", c.gpus_per_replica, "must be >= 0")
    check_key(cfg.prompt.shots >= 0, "prompt.shots", cfg.prompt.shots, "must be >= 0")
    if cfg.prompt.shots:
        check_key(bool(d.train_path), "dataset.train_path", d.train_path, f"prompt={cfg.prompt.name} needs exemplars from a train split")
        check_key(d.train_path != d.path, "dataset.train_path", d.train_path, "must not be the evaluated split")
    a = cfg.adaptive
    if a.rules:  # online: jobs.sample stops each problem by its rule
        check_adaptive(a)
        check_key(len(a.rules) == 1, "adaptive", sorted(a.rules), "sampling stops by one rule (jobs.aggregate replays several)")
        check_key(decoding.adaptive, "adaptive", sorted(a.rules), f"does not apply to decoding={cfg.decoding}")
        check_key(a.max_samples is None or a.max_samples <= s.n, "adaptive.max_samples", a.max_samples,
                  f"must be at most sampling.n={s.n}: an adaptive run samples a prefix of the fixed-n run")
        check_key(a.budget is None, "adaptive.budget", a.budget, "is for replay (jobs.aggregate), not for sampling")


def validate_aggregate(cfg: DictConfig) -> None:
    """conf/aggregate.yaml (jobs.aggregate): the answer and adaptive keys."""
    check_answer(cfg.answer, saved_format=True)
    check_adaptive(cfg.adaptive)


def validate_ensemble(cfg: DictConfig) -> None:
    """conf/ensemble.yaml (jobs.ensemble): at least two runs, one weight per run, the answer keys."""
    check_key(len(cfg.run_dirs) >= 2, "run_dirs", list(cfg.run_dirs), "an ensemble needs at least two runs")
    if cfg.weights is not None:
        check_key(len(cfg.weights) == len(cfg.run_dirs), "weights", list(cfg.weights),
               f"one weight per run ({len(cfg.run_dirs)} runs)")
    check_answer(cfg.answer, saved_format=True)


def validate_export(cfg: DictConfig) -> None:
    """conf/export.yaml (jobs.export)."""
    check_key(cfg.export.max_per_problem >= 1, "export.max_per_problem", cfg.export.max_per_problem, "must be >= 1")


def validate_compare(cfg: DictConfig) -> None:
    """conf/compare.yaml (jobs.compare): every method is a registered curve method."""
    from analysis.methods import METHODS  # scipy: imported only by the jobs that aggregate

    unknown = [m for m in cfg.methods if m not in METHODS]
    check_key(not unknown, "methods", list(cfg.methods), f"{unknown} not among {list(METHODS)}")


def validate_ingest(cfg: DictConfig) -> None:
    """conf/ingest.yaml (jobs.ingest): a known format, the answer format, the jsonl field names."""
    from problems.import_formats import FORMATS  # the readers: imported only by the job that ingests

    check_key(cfg.format in FORMATS, "format", cfg.format, f"must be one of {tuple(FORMATS)}")
    check_key(cfg.shard_rows >= 1, "shard_rows", cfg.shard_rows, "must be >= 1")
    check_key(cfg.answer.format in ANSWER_FORMATS, "answer.format", cfg.answer.format, f"must be one of {ANSWER_FORMATS}")
    for key in ("question", "answer", "responses"):
        check_key(bool(cfg.fields[key]), f"fields.{key}", cfg.fields[key], "must name a field")


VALIDATORS: dict[str, Callable[[DictConfig], None]] = {  # config name -> its validator, run by jobs.cli.entry_point
    "config": validate,
    "aggregate": validate_aggregate,
    "ensemble": validate_ensemble,
    "export": validate_export,
    "compact": lambda cfg: None,  # run_dir is checked when it is read
    "compare": validate_compare,
    "ingest": validate_ingest,
}


# answer.format and answer.seed for a run that saved no config (traces written elsewhere); declared here only,
# conf/answer/default.yaml's nulls point at it.
SAVED_ANSWER_FALLBACK = {"format": "auto", "seed": 0}


def saved_answer(given: DictConfig, saved: Optional[dict[str, Any]]) -> dict[str, Any]:
    """answer.* for re-reading a run: each null of format and seed is the run's saved value, so jobs.aggregate
    draws the same curves as the jobs.evaluate that sampled it."""
    kept = (saved or {}).get("answer") or {}
    answer = OmegaConf.to_container(given, resolve=True)
    for key, fallback in SAVED_ANSWER_FALLBACK.items():
        if answer.get(key) is None:
            answer[key] = fallback if kept.get(key) is None else kept[key]
    return answer


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain data with every interpolation resolved."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
