"""The job against the raw engine, side by side in one run on this machine.

    python -m benchmarks.bench_engine                       # the default job's shape: 24 problems x 16, max_tokens 192
    python -m benchmarks.bench_engine --problems 4 --samples 4 --max-tokens 32 cluster.unit_size=8

`direct`: one `vllm.LLM` in this process, one `LLM.generate` call over every sample. `job`:
`jobs.sample.sample_runs` with one replica (Ray already started). Both get the same token prompts,
the same per-sample seeds and SamplingParams, the same engine arguments and environment, and both
start cold: each timing runs from importing vLLM (the replica imports it in its actor) to the last
sample (the job's also covers starting the actor, dispatch and shard writes). Tokens/s are generated
tokens over those times; the ratio is job/direct. Extra arguments are Hydra overrides for both.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from typing import Any

from omegaconf import DictConfig


def planned_requests(cfg: DictConfig) -> list[Any]:
    """Every request of the run, with the seeds the job derives."""
    from jobs.sample import plan_units, prepare_problems

    problems, prompts = prepare_problems(cfg)
    units = plan_units(problems, prompts, cfg.sampling.n, cfg.sampling.seed, cfg.sampling.n * len(problems), {})
    return [request for unit in units for request in unit.requests]


def run_direct(cfg: DictConfig, model_path: str, spec: Any) -> dict[str, Any]:
    """Import vLLM, load vllm.LLM here and generate every sample in one call."""
    from actors.replica import _params
    from jobs.sample import engine_kwargs

    assert "vllm" not in sys.modules, "vLLM must be imported inside the timing, as the replica does"
    start = time.monotonic()
    from vllm import LLM
    from vllm.inputs import TokensPrompt

    llm = LLM(model=model_path, **engine_kwargs(cfg))
    loaded = time.monotonic()
    tokenizer = llm.get_tokenizer()
    requests = planned_requests(cfg)
    prompts = []
    for request in requests:  # the replica's tokenization: chat template, then no extra special tokens
        text = tokenizer.apply_chat_template(request.prompt, tokenize=False, add_generation_prompt=True)
        prompts.append(TokensPrompt(prompt_token_ids=tokenizer.encode(text, add_special_tokens=False)))
    params = [_params(spec, r.seed, spec.max_tokens) for r in requests]
    began = time.monotonic()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    done = time.monotonic()
    texts = {(r.problem_id, r.sample_idx): o.outputs[0].text for r, o in zip(requests, outputs)}
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    del llm
    gc.collect()
    return {"load_s": loaded - start, "generate_s": done - began, "wall_s": done - start, "tokens": tokens,
            "texts": texts}


def run_job(cfg: DictConfig) -> dict[str, Any]:
    """jobs.sample with one replica, on a Ray started beforehand."""
    from analysis.traces import read_columns
    from jobs.sample import sample_runs

    start = time.monotonic()
    [summary] = sample_runs([cfg])
    wall = time.monotonic() - start
    table = read_columns(cfg.run_dir, ["problem_id", "sample_idx", "text"])
    texts = {(p, i): t for p, i, t in zip(*(table[c].to_pylist() for c in ("problem_id", "sample_idx", "text")))}
    return {"wall_s": wall, "generate_s": summary.generate_seconds, "write_s": summary.write_seconds,
            "tokens": summary.tokens, "texts": texts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=24)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=192)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both sides")
    args = parser.parse_args()

    import ray

    from actors.embedded_model import check_model, resolve_model_path
    from jobs.cli import compose
    from jobs.sample import sampling_spec

    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        cfg = compose(f"run_dir={tmp}/run", "tracking=none", f"dataset.limit={args.problems}",
                      f"sampling.n={args.samples}", f"sampling.max_tokens={args.max_tokens}", "replicas=1",
                      *args.overrides)
        os.environ.update(cfg.cluster.env)  # the replica's environment, for the direct engine too
        model_path = check_model(resolve_model_path(cfg.model.path))
        s = cfg.sampling
        direct = run_direct(cfg, model_path, sampling_spec(cfg))
        ray.init(num_cpus=cfg.cluster.num_cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": dict(cfg.cluster.env)})
        job = run_job(cfg)
        ray.shutdown()
    same = sum(direct["texts"][k] == job["texts"].get(k) for k in direct["texts"])
    rate = {name: r["tokens"] / r["wall_s"] for name, r in (("direct", direct), ("job", job))}
    print(f"{args.problems} problems x {args.samples} samples, max_tokens {args.max_tokens}, "
          f"unit_size {cfg.cluster.unit_size}, T={s.temperature}, top_p={s.top_p}, logprobs={s.logprobs}")
    print(f"direct LLM.generate: {direct['tokens']} tokens in {direct['wall_s']:.1f}s (import + load {direct['load_s']:.1f}s, "
          f"generate {direct['generate_s']:.1f}s): {rate['direct']:.1f} tok/s")
    print(f"jobs.sample, 1 replica: {job['tokens']} tokens in {job['wall_s']:.1f}s (of which generating "
          f"{job['generate_s']:.1f}s, writing {job['write_s']:.2f}s): {rate['job']:.1f} tok/s")
    print(f"ratio job/direct: {rate['job'] / rate['direct']:.3f}  [target >= 0.9]; "
          f"identical texts: {same}/{len(direct['texts'])}")


if __name__ == "__main__":
    main()
