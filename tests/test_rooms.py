"""The rooms depend one way, top floor to bottom: jobs, tracking, problems, actors, storage, analysis. analysis/
imports neither ray, vllm nor mlflow and touches no file but its plots; a replica loads no curves; the work types
and jobs.sample's plans import without Ray or matplotlib."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKER = """
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is blocked")
sys.meta_path.insert(0, Blocked())
"""


def run_python(code: str, blocked: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`python -c code` from the project folder, with the top-level packages `blocked` unimportable."""
    script = BLOCKER.format(blocked=set(blocked)) + code
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)


def imported_packages(folder: str, whole: bool = False) -> dict[str, set[str]]:
    """Per module of a folder, the top-level packages its import statements name (wherever they are); with
    `whole`, the modules' full dotted names."""
    found = {}
    for path in sorted((ROOT / folder).glob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name if whole else alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module if whole else node.module.split(".")[0])
        found[path.name] = names
    return found


# The rooms, top floor first: a module imports only rooms on its own floor or below, and none of the packages
# its room must not know.
FLOORS = ["jobs", "tracking", "problems", "actors", "storage", "analysis"]
FORBIDDEN = {
    "tracking": {"ray", "vllm"},
    "problems": {"ray", "vllm", "mlflow", "hydra"},
    "actors": {"mlflow", "hydra", "omegaconf"},
    "storage": {"ray", "vllm", "mlflow", "hydra", "omegaconf"},
    "analysis": {"ray", "vllm", "mlflow", "hydra", "omegaconf"},
}
IO_MODULES = {"pyarrow.parquet", "pyarrow.dataset", "pyarrow.fs", "pyarrow.csv"}  # files: storage's, not analysis'


@pytest.mark.parametrize("folder", FLOORS[1:])
def test_no_module_imports_a_room_above_it_or_a_package_its_room_must_not_know(folder):
    above = set(FLOORS[: FLOORS.index(folder)]) | FORBIDDEN[folder]
    assert {name: names & above for name, names in imported_packages(folder).items() if names & above} == {}


def test_the_checked_floors_are_every_package_of_the_project():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "benchmarks"}
    assert packages == set(FLOORS)


def test_analysis_reads_and_writes_no_file_but_its_plots():
    found = {name: names & IO_MODULES for name, names in imported_packages("analysis", whole=True).items()}
    assert {name: names for name, names in found.items() if names} == {}
    opened = [p.name for p in (ROOT / "analysis").glob("*.py") if p.name != "plots.py" and
              any(isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", "")) in
                  {"open", "savefig", "write_text", "read_text", "write_bytes", "read_bytes"}
                  for n in ast.walk(ast.parse(p.read_text())))]
    assert opened == []


def test_jobs_holds_only_entry_points_and_the_cli_glue():
    modules = {p.stem: p.read_text() for p in (ROOT / "jobs").glob("*.py") if p.stem != "__init__"}
    assert {name for name, text in modules.items() if 'if __name__ == "__main__"' not in text} == {"cli", "config"}


def test_every_analysis_module_imports_with_ray_vllm_and_mlflow_blocked():
    modules = sorted(p.stem for p in (ROOT / "analysis").glob("*.py") if p.stem != "__init__")
    code = "import importlib\n" + "".join(f"importlib.import_module('analysis.{m}')\n" for m in modules) + "print('ok')"
    done = run_python(code, blocked=("ray", "vllm", "mlflow"))
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
    assert {"answers", "curves", "methods", "verify_pool", "stopping"} <= set(modules)
    assert "is blocked" in run_python("import ray", blocked=("ray",)).stderr  # the blocker does block


def test_work_types_and_the_sampling_plan_import_without_ray_or_vllm_and_load_no_plotting():
    done = run_python("import sys, actors.work, jobs.sample, jobs.cli\nprint('matplotlib' in sys.modules)",
                      blocked=("ray", "vllm"))
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-3000:]


def test_a_replica_loads_no_curves_and_no_scipy():
    done = run_python("import sys, actors.replica\n"
                      "print(sorted(m for m in ('scipy', 'analysis.curves', 'analysis.cot_decoding', 'jobs') if m in sys.modules))")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"
