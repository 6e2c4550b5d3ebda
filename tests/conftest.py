"""Shared fixtures: composing the Hydra config as the command line would, and a local Ray for in-process runs."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]


def make_config(*overrides: str) -> DictConfig:
    """The job config for these command-line overrides."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray for the module's in-process runs, shut down after it (4 logical CPUs for small doubles)."""
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
