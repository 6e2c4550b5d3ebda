"""Which Ray a job runs on: its own local Ray by default, a given cluster only when it answers in time.

A `ray start` that was killed leaves its address in <ray temp dir>/ray_current_cluster; the default must
not join it. A given address (cluster.address or RAY_ADDRESS) where nothing listens fails the command
with one line naming the address and the key or variable it came from.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from actors.cluster import ClusterJoinError, connect
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def stale_ray_tmpdir():
    """A short RAY_TMPDIR (Ray's socket paths are length-limited) whose ray_current_cluster names a dead cluster."""
    with tempfile.TemporaryDirectory(prefix="r", dir="/tmp") as root:
        (Path(root) / "ray").mkdir()
        dead = f"127.0.0.1:{free_port()}"
        (Path(root) / "ray" / "ray_current_cluster").write_text(dead)
        yield root, dead


def test_default_starts_its_own_ray_despite_a_stale_current_cluster(stale_ray_tmpdir):
    root, dead = stale_ray_tmpdir
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": root}
    script = ("import ray\nfrom actors.cluster import connect\nconnect(None, 1, {}, 5)\n"
              "print(ray.get_runtime_context().gcs_address, ray.cluster_resources()['CPU'])\nray.shutdown()")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    gcs_address, cpus = done.stdout.split()
    assert gcs_address.rpartition(":")[2] != dead.rpartition(":")[2]  # a Ray of its own, not the dead one
    assert float(cpus) == 1  # with the num_cpus it asked for
    assert any((Path(root) / "ray").glob("session_*")), "the local Ray kept its files under RAY_TMPDIR"


def test_join_where_nothing_listens_names_the_key(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(ClusterJoinError) as error:
        connect(address, None, {}, 1)
    assert str(error.value) == (f"cluster.address={address}: no Ray cluster answers there after 1s "
                                f"(cluster.join_timeout_s); start it, or unset cluster.address to run on a local Ray")


def test_join_where_nothing_listens_names_ray_address(monkeypatch):
    address = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    with pytest.raises(ClusterJoinError, match=rf"^RAY_ADDRESS={address}: no Ray cluster answers there after 1s"):
        connect(None, None, {}, 1)


def test_join_failure_ends_the_command_with_one_line(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    address = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-m", "tests.double_sample", f"run_dir={tmp_path}/run", f"model.path={model}",
                           "tracking=none", "dataset.limit=1", "sampling.n=1", f"cluster.address={address}",
                           "cluster.join_timeout_s=2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: cluster.address={address}: no Ray cluster answers there after 2s "
        f"(cluster.join_timeout_s); start it, or unset cluster.address to run on a local Ray")
