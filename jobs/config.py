"""Structured configs behind conf/ and the checks that run before any engine starts.

Hydra type-checks every key against these dataclasses (an unknown key or option fails at once);
`validate` then checks ranges and names the offending key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from analysis.errors import MarginalError
from analysis.answers import ANSWER_FORMATS

DECODINGS = ("sample", "cot_decoding")


class ConfigError(MarginalError, ValueError):
    """An invalid config value; the message names the key."""


@dataclass
class ModelConfig:
    name: str = MISSING
    path: str = MISSING  # Hugging Face id, local folder, or embedded://NAME
    dtype: str = "bfloat16"
    max_model_len: int = 2048
    tensor_parallel_size: int = 1


@dataclass
class DatasetConfig:
    name: str = MISSING
    path: Optional[str] = None
    train_path: Optional[str] = None  # where few-shot exemplars come from; never the evaluated split
    question_fields: list[str] = field(default_factory=lambda: ["question"])
    answer_field: str = "answer"
    id_field: Optional[str] = None  # null: "<name>/<row index>"
    gold_pattern: Optional[str] = None  # regex whose group 1 is the gold inside answer_field
    solution_field: Optional[str] = None  # worked solution, for few-shot exemplars
    limit: Optional[int] = None
    answer_format: str = "auto"
    source: Optional[str] = None  # where the public file comes from, named when the file is missing
    size: int = 32  # arith only: problems generated
    steps: int = 3  # arith only: operations per problem
    seed: int = 0  # arith only


@dataclass
class PromptConfig:
    name: str = MISSING
    chat: bool = True
    system: Optional[str] = None
    user: str = "{question}"
    completion: str = "Q: {question}\nA:"
    shots: int = 0  # few-shot exemplars from dataset.train_path
    shots_seed: int = 0


@dataclass
class SamplingConfig:
    n: int = 8
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 256
    seed: int = 0
    logprobs: int = 1
    top_k_branches: int = 10  # cot_decoding: branches on the top-k first tokens


@dataclass
class ClusterConfig:
    name: str = MISSING
    address: Optional[str] = None
    join_timeout_s: float = MISSING
    num_cpus: Optional[int] = None
    cpus_per_replica: float = 1
    gpus_per_replica: float = 0
    unit_size: int = 256
    max_inflight: int = 2
    max_replica_restarts: int = 2
    startup_timeout_s: float = 300
    engine: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "marginal"


CONFIDENCES = ("mean", "lowest_group", "tail", "bottom_percent")


@dataclass
class AnswerConfig:
    format: Optional[str] = "auto"  # jobs.aggregate: null reads it from the run's saved config
    confidence: str = "mean"  # per-sample confidence weighting votes: mean | lowest_group | tail | bottom_percent
    top_percent: Optional[float] = None  # DeepConf filter: also vote with only the top η% most confident of each draw
    audit: int = 0  # print this many random (extracted, gold, verdict) per answer type


@dataclass
class Config:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    prompt: PromptConfig = MISSING
    sampling: SamplingConfig = MISSING
    cluster: ClusterConfig = MISSING
    tracking: TrackingConfig = MISSING
    answer: AnswerConfig = field(default_factory=AnswerConfig)
    run_dir: str = MISSING
    data_dir: str = MISSING  # holds <dataset>/test.jsonl (and train.jsonl): $MARGINAL_DATA_DIR, else the XDG data dir
    replicas: int = 1
    decoding: str = "sample"
    greedy_baseline: bool = True  # jobs.evaluate: also sample the greedy baseline into run_dir/greedy


@dataclass
class AdaptiveConfig:
    rules: dict[str, Any] = field(default_factory=dict)  # rule name -> its parameters (conf/adaptive/<rule>.yaml)
    min_samples: int = 1  # the rule is first asked after this many samples
    max_samples: Optional[int] = None  # the budget per problem; null: sampling.n (in replay: the stored n)
    batch: int = 1  # samples per round: the rule is asked again after this many more
    orders: int = 50  # replay: random orders of each problem's samples (besides the stored order)
    seed: int = 0  # replay: seed of those orders
    budget: Optional[int] = None  # replay: total samples for all problems, to the least decided first (null: off)


@dataclass
class AggregateConfig:
    tracking: TrackingConfig = MISSING
    answer: AnswerConfig = field(default_factory=lambda: AnswerConfig(format=None))
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig)
    run_dir: str = MISSING


@dataclass
class ExportSettings:
    max_per_problem: int = 4  # at most this many right samples per problem (after deduplication)


@dataclass
class ExportConfig:
    run_dir: str = MISSING
    out: Optional[str] = None  # null: <run_dir>/sft
    export: ExportSettings = field(default_factory=ExportSettings)


@dataclass
class EnsembleConfig:
    tracking: TrackingConfig = MISSING
    answer: AnswerConfig = field(default_factory=lambda: AnswerConfig(format=None))
    run_dirs: list[str] = MISSING
    weights: Optional[list[float]] = None  # one vote weight per run; null: equal
    out: str = MISSING
    seed: int = 0


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
ConfigStore.instance().store(name="ingest_schema", node=IngestConfig)
ConfigStore.instance().store(name="aggregate_schema", node=AggregateConfig)
ConfigStore.instance().store(name="export_schema", node=ExportConfig)
ConfigStore.instance().store(name="ensemble_schema", node=EnsembleConfig)


def check_key(ok: bool, key: str, value: Any, rule: str) -> None:
    """Raise ConfigError `key=value: rule` unless `ok`."""
    if not ok:
        raise ConfigError(f"{key}={value!r}: {rule}")


def check_adaptive(a: DictConfig) -> None:
    """Raise ConfigError naming the first adaptive.* key out of range."""
    check_key(a.min_samples >= 1, "adaptive.min_samples", a.min_samples, "must be >= 1")
    check_key(a.max_samples is None or a.max_samples >= 1, "adaptive.max_samples", a.max_samples, "must be >= 1 or null")
    check_key(a.batch >= 1, "adaptive.batch", a.batch, "must be >= 1")
    check_key(a.orders >= 50, "adaptive.orders", a.orders, "must be >= 50")
    check_key(a.budget is None or a.budget >= 1, "adaptive.budget", a.budget, "must be >= 1 or null")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first key whose value is out of range."""
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
    check_key(bool(m.path), "model.path", m.path, "must name a Hugging Face id, a folder or embedded://NAME")
    check_key(cfg.decoding in DECODINGS, "decoding", cfg.decoding, f"must be one of {DECODINGS}")
    check_key(cfg.answer.format in ANSWER_FORMATS, "answer.format", cfg.answer.format, f"must be one of {ANSWER_FORMATS}")
    check_key(cfg.answer.confidence in CONFIDENCES, "answer.confidence", cfg.answer.confidence, f"must be one of {CONFIDENCES}")
    check_top_percent(cfg.answer.top_percent)
    check_audit(cfg.answer.audit)
    if cfg.decoding == "cot_decoding":
        check_key(s.max_tokens >= 2, "sampling.max_tokens", s.max_tokens, "must be >= 2 with decoding=cot_decoding (first token, then the rest)")
    check_key(
        cfg.dataset.answer_format in ANSWER_FORMATS,
        "dataset.answer_format",
        cfg.dataset.answer_format,
        f"must be one of {ANSWER_FORMATS}",
    )
    d = cfg.dataset
    check_key(d.limit is None or d.limit >= 1, "dataset.limit", d.limit, "must be >= 1 or null")
    check_key(d.steps >= 1, "dataset.steps", d.steps, "must be >= 1")
    check_key(d.size >= 1, "dataset.size", d.size, "must be >= 1")
    check_key(c.unit_size >= 1, "cluster.unit_size", c.unit_size, "must be >= 1")
    check_key(c.max_inflight >= 1, "cluster.max_inflight", c.max_inflight, "must be >= 1")
    check_key(c.cpus_per_replica > 0, "cluster.cpus_per_replica", c.cpus_per_replica, "must be > 0")
    check_key(c.gpus_per_replica >= 0, "cluster.gpus_per_replica", c.gpus_per_replica, "must be >= 0")
    check_key(cfg.prompt.shots >= 0, "prompt.shots", cfg.prompt.shots, "must be >= 0")
    if cfg.prompt.shots:
        check_key(bool(d.train_path), "dataset.train_path", d.train_path, f"prompt={cfg.prompt.name} needs exemplars from a train split")
        check_key(d.train_path != d.path, "dataset.train_path", d.train_path, "must not be the evaluated split")


def check_top_percent(top_percent: Optional[float]) -> None:
    """answer.top_percent is null or a percentage in (0, 100]."""
    check_key(top_percent is None or 0 < top_percent <= 100, "answer.top_percent", top_percent, "must be in (0, 100] or null")


def check_audit(audit: int) -> None:
    """answer.audit is a count of answers to print, 0 for none."""
    check_key(audit >= 0, "answer.audit", audit, "must be >= 0 (answers to print per type)")


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain data with every interpolation resolved."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
