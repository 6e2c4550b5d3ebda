"""Each engine dtype on this machine, side by side in one run: tok/s, and greedy accuracy on a fixed handful.

    python -m benchmarks.bench_dtype                           # bfloat16 and float32, the default model
    python -m benchmarks.bench_dtype --force-avx2              # the same on PyTorch's and vLLM's AVX2 kernels
    python -m benchmarks.bench_dtype --dtype float32 model=smollm2_135m

For each dtype, a fresh process (spawned, as the replica has its own) loads the model with the job's engine
arguments and runs two shapes: greedy on the first `--problems` problems of the dataset (their accuracy shows a
wrong numeric path: a dtype that is fast but wrong), and a throughput shape of `--samples` samples per problem of
exactly `--tokens` tokens each (`ignore_eos`), the same token count for every dtype. `--force-avx2` runs every
process with benchmarks/force_avx2 on PYTHONPATH and ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2: that tests
the AVX2 code path on an AVX-512 machine, it does not reproduce an AVX2-only CPU's speed. The last line says
what `model.dtype=auto` resolves to here and which dtype was fastest.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

FORCE_AVX2 = {"PYTHONPATH": str(Path(__file__).resolve().parent / "force_avx2"), "ATEN_CPU_CAPABILITY": "avx2",
              "ONEDNN_MAX_CPU_ISA": "AVX2"}


def measure(cfg: DictConfig, model_path: str, dtype: str, samples: int, tokens: int) -> dict[str, Any]:
    """Load the model at `dtype` in this process; greedy accuracy and tok/s, then the fixed-length shape's tok/s."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from actors.precision import cpu_isa, resolved_engine_kwargs
    from actors.vllm_engine import engine_args
    from analysis.answers import extract_answer, grade
    from jobs.config import resolved
    from jobs.sample import prepare_problems

    kwargs, precision = resolved_engine_kwargs({**engine_args(resolved(cfg)), "dtype": dtype})
    start = time.monotonic()
    llm = LLM(model=model_path, **kwargs)
    load_s = time.monotonic() - start
    problems, prompts = prepare_problems(cfg)
    tokenizer = llm.get_tokenizer()
    ids = [TokensPrompt(prompt_token_ids=tokenizer.encode(
        tokenizer.apply_chat_template(prompts[p.problem_id], tokenize=False, add_generation_prompt=True),
        add_special_tokens=False)) for p in problems]

    def timed(params: list[Any], inputs: list[Any]) -> tuple[list[Any], float, int]:
        began = time.monotonic()
        outputs = llm.generate(inputs, params, use_tqdm=False)
        return outputs, time.monotonic() - began, sum(len(o.outputs[0].token_ids) for o in outputs)

    greedy, greedy_s, greedy_tokens = timed([SamplingParams(temperature=0.0, max_tokens=cfg.sampling.max_tokens)] * len(ids), ids)
    fmt = cfg.answer.format
    right = sum(grade(extract_answer(o.outputs[0].text, fmt), p.gold, fmt) for o, p in zip(greedy, problems))
    fixed = [SamplingParams(temperature=cfg.sampling.temperature, top_p=cfg.sampling.top_p, seed=i, max_tokens=tokens,
                            min_tokens=tokens, ignore_eos=True) for i in range(samples * len(ids))]
    _, sampled_s, sampled_tokens = timed(fixed, [prompt for prompt in ids for _ in range(samples)])
    return {"dtype": str(llm.llm_engine.model_config.dtype).removeprefix("torch."), "isa": cpu_isa(),
            "warning": precision.warning, "load_s": load_s, "right": right, "problems": len(problems),
            "greedy_tok_s": greedy_tokens / greedy_s, "greedy_tokens": greedy_tokens,
            "sampled_tok_s": sampled_tokens / sampled_s, "sampled_tokens": sampled_tokens}


def apart(function: Any, *args: Any) -> Any:
    """`function(*args)` in a new spawned process, gone once it returns (its environment: this one's now)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def resolve_auto() -> tuple[str, str]:
    """What model.dtype=auto resolves to in a process started now, and that process's ISA."""
    from actors.precision import engine_precision

    precision = engine_precision("auto")
    return precision.dtype, precision.isa


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="bfloat16,float32", help="comma-separated dtypes to measure")
    parser.add_argument("--problems", type=int, default=12, help="greedy on the first N problems of the dataset")
    parser.add_argument("--samples", type=int, default=4, help="throughput shape: samples per problem")
    parser.add_argument("--tokens", type=int, default=64, help="throughput shape: tokens per sample (forced)")
    parser.add_argument("--force-avx2", action="store_true", help="run on the AVX2 kernels (code path, not real speed)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (default: the default job's model, dataset, prompt)")
    args = parser.parse_args()
    dtypes = [d for d in args.dtype.split(",") if d]

    from actors.embedded_model import check_model, resolve_model_path
    from actors.precision import DTYPES
    from jobs.cli import compose

    unknown = [d for d in dtypes if d not in DTYPES or d == "auto"]
    if unknown or not dtypes:
        parser.error(f"--dtype {args.dtype}: each must be one of {DTYPES[1:]}")
    cfg = compose("tracking=none", f"dataset.limit={args.problems}", *args.overrides)
    os.environ.update(cfg.cluster.env)  # the replica's environment and threads
    os.environ.setdefault("OMP_NUM_THREADS", f"{cfg.cluster.cpus_per_replica:g}")
    if args.force_avx2:
        os.environ.update(FORCE_AVX2)
    model_path = check_model(resolve_model_path(cfg.model.path))
    auto, isa = apart(resolve_auto)
    print(f"model {cfg.model.name}, CPU ISA {isa}{' (forced AVX2 kernels)' if args.force_avx2 else ''}; "
          f"greedy on {args.problems} {cfg.dataset.name} problems (max_tokens {cfg.sampling.max_tokens}), then "
          f"{args.problems} x {args.samples} samples of {args.tokens} tokens")
    print(f"{'dtype':<10} {'load s':>7} {'greedy right':>13} {'greedy tok/s':>13} {'sampled tok/s':>14}")
    results = []
    for dtype in dtypes:
        r = apart(measure, cfg, model_path, dtype, args.samples, args.tokens)
        results.append(r)
        print(f"{r['dtype']:<10} {r['load_s']:>7.1f} {r['right']:>7} of {r['problems']:<3} {r['greedy_tok_s']:>13.1f} "
              f"{r['sampled_tok_s']:>14.1f}" + (f"   warning: {r['warning']}" if r["warning"] else ""))
    fastest = max(results, key=lambda r: r["sampled_tok_s"])["dtype"]
    print(f"auto resolves to {auto} here; fastest measured: {fastest}"
          + ("" if len(results) < 2 else f" ({'auto picks it' if auto == fastest else 'auto does NOT pick it'})"))


if __name__ == "__main__":
    main()
