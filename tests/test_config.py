"""The Hydra config tree: defaults declared once, overrides, and validation that names the key."""

import ast
import dataclasses
import inspect
from pathlib import Path

import hydra
import pytest
import yaml
from hydra.core.utils import JobRuntime
from hydra.errors import ConfigCompositionException
from omegaconf import MISSING
from omegaconf.errors import ConfigKeyError, ValidationError

from analysis.confidence import trace_confidence, trace_score
from analysis.errors import ConfigError
from jobs import config
from jobs.aggregate import aggregate_run, answers_from_traces, greedy_correct
from jobs.cli import compose
from jobs.config import SAVED_ANSWER_FALLBACK, resolved, saved_answer, validate
from jobs.evaluate import greedy_config
from tracking import runinfo

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
ROOMS = ("jobs", "tracking", "problems", "actors", "storage", "analysis")
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


def test_the_greedy_baseline_is_the_run_with_what_sampling_greedy_yaml_changes():
    run = compose("run_dir=/tmp/run", "sampling.n=8", "sampling.temperature=0.5", "sampling.top_p=0.9",
                  "sampling.max_tokens=64", "sampling.seed=3", "adaptive=esc")
    greedy, own = greedy_config(run), yaml_values(CONF / "sampling" / "greedy.yaml")
    assert own and {k: greedy.sampling[k] for k in own} == own  # whatever the run's own values of those keys
    others = [k for k in run.sampling if k not in own]
    assert {k: greedy.sampling[k] for k in others} == {k: run.sampling[k] for k in others}  # the run's own
    assert greedy.run_dir == "/tmp/run/greedy" and greedy.adaptive.rules == {} and run.sampling.n == 8


# Functions that take answer.confidence (or a trace score's method, which it names): conf/answer/default.yaml
# declares its default, so none of them may.
CONFIDENCE_PARAMETERS = [(aggregate_run, "confidence"), (answers_from_traces, "confidence"), (greedy_correct, "confidence"),
                         (trace_score, "method"), (trace_confidence, "method")]


@pytest.mark.parametrize("function, parameter", CONFIDENCE_PARAMETERS, ids=lambda x: getattr(x, "__name__", x))
def test_answer_confidence_has_no_python_default(function, parameter):
    assert inspect.signature(function).parameters[parameter].default is inspect.Parameter.empty


def test_no_function_of_the_rooms_gives_a_confidence_a_default():
    found = []
    for room in ROOMS:
        for path in sorted((ROOT / room).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    args = node.args
                    positional = args.posonlyargs + args.args
                    defaulted = positional[len(positional) - len(args.defaults):] + [
                        a for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
                    found += [f"{room}/{path.name}:{node.name}" for a in defaulted if a.arg == "confidence"]
    assert found == []


def test_only_jobs_cli_finds_conf_so_no_module_reads_its_yaml_by_hand():
    naming = [f"{room}/{path.name}" for room in ROOMS for path in sorted((ROOT / room).glob("*.py"))
              if any(isinstance(node, ast.Constant) and node.value == "conf"
                     for node in ast.walk(ast.parse(path.read_text())))]
    assert naming == ["jobs/cli.py"]


def test_run_names_are_measured_against_the_composed_default_config():
    run = resolved(compose("run_dir=x", "sampling.n=32", "answer.confidence=tail"))
    assert runinfo.run_name(run, resolved(compose())) == "qwen2.5-coder-0.5b-instruct/arith/cot t0.7 n32 conf-tail"
    as_default = resolved(compose("sampling.n=32", "answer.confidence=tail"))  # the defaults come from the caller
    assert runinfo.run_name(run, as_default) == "qwen2.5-coder-0.5b-instruct/arith/cot t0.7"


def test_compose_inside_a_running_job_leaves_its_hydra_as_it_was():
    with hydra.initialize_config_dir(config_dir=str(CONF), job_name="evaluate", version_base="1.3"):
        assert compose("sampling=greedy").sampling.n == 1
        assert JobRuntime.instance().get("name") == "evaluate"
        assert hydra.compose(config_name="config", overrides=["sampling.n=3"]).sampling.n == 3  # the job's Hydra


def test_a_run_without_a_saved_config_reads_with_the_fallback_conf_points_at():
    given = compose("run_dir=x", config_name="aggregate").answer
    fallback = saved_answer(given, None)
    assert {k: fallback[k] for k in SAVED_ANSWER_FALLBACK} == SAVED_ANSWER_FALLBACK
    saved = saved_answer(given, {"answer": {"format": "math", "seed": 7}})
    assert (saved["format"], saved["seed"], saved["confidence"]) == ("math", 7, given.confidence)
    lines = (CONF / "answer" / "default.yaml").read_text().splitlines()
    comments = {line.split(":")[0]: line.split("#", 1)[1] for line in lines if not line.startswith("#")}
    for key, value in SAVED_ANSWER_FALLBACK.items():  # the comment points at the value instead of restating it
        assert "jobs.config.SAVED_ANSWER_FALLBACK" in comments[key] and f"else {value}" not in comments[key]


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
