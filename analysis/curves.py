"""Self-consistency scaling curves: maj@k, pass@k and weighted maj@k versus the number of samples k.

Input, per problem (`Votes`): `labels`, an int64 array with the answer class of each of the n stored
samples (-1 = no answer, never a vote); `correct_class`, the class equal to the gold answer (-1 if no
sample got it right); optional `weights`, a nonnegative confidence per sample for weighted votes.

Each method is a function (problems, ks, seed) -> `Estimates`, named in the registry of
analysis/methods.py, whose `scaling_curves` is the entry point called by the aggregation job:

    curves = scaling_curves(problems, ks=None, methods=None, seed=0)
    curves.rows  # [{"method", "k", "accuracy", "ci_low", "ci_high", "stderr", "n_estimated"}, ...] (curve_rows)

`ks` defaults to `k_grid` of the smallest n among the problems; every k must be at most each problem's
n (typical runs store the same n for every problem). Per (method, k), `accuracy` is the mean over
problems of each problem's expected accuracy, `ci_low`/`ci_high` a 95% percentile bootstrap interval
over problems (B = 1000 resamples, seeded), `stderr` the Monte Carlo standard error of `accuracy` (0
where every problem was computed exactly) and `n_estimated` the number of problems estimated by Monte
Carlo. `curves.per_problem[method]` holds `Estimates`: (problems, ks) matrices of per-problem values,
their standard errors and which of them were estimated (the path used).

Definitions, per problem with n samples:
* maj@k: draw k of the n samples without replacement, uniformly; the answer with the most votes wins,
  a tie among t answers that includes the right one scores 1/t, and a draw with no answers scores 0.
* pass@k: the chance that at least one of the k drawn samples is right, 1 - C(n-c, k) / C(n, k).
* weighted maj@k: as maj@k with each vote counting its sample's weight (ties within a relative 1e-9).
* weighted_maj_top{η}@k (`top_percent=η`, DeepConf's filter): as weighted maj@k, but only the ceil(η% of k)
  highest-weighted of the k drawn samples vote.

How maj@k is computed. Let X_i be the number of draws that land in class i and r the right class.
Sampling k of n without replacement is the same as keeping each sample independently with probability
p = k/n and conditioning on keeping exactly k, so P(X = x) = prod_i Bin(x_i; c_i, p) / Bin(k; n, p),
and sums over draws are coefficients of products of generating polynomials F_i(z) = sum_x Bin(x; c_i, p)
z^x. Condition on the right class drawing j: it wins when every other class draws at most j, with
weight 1/(1+t) when t of them draw exactly j. Since 1/(1+t) = integral_0^1 u^t du,

    maj@k = sum_j Bin(j; c_r, p) / Bin(k; n, p) * integral_0^1 [z^(k-j)] prod_{i != r} G_ij(z, u) du,
    G_ij(z, u) = sum_{x < j} Bin(x; c_i, p) z^x + u Bin(j; c_i, p) z^j.

The integrand is a polynomial in u of degree at most the number of classes that can tie, so
Gauss-Legendre quadrature with that many nodes over two is exact; the coefficient is read off by a
discrete Fourier transform over N points, where the product is elementwise. Classes with the same count
share one factor (raised to their multiplicity), and classes smaller than every j that matters are
pooled with the no-answer samples into one binomial factor; the sum over j is split where the number
of quadrature nodes halves, so that the few small j with many possible ties don't set it for all.
Two truncations keep this cheap, each dropping at most EPS = 1e-16 of probability per j: values of j
are skipped where a bound on P(X_r = j and no large rival draws more) is below EPS (`_kept_js`), and
N only spans the others' total draw up to a Bernstein tail of EPS. All numbers are probabilities, so
nothing overflows at any n; results agree with brute force and exact enumeration to about 1e-13.

When that work (classes x values of j x quadrature nodes x N) exceeds `MAX_EXACT_WORK`, maj@k is
estimated from prefixes of random permutations of the samples instead: the first k samples of a random
permutation are a uniform k-subset, so one permutation scores every k at once. The number of
permutations is chosen so that the Monte Carlo standard error of the mean over problems is below
`SE_TARGET` for any data (each score lies in [0, 1], so its variance is at most 1/4). Weighted maj@k
always uses this estimator; at k = n every permutation gives the same vote, so it is exact there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple, Sequence

import numpy as np
from scipy.special import gammaln, xlogy

from analysis.confidence import filter_top

EPS = 1e-16  # probability mass that one truncation may drop, per j (see module docstring)
MAX_EXACT_WORK = 60_000  # above this many complex products per (problem, k), maj@k is estimated
N_RIVALS = 8  # largest rivals whose draws bound which j can win
SPLIT_WORK = 60_000  # exact maj@k splits its sum over j when one pass would do more complex products
SE_TARGET = 0.001  # Monte Carlo standard error allowed on a mean over problems
MIN_PERMUTATIONS = 32
BATCH_CELLS = 1 << 21  # permutation entries drawn at once, per group
N_BOOTSTRAP = 1000
TIE_RTOL = 1e-9  # weighted votes within this relative distance of the top count as tied
DELTA_SUFFIX = "_minus_greedy"  # paired differences to the greedy baseline: method maj_minus_greedy, ...


@dataclass(frozen=True, eq=False)
class Votes:
    """One problem's samples: answer class per sample (-1 = none), the right class, optional confidences
    (`weights`) and, for a CoT-decoding run, each branch's answer confidence Δ in rank order (`deltas`, NaN
    for a branch without an answer)."""

    labels: np.ndarray
    correct_class: int
    weights: np.ndarray | None = None
    deltas: np.ndarray | None = None


@dataclass
class Curves:
    """Result of `scaling_curves`: one row per (method, k), plus per-problem values per method."""

    ks: list[int]
    rows: list[dict]
    per_problem: dict[str, "Estimates"] = field(default_factory=dict)


def k_grid(n: int) -> list[int]:
    """Powers of two below n, then n itself: k_grid(10) == [1, 2, 4, 8, 10]."""
    ks = [1 << i for i in range(max(n - 1, 0).bit_length()) if 1 << i < n]
    return ks + [n]


def majority_vote(labels: np.ndarray, weights: np.ndarray | None = None) -> tuple[int, float]:
    """The (weighted) majority answer and its vote share among answered samples; ties go to the
    smallest class id; (-1, 0.0) when no sample answered (or all answered weights are 0)."""
    labels = np.asarray(labels)
    answered = labels >= 0
    if weights is None:
        weights = np.ones(len(labels))
    classes, codes = np.unique(labels[answered], return_inverse=True)
    votes = np.bincount(codes, weights=np.asarray(weights, dtype=float)[answered], minlength=len(classes))
    if votes.sum() <= 0:
        return -1, 0.0
    best = int(np.argmax(votes))  # first of the tied, i.e. the smallest class id
    return int(classes[best]), float(votes[best] / votes.sum())


def pass_at_k(n: int, c: int, ks: Sequence[int]) -> np.ndarray:
    """Unbiased pass@k = 1 - C(n-c, k) / C(n, k) for each k, as a stable product (no binomials)."""
    ks = np.asarray(ks, dtype=float)
    if c == 0:
        return np.zeros(len(ks))
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i), and 0 once k > n - c.
    i = np.arange(n - c + 1, n + 1, dtype=float)
    miss = np.prod(np.clip(1.0 - ks[:, None] / i[None, :], 0.0, None), axis=1)
    return 1.0 - miss


# ---------------------------------------------------------------------------------------------
# Exact maj@k
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _log_factorials(n: int) -> np.ndarray:
    """log(x!) for x = 0..n."""
    return gammaln(np.arange(n + 1) + 1.0)


def _binom_pmf(x: np.ndarray, size: np.ndarray, p: float, log_fact: np.ndarray) -> np.ndarray:
    """P(Bin(size, p) = x) elementwise (broadcasting), 0 where x > size; needs 0 < p < 1."""
    xc = np.minimum(x, size)
    log_pmf = log_fact[size] - log_fact[xc] - log_fact[size - xc] + xc * math.log(p) + (size - xc) * math.log1p(-p)
    return np.where(x <= size, np.exp(log_pmf), 0.0)


def _hypergeom_pmf(x: np.ndarray, successes: int, population: int, draws: int, log_fact: np.ndarray) -> np.ndarray:
    """P(X = x) for X the successes among `draws` taken without replacement; 0 off the support."""
    lo, hi = max(0, draws - (population - successes)), min(successes, draws)
    xc = np.clip(x, lo, hi)

    def log_comb(a: int, b: np.ndarray | int) -> np.ndarray:
        return log_fact[a] - log_fact[b] - log_fact[a - b]

    log_pmf = log_comb(successes, xc) + log_comb(population - successes, draws - xc) - log_comb(population, draws)
    return np.where((x >= lo) & (x <= hi), np.exp(log_pmf), 0.0)


def _kept_js(c_r: int, counts: np.ndarray, mult: np.ndarray, n: int, k: int, log_fact: np.ndarray) -> np.ndarray:
    """The draws j of the right class that matter: from the first to the last j where an upper bound
    on P(X_r = j and no rival draws more than j) exceeds EPS.

    The bound is P(X_r = j) times, given X_r = j, Chernoff bounds on P(X_i <= j) for the largest
    rivals: the k - j other draws are a multivariate hypergeometric sample, whose counts are
    negatively associated, so P(all X_i <= j) <= prod_i P(X_i <= j); and P(X_i <= a) <= exp(-m KL(a/m || q))
    for a <= m q, m draws and success fraction q, without replacement as with it (Hoeffding 1963)."""
    js = np.arange(max(1, k - (n - c_r)), min(c_r, k) + 1)
    bound = _hypergeom_pmf(js, c_r, n, k, log_fact)
    js, bound = js[bound > EPS], bound[bound > EPS]
    if len(counts) and len(js):
        m = (k - js)[:, None].astype(float)
        q = counts[None, -N_RIVALS:] / (n - c_r)
        a = np.minimum(js[:, None] / np.maximum(m, 1), q)
        with np.errstate(divide="ignore", invalid="ignore"):  # KL is 0 from the mean up, inf if q = 1
            kl = np.where(a < q, xlogy(a, a / q) + xlogy(1 - a, (1 - a) / (1 - q)), 0.0)
        js = js[bound * np.exp(-(m * kl) @ mult[-N_RIVALS:]) > EPS]
    return np.arange(js[0], js[-1] + 1) if len(js) else js


@lru_cache(maxsize=None)
def _gauss_legendre01(n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [0, 1]: exact for polynomials of degree < 2 * n_nodes."""
    x, w = np.polynomial.legendre.leggauss(n_nodes)
    return (x + 1) / 2, w / 2


def maj_at_k_exact(
    correct_count: int, other_counts: np.ndarray, n: int, k: int, max_work: float = math.inf
) -> float | None:
    """Exact maj@k from class counts (right class, other answered classes; the rest of the n samples
    have no answer), or None when the work would exceed `max_work`. See the module docstring."""
    counts, mult = np.unique(np.asarray(other_counts, dtype=np.int64), return_counts=True)
    return _maj_exact(int(correct_count), counts, mult, n, k, max_work)


class _Draw(NamedTuple):
    """k of n samples drawn, for exact maj@k: the right class's count and the other answered classes' distinct
    counts (ascending) with their multiplicities; the rest of the n samples have no answer."""

    c_r: int
    counts: np.ndarray
    mult: np.ndarray
    n: int
    k: int


class _Circle(NamedTuple):
    """The roots of unity a discrete Fourier transform evaluates the generating polynomials at: the frequencies
    read (the coefficients are real, so the other half is conjugate) and their inverse-transform weights."""

    roots: np.ndarray
    freqs: np.ndarray
    weights: np.ndarray

    def power(self, e: np.ndarray) -> np.ndarray:
        """z_l ** e for each exponent e (rows) and frequency l (columns)."""
        return self.roots[np.outer(e, self.freqs) % len(self.roots)]


def _maj_exact(c_r: int, counts: np.ndarray, mult: np.ndarray, n: int, k: int, max_work: float) -> float | None:
    """maj_at_k_exact, with the other classes given as distinct counts (ascending) and multiplicities."""
    plain = _maj_closed_form(c_r, counts, mult, n, k)
    if plain is not None:
        return plain
    log_fact = _log_factorials(n)
    js = _kept_js(c_r, counts, mult, n, k, log_fact)
    if len(js) == 0:
        return 0.0
    first = int(np.searchsorted(counts, js[0]))  # counts[first:] can reach js[0]: the contenders
    if first == len(counts):  # no rival can tie or beat any j that matters
        return float(_hypergeom_pmf(js, c_r, n, k, log_fact).sum())
    circle = _circle(_n_points(n - c_r, k / n, js, k))
    chunks, work = _chunks(counts, js, first, _quadrature_nodes(counts, mult, js, k), len(circle.freqs))
    if work > max_work:
        return None
    draw = _Draw(c_r, counts, mult, n, k)
    return float(np.clip(sum(_win_mass(draw, circle, *chunk) for chunk in chunks), 0.0, 1.0))


def _maj_closed_form(c_r: int, counts: np.ndarray, mult: np.ndarray, n: int, k: int) -> float | None:
    """maj@k where it needs no sum: no right sample, one sample drawn, or every sample (the plain vote); else None."""
    if c_r == 0:
        return 0.0
    if k == 1:
        return c_r / n
    if k == n:  # every sample is drawn: the plain vote
        if not len(counts) or counts[-1] < c_r:
            return 1.0
        return 0.0 if counts[-1] > c_r else 1.0 / (1 + int(mult[-1]))
    return None


def _quadrature_nodes(counts: np.ndarray, mult: np.ndarray, js: np.ndarray, k: int) -> np.ndarray:
    """Quadrature nodes per j: enough for the classes that can tie at j, given the k - j other draws."""
    at_least = np.cumsum(mult[::-1])[::-1]  # number of classes with count >= counts[i]
    reach = np.searchsorted(counts, js)
    can_tie = np.where(reach < len(counts), at_least[np.minimum(reach, len(counts) - 1)], 0)
    return np.minimum(can_tie, (k - js) // js) // 2 + 1


def _n_points(rest: int, p: float, js: np.ndarray, k: int) -> int:
    """The transform's size N: the others' total draw T (a sum of `rest` Bernoulli(p)) has < EPS mass outside
    [mean - h, mean + h] (Bernstein's inequality), and no coefficient we read, at k - j, aliases onto another
    one inside that window."""
    log_eps = -math.log(EPS)
    h = log_eps / 3 + math.sqrt((log_eps / 3) ** 2 + 2 * log_eps * rest * p * (1 - p))
    lo, hi = max(rest * p - h, 0), rest * p + h
    n_points = min(int(max(hi - (k - js[-1]), (k - js[0]) - lo, 0)) + 1, rest + 1)
    return n_points + 1 - n_points % 2  # odd, so 1 - p + p z never vanishes on the circle


def _circle(n_points: int) -> _Circle:
    """The n_points roots of unity, with the frequencies 0..n_points // 2 read off them."""
    freqs = np.arange(n_points // 2 + 1)  # real coefficients: the other half is conjugate
    freq_weights = np.where(freqs == 0, 1.0, 2.0) / n_points
    return _Circle(np.exp(2j * np.pi * np.arange(n_points) / n_points), freqs, freq_weights)


def _chunks(counts: np.ndarray, js: np.ndarray, first: int, n_nodes: np.ndarray,
            n_freqs: int) -> tuple[list[tuple[np.ndarray, int, int]], int]:
    """The sum over j as (js, first contender, nodes) chunks, and their work in complex products: one pass over
    all js, unless that is big; then split where the node count halves, so that few j pay for many nodes."""
    chunks = [(js, first, int(n_nodes[0]))]
    work = (len(counts) - first) * len(js) * int(n_nodes[0]) * n_freqs
    if work > SPLIT_WORK:
        bounds = np.flatnonzero(np.diff(np.log2(n_nodes).astype(int))) + 1
        chunks = [
            (c, int(np.searchsorted(counts, c[0])), int(n_nodes[c[0] - js[0]])) for c in np.split(js, bounds)
        ]
        work = sum((len(counts) - f) * len(c) * nodes * n_freqs for c, f, nodes in chunks)
    return chunks, work


def _win_mass(draw: _Draw, circle: _Circle, js: np.ndarray, first: int, n_nodes: int) -> float:
    """Sum over these j of P(X_r = j and no rival beats j), ties weighted 1/(1+t); classes
    counts[first:] can reach js[0], smaller ones are pooled with the no-answer samples."""
    c_r, counts, mult, n, k = draw
    log_fact, p = _log_factorials(n), k / n
    c, m = counts[first:, None], mult[first:]
    pool = n - c_r - int(np.dot(counts[first:], m))
    u, u_weights = _gauss_legendre01(n_nodes)
    xs = np.arange(js[-1] + 1)
    pmf, zx = _binom_pmf(xs, c, p, log_fact), circle.power(xs)  # (class, x), (x, l)
    below = np.einsum("cx,xl->cl", pmf[:, : js[0]], zx[: js[0]])  # sum_{x < js[0]}
    terms = pmf[:, js[0] :, None] * zx[js[0] :]  # (class, j, l)
    fewer = below[:, None, :] + np.cumsum(terms, axis=1) - terms  # sum_{x < j}
    factors = u[:, None] * terms[:, :, None, :]  # (class, j, u, l); in place from here on
    factors += fewer[:, :, None, :]
    repeated = m > 1
    if repeated.any():
        factors[repeated] **= m[repeated, None, None, None]
    z = circle.roots[circle.freqs]
    product = (1 - p + p * z) ** pool * np.multiply.reduce(factors, axis=0)  # (j, u, l)
    coef = np.einsum("jul,jl,u->j", product, circle.power(js - k) * circle.weights, u_weights).real  # [z^(k-j)]
    log_norm = log_fact[n] - log_fact[k] - log_fact[n - k] + k * math.log(p) + (n - k) * math.log1p(-p)
    norm = math.exp(log_norm)  # Bin(k; n, p)
    return float(np.dot(_binom_pmf(js, c_r, p, log_fact), coef)) / norm


# ---------------------------------------------------------------------------------------------
# Monte Carlo (weighted) maj@k
# ---------------------------------------------------------------------------------------------


def vote_at_k_mc(
    groups: Sequence[np.ndarray],
    correct_class: int,
    ks: Sequence[int],
    n_perm: int,
    rng: np.random.Generator,
    weights: Sequence[np.ndarray | None] | None = None,
    top_percent: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Estimate a vote over k samples of every group, for every k, from the prefixes of n_perm random
    permutations of each group's samples: one group is a run's maj@k (weighted maj@k with `weights`),
    one group per model is ensemble@k. Each vote counts its sample's weight (1 without weights); with
    `top_percent`, only the top η% weights of each draw vote.

    Returns (estimate, standard error), one value per k."""
    groups = [np.asarray(labels) for labels in groups]
    weights = [None if w is None else np.asarray(w, dtype=float) for w in weights or [None] * len(groups)]
    classes, codes = np.unique(np.concatenate(groups), return_inverse=True)
    if correct_class < 0 or correct_class not in classes:
        return np.zeros(len(ks)), np.zeros(len(ks))
    target, m = int(np.searchsorted(classes, correct_class)), len(classes)
    votes_for = classes >= 0  # the no-answer class (-1) never votes
    group_codes = np.split(codes, np.cumsum([len(labels) for labels in groups])[:-1])

    scores = []
    batch = max(1, BATCH_CELLS // max(len(c) for c in group_codes))
    for start in range(0, n_perm, batch):
        rows = min(batch, n_perm - start)
        orders = [rng.permuted(np.tile(np.arange(len(c)), (rows, 1)), axis=1) for c in group_codes]
        cells = [c[order] + m * np.arange(rows)[:, None] for c, order in zip(group_codes, orders)]  # (permutation, class) ids
        drawn = [None if w is None else w[order] for w, order in zip(weights, orders)]
        totals = np.zeros((rows, m))
        batch_scores = np.empty((rows, len(ks)))
        prev = 0
        for i, k in enumerate(ks):
            if top_percent is None:
                for group_cells, w in zip(cells, drawn):
                    new = None if w is None else w[:, prev:k].ravel()
                    totals += np.bincount(group_cells[:, prev:k].ravel(), weights=new, minlength=rows * m).reshape(rows, m)
            else:  # which samples vote depends on the whole draw: recount it
                w = filter_top(np.concatenate([w[:, :k] for w in drawn], axis=1), top_percent)
                prefix = np.concatenate([group_cells[:, :k] for group_cells in cells], axis=1)
                totals = np.bincount(prefix.ravel(), weights=w.ravel(), minlength=rows * m).reshape(rows, m)
            batch_scores[:, i] = tie_credit(totals * votes_for, target)
            prev = k
        scores.append(batch_scores)
    scores = np.concatenate(scores)
    stderr = scores.std(axis=0, ddof=1) / math.sqrt(n_perm) if n_perm > 1 else np.full(len(ks), np.nan)
    return scores.mean(axis=0), stderr


def tie_credit(votes: np.ndarray, target: int) -> np.ndarray:
    """Per row: 1/t if `target` is among the t top-voted classes, else 0; 0 when no votes."""
    top = votes.max(axis=1, keepdims=True)
    tied = votes >= top * (1 - TIE_RTOL)
    wins = tied[:, target] & (top[:, 0] > 0)
    return wins / tied.sum(axis=1)


def n_permutations(n_estimated: int, n_problems: int) -> int:
    """Permutations per estimated problem so that the Monte Carlo standard error of a mean over
    n_problems stays below SE_TARGET: each score's variance is at most 1/4."""
    needed = math.ceil(0.25 * n_estimated / (n_problems * SE_TARGET) ** 2)
    return max(MIN_PERMUTATIONS, needed)


# ---------------------------------------------------------------------------------------------
# Curves over problems
# ---------------------------------------------------------------------------------------------


class Estimates(NamedTuple):
    """Per-problem values of one method, each (problems, ks): value, Monte Carlo standard error
    (0 where exact) and whether the value was estimated by Monte Carlo."""

    values: np.ndarray
    stderr: np.ndarray
    estimated: np.ndarray


def class_counts(labels: np.ndarray, correct_class: int) -> tuple[int, np.ndarray]:
    """(count of the right class, counts of the other answered classes), for maj_at_k_exact."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels[labels >= 0], return_counts=True)
    right = classes == correct_class
    return int(counts[right].sum()), counts[~right]


def maj_curve(
    problems: Sequence[Votes], ks: Sequence[int], seed: int = 0, max_work: float = MAX_EXACT_WORK
) -> Estimates:
    """maj@k per problem and k: exact where the work fits `max_work`, else estimated."""
    values = np.full((len(problems), len(ks)), np.nan)
    for i, problem in enumerate(problems):
        c_r, others = class_counts(problem.labels, problem.correct_class)
        counts, mult = np.unique(others, return_counts=True)
        for j, k in enumerate(ks):
            value = _maj_exact(c_r, counts, mult, len(problem.labels), k, max_work)
            values[i, j] = np.nan if value is None else value
    estimated = np.isnan(values)
    stderr = np.zeros_like(values)
    todo = np.flatnonzero(estimated.any(axis=1))
    n_perm = n_permutations(len(todo), len(problems))
    for i in todo:
        ks_i = [k for k, e in zip(ks, estimated[i]) if e]
        rng = np.random.default_rng([seed, int(i)])
        mean, se = vote_at_k_mc([problems[i].labels], problems[i].correct_class, ks_i, n_perm, rng)
        values[i, estimated[i]], stderr[i, estimated[i]] = mean, se
    return Estimates(values, stderr, estimated)


def pass_curve(problems: Sequence[Votes], ks: Sequence[int], seed: int = 0) -> Estimates:
    """pass@k per problem and k, exact (no draws: `seed` is unused)."""
    values = np.array([pass_at_k(len(p.labels), class_counts(p.labels, p.correct_class)[0], ks) for p in problems])
    return Estimates(values, np.zeros_like(values), np.zeros(values.shape, dtype=bool))


def weighted_maj_curve(problems: Sequence[Votes], ks: Sequence[int], seed: int = 0,
                       top_percent: float | None = None) -> Estimates:
    """Weighted maj@k per problem and k (only the top η% of each draw voting, with `top_percent`),
    estimated (exact at k = n, where every permutation agrees)."""
    n_perm = n_permutations(len(problems), len(problems))
    values, stderr = np.empty((len(problems), len(ks))), np.empty((len(problems), len(ks)))
    for i, problem in enumerate(problems):
        rng = np.random.default_rng([seed, int(i), 1])
        values[i], stderr[i] = vote_at_k_mc([problem.labels], problem.correct_class, ks, n_perm, rng, [problem.weights],
                                            top_percent)
    estimated = np.array([[k < len(p.labels) for k in ks] for p in problems], dtype=bool).reshape(values.shape)
    return Estimates(values, stderr, estimated)


def bootstrap_ci(
    values: np.ndarray, n_boot: int = N_BOOTSTRAP, seed: int = 0, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean over problems (rows of `values`), per column.

    Problems are resampled with replacement, the same resamples for every column."""
    n_problems = len(values)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n_problems, size=(n_boot, n_problems))
    cells = (picks + n_problems * np.arange(n_boot)[:, None]).ravel()
    times_picked = np.bincount(cells, minlength=n_boot * n_problems).reshape(n_boot, n_problems)
    means = times_picked @ values / n_problems  # (n_boot, columns)
    alpha = (1 - level) / 2
    return np.quantile(means, alpha, axis=0), np.quantile(means, 1 - alpha, axis=0)


def curve_rows(method: str, ks: Sequence[int], estimates: Estimates, n_boot: int = N_BOOTSTRAP, seed: int = 0) -> list[dict]:
    """One row per k: the mean over problems, its 95% bootstrap interval and Monte Carlo error."""
    low, high = bootstrap_ci(estimates.values, n_boot, seed)
    mean_stderr = np.sqrt((estimates.stderr**2).sum(axis=0)) / len(estimates.values)
    return [
        {
            "method": method,
            "k": int(k),
            "accuracy": float(estimates.values[:, j].mean()),
            "ci_low": float(low[j]),
            "ci_high": float(high[j]),
            "stderr": float(mean_stderr[j]),
            "n_estimated": int(estimates.estimated[:, j].sum()),
        }
        for j, k in enumerate(ks)
    ]


def paired_deltas(per_problem: dict[str, Estimates], ks: Sequence[int], baseline: np.ndarray,
                  n_boot: int = N_BOOTSTRAP, seed: int = 0) -> list[dict]:
    """Per method and k, the mean over problems of (method - baseline), e.g. maj@k minus greedy, as rows
    of method `<method>_minus_greedy`; the interval is a paired bootstrap: both sides of each resample
    are the same problems. `baseline` holds one value per problem (rows of `per_problem`)."""
    baseline = np.asarray(baseline, dtype=float)[:, None]
    return [
        row
        for method, est in per_problem.items()
        for row in curve_rows(method + DELTA_SUFFIX, ks, Estimates(est.values - baseline, est.stderr, est.estimated),
                              n_boot, seed)
    ]
