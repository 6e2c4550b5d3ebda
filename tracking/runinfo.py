"""What an evaluation run is called and what MLflow shows about it: its name, its short parameter list and
its description (the headline numbers). Pure functions of the run's config and results.

A name is `<model>/<dataset>/<prompt>`, the temperature, every other sampling and answer setting that
differs from conf/'s defaults, and, for a sweep member, its overrides: `qwen2.5-coder-0.5b-instruct/gsm8k/cot
t0.7 n32 top50`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from actors.decodings import DECODINGS, SAMPLE
from storage.rundir import flatten

PROJECT_DIR = Path(__file__).resolve().parents[1]

# How each setting reads in a run name (str.format of its value), in name order.
NAME_FORMATS = {
    "decoding": "{}",
    "sampling.temperature": "t{}",
    "sampling.top_p": "p{}",
    "sampling.n": "n{}",
    "sampling.top_k_branches": "b{}",
    "sampling.max_tokens": "max{}",
    "sampling.seed": "seed{}",
    "sampling.logprobs": "lp{}",
    "answer.format": "{}",
    "answer.confidence": "conf-{}",
    "answer.top_percent": "top{:g}",
    "answer.seed": "aseed{}",
}
# Named even at their defaults: greedy and sampled runs differ by the temperature, CoT-decoding runs by their
# branches (each applies only to its decoding).
ALWAYS_NAMED = ("sampling.temperature", "sampling.top_k_branches")
ANSWER_KEYS = ("answer.format", "answer.confidence", "answer.top_percent", "answer.seed")
IDENTITY_KEYS = ("model.name", "model.path", "dataset.name", "dataset.limit", "prompt.name", "decoding")
MACHINE_KEYS = ("precision.dtype", "precision.isa")  # what the replicas ran (rundir.record_precision)
# Overrides a name leaves out: config groups it shows already (their settings), and where a run goes.
UNNAMED_OVERRIDES = ("model", "dataset", "prompt", "sampling", "adaptive", "run_dir")
UNNAMED_PREFIXES = ("tracking", "hydra")


def decoding_keys(settings: Mapping[str, Any]) -> tuple[str, ...]:
    """The sampling keys that describe a run of this decoding, then the answer keys."""
    decoding = DECODINGS.get(str(settings.get("decoding")), DECODINGS[SAMPLE])  # an import: SAMPLE
    return decoding.name_keys + ANSWER_KEYS


def run_name(config: Mapping[str, Any], default: Mapping[str, Any],
             overrides: Iterable[tuple[str, str]] = ()) -> str:
    """`<model>/<dataset>/<prompt>` and the settings that tell this run apart (see the module's docstring) from
    `default`, conf/'s config composed without overrides (answer.format's default: the run's dataset's format).
    `overrides` are a sweep member's (key, value) pairs: each is named even at its default value."""
    settings, overrides = flatten(dict(config)), dict(overrides)
    base = {**flatten(dict(default)), "answer.format": settings.get("dataset.answer_format")}
    head = "/".join(str(settings[k]) for k in ("model.name", "dataset.name", "prompt.name") if settings.get(k) is not None)
    named = ("decoding",) + decoding_keys(settings)
    shown = [k for k in NAME_FORMATS if k in named and settings.get(k) is not None
             and (k in ALWAYS_NAMED or k in overrides or settings[k] != base.get(k))]
    parts = [NAME_FORMATS[k].format(settings[k]) for k in shown]
    rules = (config.get("adaptive") or {}).get("rules") or {}
    parts += [f"adaptive={'+'.join(rules)}"] if rules else []  # online stopping (or, aggregating, replayed rules)
    parts += [f"{k}={v}" for k, v in overrides.items()
              if k not in NAME_FORMATS and k not in UNNAMED_OVERRIDES and not k.startswith(UNNAMED_PREFIXES)]
    return " ".join(filter(None, [head, *parts]))


def git_commit() -> Optional[str]:
    """The commit of marginal's own checkout (`-dirty` when tracked files differ from it), None outside one."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_DIR, capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=PROJECT_DIR, timeout=30).returncode != 0
    except (OSError, subprocess.TimeoutExpired):
        return None
    return commit.stdout.strip() + ("-dirty" if dirty else "")


def params(config: Mapping[str, Any], metrics: Mapping[str, float],
           extra: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """The keys a user filters runs on: model, dataset, prompt, decoding, the sampling and answer settings that
    apply, the dtype and CPU ISA the replicas ran, problems, samples and marginal's commit, plus `extra` (an aggregation's adaptive rules); unset keys
    are left out."""
    settings = flatten(dict(config))
    chosen = {k: settings.get(k) for k in IDENTITY_KEYS + decoding_keys(settings) + MACHINE_KEYS}
    chosen.update({k: int(metrics[k]) for k in ("problems", "samples") if k in metrics})
    chosen.update(dict(extra or {}), git_commit=git_commit())
    return {k: v for k, v in chosen.items() if v is not None}


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def description(name: str, curves: list[dict[str, Any]], metrics: Mapping[str, float], omitted: Mapping[str, str],
                delta_suffix: str) -> str:
    """The run's headline in Markdown: greedy, maj@n and pass@n with their intervals, the paired difference of
    maj@n to greedy, tokens per problem, problems and samples; what is not reported says why."""
    by = {(r["method"], r["k"]): r for r in curves}
    n = max((k for m, k in by if m == "maj"), default=None)
    lines = [f"**{name}**", ""]
    if "accuracy/greedy" in metrics:
        lines.append(f"- greedy: {_percent(metrics['accuracy/greedy'])}")
    for method in ("maj", "pass"):
        row = by.get((method, n))
        if row:
            lines.append(f"- {method}@{n}: {_percent(row['accuracy'])} (95% CI {_percent(row['ci_low'])}–{_percent(row['ci_high'])})")
    delta = by.get((f"maj{delta_suffix}", n))
    if delta:
        lines.append(f"- maj@{n} − greedy: {100 * delta['accuracy']:+.1f} points, paired 95% CI "
                     f"[{100 * delta['ci_low']:+.1f}, {100 * delta['ci_high']:+.1f}]")
    if "tokens/per_problem" in metrics:
        lines.append(f"- tokens per problem: {metrics['tokens/per_problem']:,.0f}")
    if "problems" in metrics:
        lines.append(f"- {int(metrics['problems'])} problems, {int(metrics['samples'])} samples")
    lines += [f"- not reported: {method}: {why}" for method, why in omitted.items()]
    return "\n".join(lines)
