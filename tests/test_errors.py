"""The error convention: the project's own errors end a command with one line, anything else keeps its traceback."""

import subprocess
import sys

import pytest

from analysis.errors import ConfigError
from jobs import cli
from storage.traces import RunDirError


def reported(error: BaseException):
    """What jobs.cli does with `error` raised inside an entry point's task."""

    def task():
        raise error

    return cli._reported(task)()


def test_a_project_error_ends_the_command_with_one_line_and_status_2(capsys):
    with pytest.raises(SystemExit) as done:
        reported(ConfigError("sampling.n=-1: must be >= 1"))
    assert done.value.code == cli.EXIT_USAGE
    assert capsys.readouterr().err == "error: sampling.n=-1: must be >= 1\n"


def test_an_oserror_of_the_project_is_one_line_too(capsys):
    with pytest.raises(SystemExit):
        reported(RunDirError("runs/x: not writable"))
    assert capsys.readouterr().err == "error: runs/x: not writable\n"


@pytest.mark.parametrize("error", [ValueError("bad value deep in a library"),
                                   FileNotFoundError(2, "No such file or directory")])
def test_a_library_error_keeps_its_traceback(capsys, error):
    with pytest.raises(type(error)) as raised:  # raised on, so Python prints its traceback
        reported(error)
    assert raised.value is error and capsys.readouterr().err == ""


def test_the_error_base_imports_without_ray_or_vllm():
    script = ("import sys\nfor name in ('ray', 'vllm'): sys.modules[name] = None\n"
              "from analysis.errors import MarginalError\nprint(MarginalError.__name__)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "MarginalError", done.stderr


def test_an_unreadable_parquet_dataset_is_a_dataset_error_naming_the_file(tmp_path):
    from problems.datasets import DatasetError, load_problems

    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    cfg = cli.compose("dataset=file", f"dataset.path={bad}").dataset
    with pytest.raises(DatasetError, match=rf"^{bad}: not a readable Parquet file \("):
        load_problems(cfg, "test")
