"""Votes across models: self-consistency marginalized over the samples of several models on the same problems.

Each problem's answers from every model are grouped into one set of vote classes (equivalence-aware,
as within a run). ensemble@k draws k samples from each of the M models, without replacement within a
model, so it spends M * k samples; each vote counts its model's weight (all 1 by default), and the
answer with the most weight wins (a tie among t answers that includes the right one scores 1/t).

It is estimated from the prefixes of independent random permutations of each model's samples, with
as many permutations as weighted maj@k uses (`curves.n_permutations`); when k is every model's n, all
samples are drawn and the value is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from analysis.curves import Problem, tie_credit, bootstrap_ci, k_grid, n_permutations
from analysis.voting import correct_class, group_answers

METHOD = "ensemble"
BATCH_CELLS = 1 << 21  # permutation entries drawn at once, per model


@dataclass(frozen=True, eq=False)
class EnsembleProblem:
    """One problem: per model, the shared answer class of each of its samples (-1: none); the right class."""

    labels: list[np.ndarray]
    correct_class: int

    def member(self, model: int) -> Problem:
        """The problem as one model's run sees it, on the shared classes."""
        return Problem(self.labels[model], self.correct_class)


def ensemble_problem(keys: Sequence[Sequence[Optional[str]]], gold: str, fmt: str) -> EnsembleProblem:
    """Group one problem's canonical answers (a list per model) into shared classes and find the right one."""
    labels, classes = group_answers([key for model in keys for key in model], fmt)
    bounds = np.cumsum([len(model) for model in keys])[:-1]
    return EnsembleProblem(np.split(labels, bounds), correct_class(classes, gold, fmt))


def ensemble_at_k_mc(problem: EnsembleProblem, ks: Sequence[int], model_weights: np.ndarray, n_perm: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Estimate ensemble@k for every k (samples per model) from n_perm random permutations of each
    model's samples; returns (estimate, standard error), one value per k."""
    classes, codes = np.unique(np.concatenate(problem.labels), return_inverse=True)
    if problem.correct_class < 0:
        return np.zeros(len(ks)), np.zeros(len(ks))
    target, m = int(np.searchsorted(classes, problem.correct_class)), len(classes)
    model_codes = np.split(codes, np.cumsum([len(labels) for labels in problem.labels])[:-1])
    rows_per_batch = max(1, BATCH_CELLS // max(len(c) for c in model_codes))
    scores = []
    for start in range(0, n_perm, rows_per_batch):
        rows = min(rows_per_batch, n_perm - start)
        offsets = m * np.arange(rows)[:, None]
        cells = [c[rng.permuted(np.tile(np.arange(len(c)), (rows, 1)), axis=1)] + offsets for c in model_codes]
        votes = np.zeros((rows, m))
        batch_scores, prev = np.empty((rows, len(ks))), 0
        for j, k in enumerate(ks):
            for weight, model_cells in zip(model_weights, cells):
                votes += weight * np.bincount(model_cells[:, prev:k].ravel(), minlength=rows * m).reshape(rows, m)
            batch_scores[:, j] = tie_credit(votes * (classes >= 0), target)
            prev = k
        scores.append(batch_scores)
    scores = np.concatenate(scores)
    stderr = scores.std(axis=0, ddof=1) / math.sqrt(n_perm) if n_perm > 1 else np.full(len(ks), np.nan)
    return scores.mean(axis=0), stderr


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
        values[i], stderr[i] = ensemble_at_k_mc(problem, ks, weights, n_perm, np.random.default_rng([seed, i]))
    low, high = bootstrap_ci(values, seed=seed)
    mean_stderr = np.sqrt((stderr**2).sum(axis=0)) / len(problems)
    return [
        {"method": METHOD, "k": models * k, "k_per_model": k, "accuracy": float(values[:, j].mean()),
         "ci_low": float(low[j]), "ci_high": float(high[j]), "stderr": float(mean_stderr[j]),
         "n_estimated": int(sum(any(k < len(labels) for labels in p.labels) for p in problems))}
        for j, k in enumerate(ks)
    ]
