"""Command-line entry points: a bad config, dataset, model or run_dir ends the command with one line.

    @cli.clean_errors
    @hydra.main(config_path="../conf", config_name="config", version_base="1.3")
    def main(cfg): ...

The project's own errors and Hydra's config errors print `error: <message>` on stderr and exit with
status 2; anything else (a bug) keeps its traceback. HYDRA_FULL_ERROR=1 keeps every traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

EXIT_USAGE = 2
# (module, class): the project's error types. A module not imported yet cannot have raised its error,
# so they are looked up lazily and the entry point does not import Ray just to report a bad option.
PROJECT_ERRORS = (
    ("actors.cluster", "ModelNotFoundError"),
    ("actors.pool", "ReplicaStartError"),
    ("analysis.traces", "RunDirError"),
)


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input or an unusable environment, not a bug (ValueError covers ConfigError, DatasetError)."""
    loaded = tuple(getattr(sys.modules[module], name) for module, name in PROJECT_ERRORS if module in sys.modules)
    return (ValueError, HydraException, OmegaConfBaseException, *loaded)


def one_line(error: BaseException) -> str:
    """The error's message and its config cause on one line, without OmegaConf's indented details."""
    parts = [str(error)]
    if isinstance(error.__cause__, OmegaConfBaseException):
        parts.append(str(error.__cause__))
    lines = [line.strip() for part in parts for line in part.splitlines() if line.strip() and not line[0].isspace()]
    return " ".join(dict.fromkeys(lines))


def clean_errors(main: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a (Hydra) entry point so expected errors exit with status 2 and `error: <message>`."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            return main(*args, **kwargs)
        os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors instead of printing them
        try:
            return main(*args, **kwargs)
        except Exception as error:
            if not isinstance(error, expected_errors()):
                raise
            print(f"error: {one_line(error)}", file=sys.stderr)
            sys.exit(EXIT_USAGE)
        finally:
            del os.environ["HYDRA_FULL_ERROR"]

    return wrapper
