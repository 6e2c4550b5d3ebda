"""Stopping rules for adaptive self-consistency: given one problem's answers so far, stop sampling or go on.

A rule is a pure function `rule(labels, weights, budget, **params) -> bool`: `labels` are the answer
classes of the samples drawn so far, in sample order (equivalence-merged classes; -1 = no answer, never
a vote), `weights` their confidences (DeepConf scores, or None), `budget` the most samples the problem
may get (adaptive.max_samples); the other parameters come from conf/adaptive/<rule>.yaml. True means
stop. A new rule is one function here and one line in RULES.

A rule that learns from other problems also has a fit in FITS: `fit(labels of each problem) -> prior`, a
plain frozen value passed to the rule as `prior=`. Only answers go into a fit, never a gold answer. Fitted on
another run (`adaptive.prior_run`), the prior is the same for the replay (analysis/adaptive.py) and online
rounds (actors/rounds.py), which then stop at the same points; otherwise the replay fits it on the other half
of the run's problems, and online rounds on every problem's answers so far.
"""

from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
from scipy.special import betainc
from scipy.stats import binom

Rule = Callable[..., bool]


def _votes(labels: np.ndarray, weights: Optional[np.ndarray] = None) -> np.ndarray:
    """Votes per answered class, largest first (weighted when `weights` is given)."""
    labels = np.asarray(labels)
    answered = labels >= 0
    w = None if weights is None else np.asarray(weights, dtype=float)[answered]
    votes = np.bincount(labels[answered], weights=w) if answered.any() else np.zeros(0)
    return np.sort(votes[votes > 0])[::-1]


def _lead(votes: np.ndarray) -> tuple[float, float]:
    """The leader's and the runner-up's votes (0 where there are fewer classes)."""
    return (float(votes[0]) if len(votes) else 0.0), (float(votes[1]) if len(votes) > 1 else 0.0)


def beta_probability(a: float, b: float) -> float:
    """P(p1 > p2 | a votes for the leader, b for the runner-up) under a uniform Beta(1, 1) prior:
    P(X > 1/2) for X ~ Beta(a + 1, b + 1), i.e. the regularized incomplete beta I_{1/2}(b + 1, a + 1)."""
    return float(betainc(b + 1.0, a + 1.0, 0.5))


def esc(labels: np.ndarray, weights: Optional[np.ndarray], *, budget: int, window: int) -> bool:
    """Early-Stopping Self-Consistency (Li et al., ICLR 2024, "Escape Sky-high Cost"): samples come in
    windows of `window`; stop at the end of a window whose answers all agree (zero entropy). A window
    holding a no-answer sample does not agree."""
    n = len(labels)
    if n < window or n % window:
        return False
    last = np.asarray(labels[-window:])
    return bool(last[0] >= 0 and (last == last[0]).all())


def beta(labels: np.ndarray, weights: Optional[np.ndarray], *, budget: int, threshold: float) -> bool:
    """Adaptive-Consistency's Beta criterion (Aggarwal et al., EMNLP 2023; BetaStoppingCriteria in
    github.com/Pranjal2041/AdaptiveConsistency): with a and b the counts of the two most common answers,
    stop when P(p1 > p2) = int_{1/2}^1 x^a (1-x)^b dx / int_0^1 x^a (1-x)^b dx exceeds `threshold`."""
    a, b = _lead(_votes(labels))
    return a > 0 and beta_probability(a, b) > threshold


@lru_cache(maxsize=65_536)
def dirichlet_probability(counts: tuple[int, ...], draws: int, seed: int) -> float:
    """P(the leading class has the largest share) under Dirichlet(counts + 1, 1): a uniform prior over
    the observed classes plus one class for every answer not seen yet. Monte Carlo, seeded."""
    alpha = np.asarray(counts + (0,), dtype=float) + 1.0
    shares = np.random.default_rng(seed).gamma(alpha, size=(draws, len(alpha)))
    return float((shares[:, 0] > shares[:, 1:].max(axis=1)).mean())


def dirichlet(labels: np.ndarray, weights: Optional[np.ndarray], *, budget: int, threshold: float, draws: int,
              seed: int) -> bool:
    """A Dirichlet-posterior rule (after Adaptive-Consistency's Dirichlet criterion, Aggarwal et al. 2023):
    stop when P(the leader's share exceeds every other class's, the unseen ones pooled) > `threshold`.
    With one class seen it equals the Beta criterion: 1 - 2^-(a+1)."""
    votes = _votes(labels)
    if len(votes) == 0:
        return False
    return dirichlet_probability(tuple(int(v) for v in votes), draws, seed) > threshold


def _effective_votes(labels: np.ndarray, weights: Optional[np.ndarray]) -> np.ndarray:
    """Votes per answered class, largest first: confidence-weighted with the weights scaled to mean 1 over the
    answered samples, so they stay effective counts; plain counts without weights."""
    labels = np.asarray(labels)
    answered = labels >= 0
    if weights is None or not answered.any() or np.asarray(weights, dtype=float)[answered].mean() <= 0:
        return _votes(labels)
    w = np.asarray(weights, dtype=float)
    return _votes(labels, w / w[answered].mean())


def confident(labels: np.ndarray, weights: Optional[np.ndarray], *, budget: int, threshold: float) -> bool:
    """marginal's rule. Stop when the leader cannot be overtaken within the budget (its lead over the
    runner-up exceeds the samples left: the full-budget vote is already decided), or when the Beta
    criterion, on confidence-weighted votes of the merged classes (_effective_votes), exceeds `threshold`.
    No-answer samples use budget but never vote, and without any answer the rule goes on."""
    a, b = _lead(_votes(labels))
    if a == 0:
        return False
    if a > b + (budget - len(labels)):
        return True
    return beta_probability(*_lead(_effective_votes(labels, weights))) > threshold


@dataclass(frozen=True)
class SharePrior:
    """A prior over θ, the likelier answer's share of the two most voted answers' (θ >= 1/2): weights on a grid,
    fitted across a run's problems (fit_share_prior). Hashable, so that vote_gain can cache on it."""

    shares: tuple[float, ...]
    weights: tuple[float, ...]


SHARES = tuple(np.r_[np.linspace(0.525, 0.975, 19), 0.99, 0.999])  # the grid the prior is fitted on


def _pair_likelihood(shares: np.ndarray, a: float, b: float) -> np.ndarray:
    """P(the top two answers got a and b votes | θ), either of them the likelier one (θ on each grid point)."""
    return shares**a * (1 - shares) ** b + shares**b * (1 - shares) ** a


def fit_share_prior(problems: Sequence[np.ndarray], iterations: int = 200) -> SharePrior:
    """The weights on SHARES that maximize the posterior of every problem's top-two votes (EM, each problem one
    draw of θ) under a Dirichlet(2, ..., 2) prior on the weights: one pseudo-problem per grid point, so that a
    small run cannot rule a split out. Problems with under two answers say nothing and are left out."""
    shares = np.array(SHARES)
    weights = np.full(len(shares), 1 / len(shares))
    pairs = [ab for ab in (_lead(_votes(p)) for p in problems) if sum(ab) >= 2]
    if pairs:
        likelihood = np.array([_pair_likelihood(shares, a, b) for a, b in pairs])
        for _ in range(iterations):
            joint = likelihood * weights
            weights = ((joint / joint.sum(axis=1, keepdims=True)).sum(axis=0) + 1) / (len(pairs) + len(shares))
    return SharePrior(SHARES, tuple(float(w) for w in weights))


def _posterior(a: float, b: float, prior: SharePrior) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The grid of θ and the posterior mass on each point after a votes for the leader and b for the runner-up,
    split in two: the leader is the likelier answer (share θ), or the runner-up is. The two sum to 1."""
    shares, weights = np.array(prior.shares), np.array(prior.weights)
    leader = weights * shares**a * (1 - shares) ** b
    runner_up = weights * shares**b * (1 - shares) ** a
    total = leader.sum() + runner_up.sum()
    return shares, leader / total, runner_up / total


def share_probability(a: float, b: float, prior: SharePrior) -> float:
    """P(p1 > p2 | a votes for the leader, b for the runner-up) when the pair's split θ is drawn from `prior`
    (either answer the likelier one): the Beta criterion with a fitted prior instead of the uniform one."""
    return float(_posterior(a, b, prior)[1].sum())


@lru_cache(maxsize=65_536)
def vote_gain(a: float, b: float, left: int, prior: SharePrior) -> float:
    """How much more likely the vote is to pick the likelier of the top two answers after `left` more samples
    than now (share_probability), when the leader has a votes and the runner-up b, θ drawn from `prior` and every
    further sample going to one of the two (X ~ Binomial(left, θ) to the likelier one; a tie counts half)."""
    shares, leader, runner_up = _posterior(a, b, prior)
    x = np.arange(left + 1)[:, None]
    pmf = binom.pmf(x, left, shares[None, :])

    def wins(mine: float, other: float) -> np.ndarray:  # P(the likelier answer leads at the end | θ)
        return (((mine + x > other + left - x) + 0.5 * (mine + x == other + left - x)) * pmf).sum(axis=0)

    later = (leader * wins(a, b)).sum() + (runner_up * wins(b, a)).sum()
    return float(later - leader.sum())


def eb(labels: np.ndarray, weights: Optional[np.ndarray], *, budget: int, loss: float, prior: SharePrior) -> bool:
    """marginal's empirical-Bayes rule: stop when sampling on to the budget would raise the chance that the vote
    picks the likelier of the top two answers by less than `loss`, under a prior on their split learnt from the
    run's other problems (FITS), on confidence-weighted votes where the samples have confidences (_effective_votes).
    `loss` bounds the expected accuracy a stop gives up against the full budget's vote, if the likelier answer is
    the right one. A decided vote (a > b + samples left) gains nothing and stops. In a run where most problems'
    samples agree, fewer agreeing samples suffice than in one where many split. No-answer samples use budget and
    never vote."""
    a, b = _lead(_effective_votes(labels, weights))
    if a == 0:
        return False
    return vote_gain(round(a, 2), round(b, 2), budget - len(labels), prior) < loss  # rounded: cache hits


RULES: dict[str, Rule] = {"esc": esc, "beta": beta, "dirichlet": dirichlet, "confident": confident, "eb": eb}
FITS: dict[Rule, Callable[[Sequence[np.ndarray]], Any]] = {eb: fit_share_prior}  # rules with a prior from the run


def variants(rules: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, Rule, dict[str, Any]]]:
    """(label, rule, params) for each configured rule; a list-valued parameter gives one variant per
    value (label `<rule>-<value>`, e.g. beta-0.99), several lists their product. An unknown rule, or a
    parameter the rule does not take or lacks, is a ValueError naming adaptive.rules.<rule>."""
    out = []
    for name, params in rules.items():
        if name not in RULES:
            raise ValueError(f"adaptive.rules.{name}: unknown stopping rule; expected one of {sorted(RULES)}")
        params = dict(params or {})
        swept = {k: list(v) for k, v in params.items() if isinstance(v, (list, tuple))}
        for values in itertools.product(*swept.values()):
            chosen = {**params, **dict(zip(swept, values))}
            fitted = {"prior": None} if RULES[name] in FITS else {}
            try:
                inspect.signature(RULES[name]).bind(None, None, budget=0, **fitted, **chosen)
            except TypeError as error:
                raise ValueError(f"adaptive.rules.{name}: {error} (its parameters: "
                                 f"{list(inspect.signature(RULES[name]).parameters)[3:]})") from None
            label = "-".join([name, *(f"{v:g}" if isinstance(v, float) else str(v) for v in values)])
            out.append((label, RULES[name], chosen))
    return out
