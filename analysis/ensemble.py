"""Votes across models: self-consistency marginalized over the samples of several models on the same problems.

Each problem's answers from every model are grouped into one set of vote classes (equivalence-aware,
as within a run). ensemble@k draws k samples from each of the M models, without replacement within a
model, so it spends M * k samples; each vote counts its model's weight (all 1 by default), and the
answer with the most weight wins (a tie among t answers that includes the right one scores 1/t).

It is estimated from the prefixes of independent random permutations of each model's samples
(`curves.vote_at_k_mc`, the scorer of weighted maj@k, with one group per model), with as many
permutations as weighted maj@k uses (`curves.n_permutations`); when k is every model's n, all samples
are drawn and the value is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from analysis.curves import Estimates, Votes, curve_rows, k_grid, n_permutations, vote_at_k_mc
from analysis.voting import correct_class, group_answers

METHOD = "ensemble"


@dataclass(frozen=True, eq=False)
class EnsembleProblem:
    """One problem: per model, the shared answer class of each of its samples (-1: none); the right class."""

    labels: list[np.ndarray]
    correct_class: int

    def member(self, model: int) -> Votes:
        """The problem as one model's run sees it, on the shared classes."""
        return Votes(self.labels[model], self.correct_class)


def ensemble_problem(keys: Sequence[Sequence[Optional[str]]], gold: str, fmt: str) -> EnsembleProblem:
    """Group one problem's canonical answers (a list per model) into shared classes and find the right one."""
    labels, classes = group_answers([key for model in keys for key in model], fmt)
    bounds = np.cumsum([len(model) for model in keys])[:-1]
    return EnsembleProblem(np.split(labels, bounds), correct_class(classes, gold, fmt))


def member_weights(problem: EnsembleProblem, model_weights: Sequence[float]) -> list[np.ndarray]:
    """Each sample's vote weight: its model's."""
    return [np.full(len(labels), float(w)) for labels, w in zip(problem.labels, model_weights)]


def ensemble_curve(problems: Sequence[EnsembleProblem], ks: Sequence[int] | None = None,
                   model_weights: Sequence[float] | None = None, seed: int = 0) -> list[dict]:
    """ensemble@k rows over problems, with 95% bootstrap intervals: `k` counts all samples drawn (models x
    `k_per_model`), so the curve overlays single-model curves at equal budget."""
    models = len(problems[0].labels)
    weights = np.ones(models) if model_weights is None else np.asarray(model_weights, dtype=float)
    if len(weights) != models:
        raise ValueError(f"{len(weights)} model weights for {models} models")
    min_n = min(len(labels) for p in problems for labels in p.labels)
    ks = k_grid(min_n) if ks is None else list(ks)
    n_perm = n_permutations(len(problems), len(problems))
    values, stderr = np.empty((len(problems), len(ks))), np.empty((len(problems), len(ks)))
    for i, problem in enumerate(problems):
        values[i], stderr[i] = vote_at_k_mc(problem.labels, problem.correct_class, ks, n_perm,
                                            np.random.default_rng([seed, i]), member_weights(problem, weights))
    estimated = np.array([[any(k < len(labels) for labels in p.labels) for k in ks] for p in problems], dtype=bool)
    rows = curve_rows(METHOD, ks, Estimates(values, stderr, estimated.reshape(values.shape)), seed=seed)
    return [{**row, "k": models * row["k"], "k_per_model": row["k"]} for row in rows]
