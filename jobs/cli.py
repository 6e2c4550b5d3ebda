"""Command-line entry points: a bad config, dataset, model or run_dir ends the command with one line.

    @cli.entry_point("config")
    def main(cfg: DictConfig) -> None: ...

The project's own errors (subclasses of analysis.errors.MarginalError, each naming the key, file or path
at fault) and Hydra's config errors print `error: <message>` on stderr and exit with status 2; anything
else (a bug, or an error deep in a library) keeps its traceback. HYDRA_FULL_ERROR=1 keeps every traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any, Callable

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from analysis.errors import MarginalError
from jobs.config import VALIDATORS  # also registers the structured configs that conf/*.yaml name

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
EXIT_USAGE = 2
FULL_ERRORS = os.environ.get("HYDRA_FULL_ERROR") == "1"  # as the user set it: every error with its traceback
# Bad input or an unusable environment, not a bug: the project's own errors (analysis/errors.py) and Hydra's.
EXPECTED_ERRORS = (MarginalError, HydraException, OmegaConfBaseException)


def one_line(error: BaseException) -> str:
    """The error's message, and its config cause in parentheses, on one line without Hydra's search path."""
    message = _brief(error)
    if isinstance(error.__cause__, OmegaConfBaseException):
        message += f" ({_brief(error.__cause__)})"
    return message


def _brief(error: BaseException) -> str:
    """The message without OmegaConf's full_key/object_type lines or Hydra's config search path."""
    text = str(error).split("\n    full_key:")[0].split("Config search path:")[0]
    return " ".join(text.split())


def compose(*overrides: str, config_name: str = "config") -> DictConfig:
    """The config these command-line overrides give: conf/'s defaults for a running job, or a whole config for
    code that runs a job in-process (tests, benchmarks)."""
    # A running job's Hydra (its job name, which a sweep's later members take, its search path) is put back after.
    running = Singleton.get_state() if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()
    try:
        with hydra.initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return hydra.compose(config_name=config_name, overrides=list(overrides))
    finally:
        if running is not None:
            Singleton.set_state(running)


def entry_point(config_name: str = "config") -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """Decorator: a Hydra main over conf/<config_name>.yaml that first runs the schema's validator
    (jobs.config.VALIDATORS), and whose expected errors end it with one line."""

    def decorate(job: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        hydra_main = hydra.main(config_path=CONF_DIR, config_name=config_name, version_base="1.3")

        @functools.wraps(job)
        def task(cfg: DictConfig) -> Any:
            VALIDATORS[config_name](cfg)
            return job(cfg)

        if FULL_ERRORS:
            return hydra_main(task)
        hydra_task = hydra_main(_reported(task, in_task=True))  # reports the task's errors

        @functools.wraps(task)
        def main() -> Any:
            os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its config errors instead of printing them
            try:
                return _reported(hydra_task)()  # reports Hydra's errors
            finally:
                del os.environ["HYDRA_FULL_ERROR"]

        return main

    return decorate


def _reported(func: Callable[..., Any], in_task: bool = False) -> Callable[..., Any]:
    """`func`, exiting with status 2 and `error: <message>` on an expected error. A sweep member's task
    (`in_task`, multirun) prints the line and raises on instead: Hydra fails that member alone, runs the
    others and closes the sweep's MLflow parent run FAILED, then the command exits 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EXPECTED_ERRORS as error:
            print(f"error: {one_line(error)}", file=sys.stderr)
            if in_task and HydraConfig.get().mode == RunMode.MULTIRUN:
                raise
            sys.exit(EXIT_USAGE)

    return wrapper
