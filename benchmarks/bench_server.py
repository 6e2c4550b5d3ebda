"""marginal through an OpenAI-compatible server against a plain concurrent client of the same server, in one run.

    python -m benchmarks.bench_engine --engine openai model=smollm2_135m
    python -m benchmarks.bench_engine --engine openai --workload long_tail --repeats 2 model=smollm2_135m

It starts vLLM's OpenAI-compatible server (`vllm.entrypoints.openai.api_server`, what `vllm serve` runs) on
127.0.0.1 with the vLLM engine's arguments for this machine, then times, on that one warm server: `client`,
the peer's way (lm-eval's `num_concurrent`, Ray Data's HTTP stage): one asyncio client keeping
`engine.max_concurrency` requests in flight until every sample is back; and `job`, `jobs.sample engine=openai`
with one replica (its Ray actor's start, its seed probe and its shard writes included). Both send the same chat
messages, seeds and parameters, the long-tail workload's lengths forced by vLLM's `min_tokens` and `ignore_eos`.
Tokens are the server's usage counts. With `--repeats R` the pair runs R times in alternating order and the
ratio pools the pairs. The last line reads `ratio <job/client>`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any, Callable

from omegaconf import DictConfig

from actors.engines import ENGINES
from actors.openai_engine import OpenAIEngine, sample_params
from actors.replica import EngineReplica
from actors.work import SamplingSpec


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(cfg: DictConfig, model_path: str, port: int) -> list[str]:
    """The api_server's command line: the vLLM engine's arguments of `cfg` (engine=vllm), dtype resolved here."""
    from actors.precision import resolved_engine_kwargs
    from actors.vllm_engine import engine_args
    from jobs.config import resolved

    args = resolved_engine_kwargs(engine_args(resolved(cfg)))[0]
    flags = []
    for key, value in args.items():
        flag = "--" + key.replace("_", "-")
        flags += [flag] if value is True else [] if value is False else [flag, str(value)]
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path,
            "--served-model-name", cfg.model.name, "--host", "127.0.0.1", "--port", str(port), *flags]


def wait_until_up(url: str, server: subprocess.Popen, timeout_s: float = 600) -> None:
    """Return once the server's /health answers; fail if it exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f}s")


async def plain_client(base_url: str, model: str, requests: list[Any], spec: SamplingSpec, concurrency: int,
                       params_of: Callable[[SamplingSpec, int], dict[str, Any]]) -> dict[str, Any]:
    """Every request through the chat API, `concurrency` in flight; its tokens (usage) and wall time."""
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="none", timeout=3600, max_retries=0)
    slots = asyncio.Semaphore(concurrency)

    async def one(request: Any) -> tuple[str, int]:
        async with slots:
            reply = await client.chat.completions.create(model=model, messages=request.prompt,
                                                         **params_of(spec, request.seed))
        return reply.choices[0].message.content or "", reply.usage.completion_tokens

    start = time.monotonic()
    replies = await asyncio.gather(*(one(r) for r in requests))
    wall = time.monotonic() - start
    await client.close()
    return {"wall_s": wall, "tokens": sum(t for _, t in replies),
            "texts": {(r.problem_id, r.sample_idx): text for r, (text, _) in zip(requests, replies)}}


def run_client(cfg: DictConfig, base_url: str, params_of: Callable) -> dict[str, Any]:
    """The plain client's side."""
    from benchmarks.bench_engine import planned_requests
    from jobs.sample import sampling_spec

    return asyncio.run(plain_client(base_url, cfg.model.name, planned_requests(cfg), sampling_spec(cfg),
                                    cfg.engine.max_concurrency, params_of))


def run_job(cfg: DictConfig, replica_class: type) -> dict[str, Any]:
    """jobs.sample engine=openai with one replica, on a local Ray started for it."""
    from benchmarks.bench_engine import run_job_on_ray

    return run_job_on_ray(cfg, replica_class)


def compare(overrides: list[str], problems: int, samples: int, max_tokens: int, repeats: int, long_tail: bool) -> None:
    """Start the server, time both sides `repeats` times in alternating order, print the ratio."""
    from actors.embedded_model import check_model, resolve_model_path
    from benchmarks.bench_engine import forced_length, pooled_rate
    from jobs.cli import compose

    shape = [f"dataset.limit={problems}", f"sampling.n={samples}", f"sampling.max_tokens={max_tokens}", "replicas=1",
             "tracking=none", *overrides]
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    server_cfg = compose(*shape)  # engine=vllm: the server's engine arguments
    model_path = check_model(resolve_model_path(server_cfg.model.path))

    def forced(spec: SamplingSpec, seed: int) -> dict[str, Any]:
        length = min(spec.max_tokens, forced_length(seed))
        return {**sample_params(spec, seed), "max_tokens": length,
                "extra_body": {"min_tokens": length, "ignore_eos": True}}

    params_of = forced if long_tail else sample_params
    replica = type("ForcedReplica", (EngineReplica,), {"engines": {
        **ENGINES, "openai": type("ForcedEngine", (OpenAIEngine,), {"params": staticmethod(params_of)})}})
    env = {**os.environ, **server_cfg.cluster.env}
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp, open(f"{tmp}/server.log", "w") as log:
        server = subprocess.Popen(server_command(server_cfg, model_path, port), stdout=log, stderr=subprocess.STDOUT,
                                  env=env, start_new_session=True)
        try:
            wait_until_up(f"http://127.0.0.1:{port}/health", server)
            runs: dict[str, list[dict[str, Any]]] = {"client": [], "job": []}
            for i in range(repeats):
                cfg = compose(*shape, "engine=openai", f"engine.base_url={base_url}", f"run_dir={tmp}/run{i}")
                sides = {"client": lambda: run_client(cfg, base_url, params_of), "job": lambda: run_job(cfg, replica)}
                for side in ("client", "job") if i % 2 == 0 else ("job", "client"):
                    runs[side].append(sides[side]() | {"load_average": os.getloadavg()[0]})
        finally:
            server.terminate()
            server.wait(timeout=60)
    count = len(runs["client"][0]["texts"])
    print(f"workload {'long_tail' if long_tail else 'default'}: {problems} problems x {samples} samples, max_tokens "
          f"{max_tokens}, {runs['client'][0]['tokens'] / count:.0f} tokens per sample; model {cfg.model.name}; "
          f"engine.max_concurrency {cfg.engine.max_concurrency}, unit_size {cfg.cluster.unit_size}, max_inflight "
          f"{cfg.cluster.max_inflight}; server {' '.join(server_command(server_cfg, '<model>', port)[3:])}")
    for i, (client, job) in enumerate(zip(runs["client"], runs["job"])):
        same = sum(client["texts"][k] == job["texts"].get(k) for k in client["texts"])
        print(f"pair {i + 1} ({'client' if i % 2 == 0 else 'job'} first; load after client, job: "
              f"{client['load_average']:.1f}, {job['load_average']:.1f}): client {client['tokens']} tokens in "
              f"{client['wall_s']:.1f}s = {client['tokens'] / client['wall_s']:.1f} tok/s; job {job['tokens']} tokens "
              f"in {job['wall_s']:.1f}s (replica start {job['start_s']:.1f}s) = {job['tokens'] / job['wall_s']:.1f} "
              f"tok/s; ratio {job['tokens'] / job['wall_s'] / (client['tokens'] / client['wall_s']):.3f}; "
              f"identical texts {same}/{len(client['texts'])}")
    print(f"ratio {pooled_rate(runs['job']) / pooled_rate(runs['client']):.3f}  [job/client through the server; "
          f"target >= 0.95]")
