"""The Hydra config tree: defaults, overrides, and validation that names the key."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from jobs.config import ConfigError, validate

CONF = str(Path(__file__).resolve().parents[1] / "conf")
ROOT = Path(__file__).resolve().parents[1]


def make(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_defaults_are_the_embedded_laptop_run():
    cfg = make()
    validate(cfg)
    assert cfg.model.path == "embedded://qwen2.5-coder-0.5b-instruct"
    assert cfg.dataset.name == "arith" and cfg.prompt.name == "cot" and cfg.cluster.name == "local"
    assert cfg.replicas == 1 and cfg.decoding == "sample"
    assert cfg.tracking.uri.startswith("sqlite:///")
    assert cfg.run_dir.startswith("runs/qwen2.5-coder-0.5b-instruct/arith/cot-sample-t0.7")


def test_user_interface_keys_override():
    cfg = make("run_dir=/tmp/x", "dataset=gsm8k", "dataset.limit=5", "model.path=/models/m", "prompt=direct",
               "sampling.n=16", "sampling.temperature=1.0", "sampling.top_p=0.9", "sampling.max_tokens=64",
               "sampling.seed=3", "sampling.logprobs=5", "replicas=2", "tracking.uri=http://127.0.0.1:5000")
    validate(cfg)
    assert (cfg.run_dir, cfg.dataset.limit, cfg.model.path, cfg.prompt.name) == ("/tmp/x", 5, "/models/m", "direct")
    assert (cfg.sampling.n, cfg.sampling.temperature, cfg.sampling.top_p) == (16, 1.0, 0.9)
    assert (cfg.sampling.max_tokens, cfg.sampling.seed, cfg.sampling.logprobs, cfg.replicas) == (64, 3, 5, 2)
    assert cfg.dataset.path.endswith("gsm8k/test.jsonl")


def test_greedy_baseline_is_one_override():
    cfg = make("sampling=greedy")
    assert (cfg.sampling.n, cfg.sampling.temperature) == (1, 0.0)


def test_cluster_config_is_one_override():
    cfg = make("cluster=gpu", "model=qwen2_5_math_1_5b")
    validate(cfg)
    assert cfg.cluster.gpus_per_replica == 1 and cfg.model.path == "Qwen/Qwen2.5-Math-1.5B-Instruct"
    assert cfg.cluster.unit_size == 1024 and make().cluster.unit_size == 256  # each at least its engine's batch


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
        validate(make(override))


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
        make(override)
    assert fragment in str(error.value) + str(error.value.__cause__)


def test_invalid_value_fails_fast_from_the_command_line(tmp_path):
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "jobs.sample", "sampling.top_p=2", f"run_dir={tmp_path}/run"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    assert "sampling.top_p=2" in result.stderr
    assert not (tmp_path / "run").exists()  # nothing started, nothing written
    print(f"rejected in {elapsed:.2f}s")
