"""The Hydra config tree: defaults declared once, overrides, and validation that names the key."""

import dataclasses
from pathlib import Path

import pytest
import yaml
from hydra.errors import ConfigCompositionException
from omegaconf import MISSING
from omegaconf.errors import ConfigKeyError, ValidationError

from analysis.errors import ConfigError
from jobs import config
from jobs.cli import compose
from jobs.config import resolved, validate

CONF = Path(__file__).resolve().parents[1] / "conf"
# conf/<group>/ -> its schema; conf/<name>.yaml -> the schema its defaults list names
GROUPS = {"model": config.ModelConfig, "dataset": config.DatasetConfig, "prompt": config.PromptConfig,
          "sampling": config.SamplingConfig, "cluster": config.ClusterConfig, "tracking": config.TrackingConfig,
          "answer": config.AnswerConfig, "adaptive": config.AdaptiveConfig}
JOBS = {"config": config.Config, "aggregate": config.AggregateConfig, "export": config.ExportConfig,
        "ensemble": config.EnsembleConfig, "compare": config.CompareConfig}


def declared(schema: type) -> dict[str, object]:
    """A schema's field defaults (MISSING where a YAML must set it); a nested schema as its own dict."""
    out = {}
    for f in dataclasses.fields(schema):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        out[f.name] = declared(f.type) if dataclasses.is_dataclass(default) else default
    return out


def yaml_values(path: Path) -> dict[str, object]:
    """What a YAML sets, without its defaults list."""
    values = yaml.safe_load(path.read_text()) or {}
    values.pop("defaults", None)
    values.pop("hydra", None)
    return values


def repeats(values: dict, defaults: dict, prefix: str = "") -> list[str]:
    """Keys a YAML sets to the schema's own default: the same default declared twice."""
    out = []
    for key, value in values.items():
        default = defaults.get(key, MISSING)
        if isinstance(value, dict) and isinstance(default, dict):
            out += repeats(value, default, f"{prefix}{key}.")
        elif default is not MISSING and not isinstance(default, dict) and value == default:
            out.append(f"{prefix}{key}")
    return out


def test_no_yaml_repeats_a_default_of_its_schema():
    found = {}
    for group, schema in GROUPS.items():
        for path in sorted((CONF / group).glob("*.yaml")):
            found[str(path.relative_to(CONF))] = repeats(yaml_values(path), declared(schema))
    for name, schema in JOBS.items():
        found[f"{name}.yaml"] = repeats(yaml_values(CONF / f"{name}.yaml"), declared(schema))
    assert {path: keys for path, keys in found.items() if keys} == {}


def test_no_schema_default_is_overridden_by_every_option_of_its_group():
    """A default every option replaces is never used: it would only mislead (sampling.n was 8 here, 16 in YAML)."""
    dead = []
    for group, schema in GROUPS.items():
        options = [yaml_values(path) for path in (CONF / group).glob("*.yaml")]
        for key, default in declared(schema).items():
            if default is not MISSING and options and all(key in option for option in options):
                dead.append(f"{group}.{key}")
    assert dead == []


@pytest.mark.parametrize("group", ["model", "dataset", "prompt", "sampling", "cluster", "tracking"])
def test_every_option_of_a_group_sets_every_key_its_schema_leaves_missing(group):
    for path in sorted((CONF / group).glob("*.yaml")):
        overrides = [f"{group}={path.stem}"] + (["dataset.path=x.jsonl"] if path.stem == "file" else [])
        assert resolved(compose(*overrides))[group], path  # throw_on_missing: a MISSING key left unset fails here


def test_the_greedy_baseline_extends_the_default_sampling():
    default, greedy = compose().sampling, compose("sampling=greedy").sampling
    assert (greedy.n, greedy.temperature, greedy.top_p) == (1, 0.0, 1.0)
    assert {k: greedy[k] for k in ("max_tokens", "seed", "logprobs", "top_k_branches")} == \
        {k: default[k] for k in ("max_tokens", "seed", "logprobs", "top_k_branches")}


def test_defaults_are_the_embedded_laptop_run():
    cfg = compose()
    validate(cfg)
    assert cfg.model.path == "embedded://qwen2.5-coder-0.5b-instruct"
    assert cfg.dataset.name == "arith" and cfg.prompt.name == "cot" and cfg.cluster.name == "local"
    assert cfg.replicas == 1 and cfg.decoding == "sample"
    assert cfg.tracking.uri.startswith("sqlite:///")
    assert cfg.run_dir.startswith("runs/qwen2.5-coder-0.5b-instruct/arith/cot-sample-t0.7")


def test_user_interface_keys_override():
    cfg = compose("run_dir=/tmp/x", "dataset=gsm8k", "dataset.limit=5", "model.path=/models/m", "prompt=direct",
               "sampling.n=16", "sampling.temperature=1.0", "sampling.top_p=0.9", "sampling.max_tokens=64",
               "sampling.seed=3", "sampling.logprobs=5", "replicas=2", "tracking.uri=http://127.0.0.1:5000")
    validate(cfg)
    assert (cfg.run_dir, cfg.dataset.limit, cfg.model.path, cfg.prompt.name) == ("/tmp/x", 5, "/models/m", "direct")
    assert (cfg.sampling.n, cfg.sampling.temperature, cfg.sampling.top_p) == (16, 1.0, 0.9)
    assert (cfg.sampling.max_tokens, cfg.sampling.seed, cfg.sampling.logprobs, cfg.replicas) == (64, 3, 5, 2)
    assert cfg.dataset.path.endswith("gsm8k/test.jsonl")


def test_cluster_config_is_one_override():
    cfg = compose("cluster=gpu", "model=qwen2_5_math_1_5b")
    validate(cfg)
    assert cfg.cluster.gpus_per_replica == 1 and cfg.model.path == "Qwen/Qwen2.5-Math-1.5B-Instruct"
    for cluster, engine_batch in ((cfg.cluster, 1024), (compose().cluster, 256)):  # vLLM's max_num_seqs there
        assert cluster.unit_size * cluster.max_inflight >= 2 * engine_batch  # the engine's queue refills its batch


@pytest.mark.parametrize(
    "override, key",
    [
        ("sampling.n=0", "sampling.n"),
        ("sampling.temperature=-0.1", "sampling.temperature"),
        ("sampling.top_p=0", "sampling.top_p"),
        ("sampling.top_p=1.01", "sampling.top_p"),
        ("sampling.max_tokens=2048", "sampling.max_tokens"),
        ("replicas=0", "replicas"),
        ("decoding=beam", "decoding"),
        ("answer.format=latex", "answer.format"),
        ("dataset.limit=0", "dataset.limit"),
        ("sampling.logprobs=-1", "sampling.logprobs"),
    ],
)
def test_out_of_range_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=rf"^{key}="):
        validate(compose(override))


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("prompt=nonexistent", "prompt/nonexistent"),
        ("model=nonexistent", "model/nonexistent"),
        ("sampling.bogus=1", "bogus"),
        ("sampling.n=many", "sampling.n"),
    ],
)
def test_unknown_names_and_types_fail_at_composition(override, fragment):
    with pytest.raises((ConfigCompositionException, ConfigKeyError, ValidationError)) as error:
        compose(override)
    assert fragment in str(error.value) + str(error.value.__cause__)
