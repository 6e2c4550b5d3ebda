"""The registry of vote and curve methods: accuracy versus the number of samples k, one method per name.

A method is a function (problems, ks, seed) -> curves.Estimates (per-problem values at every k) and what
its inputs need beyond answer classes: "weights" (every problem's samples have confidences) or "deltas"
(a CoT-decoding run's branch confidences). A new method is one function and one line in METHODS; its
rows, plot line, MLflow metric `accuracy/<name>` and paired difference to greedy follow.

    curves = scaling_curves(problems, ks=None, methods=None, seed=0)
    curves.rows  # [{"method", "k", "accuracy", "ci_low", "ci_high", "stderr", "n_estimated"}, ...]
"""

from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple, Optional, Sequence

from analysis import cot_decoding
from analysis.curves import N_BOOTSTRAP, Curves, Estimates, Votes, curve_rows, k_grid, maj_curve, pass_curve
from analysis.curves import weighted_maj_curve

CurveFunction = Callable[[Sequence[Votes], Sequence[int], int], Estimates]


class Method(NamedTuple):
    """A curve method: its function and the `Votes` field it needs besides labels (None: nothing more)."""

    curve: CurveFunction
    needs: Optional[str] = None  # "weights" | "deltas"


METHODS: dict[str, Method] = {
    "maj": Method(maj_curve),
    "pass": Method(pass_curve),
    "weighted_maj": Method(weighted_maj_curve, "weights"),
    "cot_decoding_max": Method(partial(cot_decoding.branch_curve, selection="max"), "deltas"),
    "cot_decoding_agg": Method(partial(cot_decoding.branch_curve, selection="agg"), "deltas"),
}


def top_method(top_percent: float) -> str:
    """The name of weighted maj@k with only the top η% most confident of each draw voting (DeepConf's filter)."""
    return f"weighted_maj_top{top_percent:g}"


def registry(top_percent: Optional[float] = None) -> dict[str, Method]:
    """METHODS, with the DeepConf-filtered weighted maj@k after weighted_maj when `top_percent` is given."""
    if top_percent is None:
        return dict(METHODS)
    filtered = Method(partial(weighted_maj_curve, top_percent=top_percent), "weights")
    names = list(METHODS)
    at = names.index("weighted_maj") + 1
    return {name: METHODS.get(name, filtered) for name in names[:at] + [top_method(top_percent)] + names[at:]}


def has_inputs(method: Method, problems: Sequence[Votes]) -> bool:
    """Whether every problem holds what `method` needs."""
    return method.needs is None or all(getattr(p, method.needs) is not None for p in problems)


def scaling_curves(
    problems: Sequence[Votes],
    ks: Sequence[int] | None = None,
    methods: Sequence[str] | None = None,
    seed: int = 0,
    n_boot: int = N_BOOTSTRAP,
    top_percent: float | None = None,
) -> Curves:
    """Accuracy versus k for each method, with 95% bootstrap intervals over problems.

    `methods` defaults to every registered method whose inputs every problem holds (with `top_percent` η,
    also weighted_maj_top{η}); one named whose inputs are missing is a ValueError."""
    if not problems:
        raise ValueError("no problems")
    min_n = min(len(p.labels) for p in problems)
    ks = k_grid(min_n) if ks is None else sorted(int(k) for k in ks)
    if ks[0] < 1 or ks[-1] > min_n:
        raise ValueError(f"every k must lie in [1, {min_n}], the smallest n among the problems")
    known = registry(top_percent)
    if methods is None:
        methods = [name for name, method in known.items() if has_inputs(method, problems)]
    unknown = sorted(set(methods) - set(known))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; expected some of {list(known)}")

    curves = Curves(ks=list(ks), rows=[])
    for name in methods:
        method = known[name]
        if not has_inputs(method, problems):
            lacking = next(i for i, p in enumerate(problems) if getattr(p, method.needs) is None)
            raise ValueError(f"{name} needs {method.needs}, and problem {lacking} has none")
        estimates = method.curve(problems, ks, seed)
        curves.per_problem[name] = estimates
        curves.rows += curve_rows(name, ks, estimates, n_boot, seed)
    return curves
