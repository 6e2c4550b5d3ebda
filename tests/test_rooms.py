"""The rooms depend one way: analysis/ imports neither ray, vllm nor mlflow; actors/ nothing of jobs/; a replica
loads no curves; the work types and jobs.sample's plans import without Ray."""

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


def imported_packages(folder: str) -> dict[str, set[str]]:
    """Per module of a folder, the top-level packages its import statements name (wherever they are)."""
    found = {}
    for path in sorted((ROOT / folder).glob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
        found[path.name] = names
    return found


@pytest.mark.parametrize("folder, above", [("analysis", {"actors", "jobs", "ray", "vllm", "mlflow", "hydra"}),
                                           ("actors", {"jobs", "mlflow", "hydra", "omegaconf"})])
def test_no_module_imports_a_room_above_it(folder, above):
    assert {name: names & above for name, names in imported_packages(folder).items() if names & above} == {}


def test_every_analysis_module_imports_with_ray_vllm_and_mlflow_blocked():
    modules = sorted(p.stem for p in (ROOT / "analysis").glob("*.py") if p.stem != "__init__")
    code = "import importlib\n" + "".join(f"importlib.import_module('analysis.{m}')\n" for m in modules) + "print('ok')"
    done = run_python(code, blocked=("ray", "vllm", "mlflow"))
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
    assert {"answers", "curves", "methods", "verify_pool", "traces"} <= set(modules)
    assert "is blocked" in run_python("import ray", blocked=("ray",)).stderr  # the blocker does block


def test_work_types_and_the_sampling_plan_import_without_ray_or_vllm():
    done = run_python("import actors.work, jobs.sample, jobs.cli\nprint('ok')", blocked=("ray", "vllm"))
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_a_replica_loads_no_curves_and_no_scipy():
    done = run_python("import sys, actors.replica\n"
                      "print(sorted(m for m in ('scipy', 'analysis.curves', 'analysis.cot_decoding', 'jobs') if m in sys.modules))")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"
