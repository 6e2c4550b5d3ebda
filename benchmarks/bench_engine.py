"""The job against the raw engine, side by side in one run on this machine.

    python -m benchmarks.bench_engine                       # the default job's shape: 24 problems x 16, max_tokens 192
    python -m benchmarks.bench_engine --workload long_tail model=smollm2_135m cluster.unit_size=96
    python -m benchmarks.bench_engine --workload gsm8k      # the default model's natural lengths, max_tokens 1024
    python -m benchmarks.bench_engine --repeats 2           # direct, job, then job, direct: cancels the machine's drift
    python -m benchmarks.bench_engine --engine openai       # through vLLM's OpenAI server (benchmarks/bench_server.py)

Workloads: `default` (the prompts and settings of the run, samples end where the model stops);
`long_tail` (every sample's length forced, from its seed, to a lognormal draw of mean about 103 and at
most 512 tokens, with `min_tokens = max_tokens` and `ignore_eos`: most samples stop early, a few run
long, as reasoning traces do); `gsm8k` (GSM8K test problems, max_tokens 1024, natural lengths).

`direct`: one `vllm.LLM` in a fresh process of its own (as the replica has), one `LLM.generate` call over
every sample: the physical limit for one replica. The process ends before the job starts, so nothing it
loaded (an engine, its KV cache, its threads) stays to slow the job down. `job`:
`jobs.sample.sample_runs` with one replica (Ray already started). Both get the same token prompts, the
same per-sample seeds and SamplingParams, the same engine arguments and environment, and both start
cold: each timing runs from importing vLLM (the replica imports it in its actor) to the last sample
(the job's also covers starting the actor, dispatch and shard writes).
Tokens/s are generated tokens over those times; the ratio is job/direct. Both report the engine's mean
running batch (sequences per step, weighted by the step's time), and the job's time after its replica
was ready is set against the direct generate call alone (the engines' speed, without their start).
With `--repeats R` the pair runs R times, the order alternating (direct first, then job first), and the ratio
pools the pairs (tokens over seconds summed on each side): a machine whose speed drifts over minutes favours
neither side. The local Ray runs only during the job's runs. Extra arguments are Hydra overrides for both. The
last line reads `ratio <job/direct>`.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import random
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from omegaconf import DictConfig

from actors.engines import ENGINES
from actors.replica import EngineReplica
from actors.vllm_engine import VllmEngine, sampling_params
from actors.work import SamplingSpec

LONG_TAIL_MU, LONG_TAIL_SIGMA, LONG_TAIL_CAP = math.log(103) - 0.5, 1.0, 512  # lognormal: mean 103 before the cap
WORKLOADS = {  # name -> (problems, samples, max_tokens, Hydra overrides)
    "default": (24, 16, 192, []),
    "long_tail": (24, 16, LONG_TAIL_CAP, []),
    "gsm8k": (24, 16, 1024, ["dataset=gsm8k", "prompt=cot"]),
}


def forced_length(seed: int) -> int:
    """A long-tail sample length drawn from the sample's seed."""
    return max(1, min(LONG_TAIL_CAP, round(random.Random(seed).lognormvariate(LONG_TAIL_MU, LONG_TAIL_SIGMA))))


def forced_params(spec: SamplingSpec, seed: int, max_tokens: int):
    """The sample's parameters, its length forced to `forced_length(seed)`."""
    params = sampling_params(spec, seed, min(max_tokens, forced_length(seed)))
    params.min_tokens, params.ignore_eos = params.max_tokens, True
    return params


class LongTailEngine(VllmEngine):
    """The vLLM engine, each sample's length forced as `forced_params` says."""

    params = staticmethod(forced_params)


class LongTailReplica(EngineReplica):
    """The replica, with the long-tail engine."""

    engines = {**ENGINES, "vllm": LongTailEngine}


def metered(llm: Any) -> dict[str, float]:
    """Wrap the engine's step to integrate its running batch over time, as the replica's engine loop does."""
    engine, step, meter = llm.llm_engine, llm.llm_engine.step, {"busy_s": 0.0, "batch_s": 0.0}
    max_batch = engine.vllm_config.scheduler_config.max_num_seqs

    def timed_step():
        running, start = min(engine.get_num_unfinished_requests(), max_batch), time.perf_counter()
        outputs = step()
        took = time.perf_counter() - start
        meter["busy_s"] += took
        meter["batch_s"] += running * took
        return outputs

    engine.step = timed_step
    return meter


def planned_requests(cfg: DictConfig) -> list[Any]:
    """Every request of the run, with the seeds the job derives."""
    from jobs.sample import plan_units, prepare_problems

    problems, prompts = prepare_problems(cfg)
    units = plan_units(problems, prompts, cfg.sampling.n, cfg.sampling.seed, cfg.sampling.n * len(problems), {})
    return [request for unit in units for request in unit.requests]


def run_direct(cfg: DictConfig, model_path: str, spec: SamplingSpec, params_of=sampling_params) -> dict[str, Any]:
    """Import vLLM, load vllm.LLM here and generate every sample in one call."""
    from actors.precision import resolved_engine_kwargs
    from actors.vllm_engine import engine_args
    from jobs.config import resolved

    assert "vllm" not in sys.modules, "vLLM must be imported inside the timing, as the replica does"
    start = time.monotonic()
    from vllm import LLM
    from vllm.inputs import TokensPrompt

    llm = LLM(model=model_path, **resolved_engine_kwargs(engine_args(resolved(cfg)))[0])
    meter = metered(llm)
    loaded = time.monotonic()
    tokenizer = llm.get_tokenizer()
    requests = planned_requests(cfg)
    prompts = []
    for request in requests:  # the replica's tokenization: chat template, then no extra special tokens
        text = tokenizer.apply_chat_template(request.prompt, tokenize=False, add_generation_prompt=True)
        prompts.append(TokensPrompt(prompt_token_ids=tokenizer.encode(text, add_special_tokens=False)))
    params = [params_of(spec, r.seed, spec.max_tokens) for r in requests]
    began = time.monotonic()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    done = time.monotonic()
    texts = {(r.problem_id, r.sample_idx): o.outputs[0].text for r, o in zip(requests, outputs)}
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    capped = sum(len(o.outputs[0].token_ids) >= spec.max_tokens for o in outputs)
    return {"load_s": loaded - start, "generate_s": done - began, "wall_s": done - start, "tokens": tokens,
            "texts": texts, "batch": meter["batch_s"] / meter["busy_s"], "capped": capped}


def run_direct_apart(*args: Any) -> dict[str, Any]:
    """`run_direct(*args)` in a new process (spawned: no vLLM imported), gone once it returns."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as apart:
        return apart.submit(run_direct, *args).result()


def run_job(cfg: DictConfig, replica_class: type = EngineReplica) -> dict[str, Any]:
    """jobs.sample with one replica, on a Ray started beforehand."""
    from storage.traces import read_columns
    from benchmarks.bench_scale import timing_replica_starts
    from jobs.sample import sample_runs

    replica_starts = timing_replica_starts()
    start = time.monotonic()
    [summary] = sample_runs([cfg], replica_class=replica_class)
    wall = time.monotonic() - start
    table = read_columns(cfg.run_dir, ["problem_id", "sample_idx", "text"])
    texts = {(p, i): t for p, i, t in zip(*(table[c].to_pylist() for c in ("problem_id", "sample_idx", "text")))}
    return {"wall_s": wall, "start_s": replica_starts[0], "write_s": summary.write_seconds, "tokens": summary.tokens,
            "texts": texts, "batch": summary.engine_batch}


def run_job_on_ray(cfg: DictConfig, replica_class: type) -> dict[str, Any]:
    """`run_job` on a local Ray started for it and stopped after it, so that no Ray runs beside the direct engine."""
    import ray

    ray.init(num_cpus=cfg.cluster.num_cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": dict(cfg.cluster.env)})
    try:
        return run_job(cfg, replica_class)
    finally:
        ray.shutdown()


def report(direct: dict[str, Any], job: dict[str, Any]) -> float:
    """Print one pair's lines; return its ratio job/direct (tokens per second, each from its own start)."""
    same = sum(direct["texts"][k] == job["texts"].get(k) for k in direct["texts"])
    rate = {name: r["tokens"] / r["wall_s"] for name, r in (("direct", direct), ("job", job))}
    print(f"direct LLM.generate: {direct['tokens']} tokens in {direct['wall_s']:.1f}s (import + load {direct['load_s']:.1f}s, "
          f"generate {direct['generate_s']:.1f}s): {rate['direct']:.1f} tok/s, engine batch {direct['batch']:.1f}")
    print(f"jobs.sample, 1 replica: {job['tokens']} tokens in {job['wall_s']:.1f}s (replica start {job['start_s']:.1f}s, "
          f"then {job['wall_s'] - job['start_s']:.1f}s, writing {job['write_s']:.2f}s of it): {rate['job']:.1f} tok/s, "
          f"engine batch {job['batch']:.1f}")
    print(f"identical texts: {same}/{len(direct['texts'])} (not expected to be all: bf16 numerics depend on the batch)")
    print(f"after the engine is loaded: {(job['wall_s'] - job['start_s']) / direct['generate_s']:.3f} of the direct time "
          f"[job after its replica started / direct generate]")
    return rate["job"] / rate["direct"]


def pooled_rate(runs: list[dict[str, Any]]) -> float:
    """Tokens over seconds, summed over the runs of one side."""
    return sum(r["tokens"] for r in runs) / sum(r["wall_s"] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=WORKLOADS, default="default")
    parser.add_argument("--engine", choices=("vllm", "openai"), default="vllm",
                        help="openai: the job through vLLM's OpenAI-compatible server against a plain concurrent "
                             "client of it (benchmarks/bench_server.py)")
    parser.add_argument("--problems", type=int, help="default: the workload's")
    parser.add_argument("--samples", type=int, help="default: the workload's")
    parser.add_argument("--max-tokens", type=int, help="default: the workload's")
    parser.add_argument("--repeats", type=int, default=1,
                        help="pairs of runs, in alternating order (direct then job, job then direct, ...)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both sides")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: at least 1 pair is needed")
    problems, samples, max_tokens, workload_overrides = WORKLOADS[args.workload]
    problems, samples, max_tokens = args.problems or problems, args.samples or samples, args.max_tokens or max_tokens
    long_tail = args.workload == "long_tail"
    if args.engine == "openai":
        from benchmarks.bench_server import compare

        compare([*workload_overrides, *args.overrides], problems, samples, max_tokens, args.repeats, long_tail)
        return

    from actors.embedded_model import check_model, resolve_model_path
    from jobs.cli import compose
    from jobs.sample import sampling_spec

    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        cfgs = [compose(f"run_dir={tmp}/run{i}", "tracking=none", f"dataset.limit={problems}", f"sampling.n={samples}",
                        f"sampling.max_tokens={max_tokens}", "replicas=1", *workload_overrides, *args.overrides)
                for i in range(args.repeats)]
        cfg = cfgs[0]
        os.environ.update(cfg.cluster.env)  # the replica's environment, for the direct engine too,
        os.environ.setdefault("OMP_NUM_THREADS", f"{cfg.cluster.cpus_per_replica:g}")  # with the threads Ray gives it
        model_path = check_model(resolve_model_path(cfg.model.path))
        s = cfg.sampling
        sides = {
            "direct": lambda c: run_direct_apart(c, model_path, sampling_spec(c), forced_params if long_tail else sampling_params),
            "job": lambda c: run_job_on_ray(c, LongTailReplica if long_tail else EngineReplica),
        }
        runs: dict[str, list[dict[str, Any]]] = {"direct": [], "job": []}
        for i, run_cfg in enumerate(cfgs):
            for side in ("direct", "job") if i % 2 == 0 else ("job", "direct"):
                runs[side].append(sides[side](run_cfg) | {"load_average": os.getloadavg()[0]})
    direct = runs["direct"][0]
    count = len(direct["texts"])
    print(f"workload {args.workload}: {problems} problems x {samples} samples, max_tokens {max_tokens} "
          f"({direct['capped']} of {count} samples at their cap), {direct['tokens'] / count:.0f} tokens per sample; "
          f"model {cfg.model.name}, unit_size {cfg.cluster.unit_size}, max_inflight {cfg.cluster.max_inflight}, "
          f"T={s.temperature}, top_p={s.top_p}, logprobs={s.logprobs}")
    ratios = []
    for i, pair in enumerate(zip(runs["direct"], runs["job"])):
        order = "direct first" if i % 2 == 0 else "job first"
        print(f"pair {i + 1} of {args.repeats} ({order}; load average after direct, after job: "
              f"{pair[0]['load_average']:.1f}, {pair[1]['load_average']:.1f})")
        ratios.append(report(*pair))
        print(f"pair {i + 1} ratio {ratios[-1]:.3f}")
    if args.repeats > 1:
        print(f"pair ratios: {', '.join(f'{r:.3f}' for r in ratios)}; pooled over the pairs "
              f"(tokens over seconds summed on each side): {pooled_rate(runs['direct']):.1f} tok/s direct, "
              f"{pooled_rate(runs['job']):.1f} tok/s job")
    print(f"ratio {pooled_rate(runs['job']) / pooled_rate(runs['direct']):.3f}  [job/direct; target >= 0.95]")


if __name__ == "__main__":
    main()
