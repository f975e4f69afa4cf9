"""Contextual Thompson sampling: one Bayesian linear regression per arm, and the exact
probability that each arm's sampled score is the largest for one context.

Model (per arm a, d features x with an intercept column):
    r = x . theta_a + noise,  noise ~ N(0, sigma_a^2),
    theta_a | sigma_a^2 ~ N(mu0, sigma_a^2 Lambda0^-1),  sigma_a^2 ~ InvGamma(alpha0, beta0).

Statistics per arm (float64 row of length ``stats_width(d)``, additive, so an update is order
free and can be replayed idempotently): weight w, sum of w r, sum of w r^2, X^T W y (d), and the
upper triangle of X^T W X, row by row (d (d + 1) / 2). Forgetting scales the whole row.

At refresh each arm's precision Lambda_n = Lambda0 + X^T W X / T (T: temperature) is factorised
once, Lambda_n = L L^T (Cholesky; the precision is stored, never its inverse, and Lambda0 > 0
keeps it positive definite however many updates have been added). A decision for context x
draws one score per arm, s_a ~ N(x . mu_a, sigma2_a ||L_a^-1 x||^2), with sigma2_a = beta_n /
alpha_n the posterior's noise scale: for independent arms this has the law of x . theta_a with
theta_a drawn from N(mu_a, sigma2_a Lambda_n^-1), at the cost of one triangular solve per arm.
The noise variance enters at that point estimate rather than drawn from its inverse-gamma
law, so the scores are normal (the Student-t law of the full NIG posterior has heavier tails
only while alpha_n is small, in the first few dozen observations of an arm).

P(arm a has the largest score | x) = integral of f_a(t) prod_{j != a} Phi_j(t) dt is computed by
Gauss-Legendre quadrature on panels built from every relevant arm's own scale (see
``_best_probabilities``): absolute error below 1e-7 in the tests against scipy's adaptive
quadrature, inside the 1e-6 the service promises.
"""

from __future__ import annotations

import math

import numpy as np

from bandit.jit import jit
from bandit.policy.allocation import fold_exploration, fold_guarded, racing_arms
from bandit.policy.layout import BoolArray, FloatArray
from bandit.policy.sampling import cumulative

#: Probability mass of the maximum score left out below the integration's lower limit.
_MASS = 1e-13
#: An arm whose score exceeds the lower limit with probability below Phi(-7) = 1.3e-12 cannot
#: be the best with a larger probability (plus the mass left out below the limit): it gets 0.
_PRUNE = 7.0
#: Half-width, in standard deviations, of the region where an arm's score has mass: the normal
#: tail beyond 8 sd is 6e-16.
_SPAN = 8.0
#: Panel edges of one arm, in its standard deviations: panels at most 1.5 sd wide in the
#: centre, 2.5 sd in the tails (with ``_THIN`` and 7 nodes: worst error 8e-8 against scipy's
#: adaptive quadrature over 200 random races; coarser panels or fewer nodes measured errors
#: of 1e-7 to 1e-5 for 10 to 30% less time). Timings: benchmarks/RESULTS.md.
_EDGES = np.array([-8.0, -5.5, -3.5, -2.0, -0.75, 0.75, 2.0, 3.5, 5.5, 8.0])
#: A panel edge is kept only this share of its own arm's panel width past the last kept edge,
#: so that overlapping arms do not multiply the panels (each panel stays <= ~2x its owner's).
_THIN = 1.0
#: Gauss-Legendre nodes and weights on [-1, 1] (7 points: exact for polynomials of degree 13).
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(7)
_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

# Offsets into one arm's statistics row.
W, SUM_R, SUM_R2, XY = 0, 1, 2, 3


def stats_width(d: int) -> int:
    """Length of one arm's statistics row for ``d`` features."""
    return 3 + d + d * (d + 1) // 2


@jit
def add_observations(stats: FloatArray, arms: np.ndarray, features: FloatArray,
                     rewards: FloatArray, weights: FloatArray) -> None:
    """Add weighted observations to the statistics rows in place (arm index, x, reward)."""
    d = features.shape[1]
    for i in range(arms.shape[0]):
        row = stats[arms[i]]
        w, r = weights[i], rewards[i]
        row[W] += w
        row[SUM_R] += w * r
        row[SUM_R2] += w * r * r
        position = XY + d
        for p in range(d):
            wx = w * features[i, p]
            row[XY + p] += wx * r
            for q in range(p, d):
                row[position] += wx * features[i, q]
                position += 1


@jit
def forget_rows(stats: FloatArray, elapsed: FloatArray, half_life: float) -> FloatArray:
    """Rows decayed by 2**(-elapsed/half_life) (a copy; no forgetting for a NaN half-life)."""
    out = stats.copy()
    if not (half_life > 0.0 and math.isfinite(half_life)):
        return out
    for k in range(stats.shape[0]):
        out[k] *= 2.0 ** (-max(elapsed[k], 0.0) / half_life)
    return out


@jit
def posterior_factors(
    stats: FloatArray, prior_precision: FloatArray, prior_mean: FloatArray, alpha0: float,
    beta0: float, temperature: float,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Per arm: posterior mean (K, d), Cholesky factor L of the precision (K, d, d), lower,
    noise scale sigma2 = beta_n / alpha_n (K,), and alpha_n (K,). Evidence is divided by the
    temperature (T > 1 widens the posterior)."""
    n_arms = stats.shape[0]
    d = prior_mean.shape[0]
    inv_t = 1.0 / temperature
    means = np.zeros((n_arms, d))
    factors = np.zeros((n_arms, d, d))
    sigma2 = np.zeros(n_arms)
    alphas = np.zeros(n_arms)
    precision = np.empty((d, d))
    rhs = np.empty(d)
    prior_quadratic = 0.0
    for p in range(d):
        prior_quadratic += prior_precision[p] * prior_mean[p] * prior_mean[p]
    for k in range(n_arms):
        row = stats[k]
        position = XY + d
        for p in range(d):
            for q in range(p, d):
                value = row[position] * inv_t
                precision[p, q] = value
                precision[q, p] = value
                position += 1
            precision[p, p] += prior_precision[p]
            rhs[p] = row[XY + p] * inv_t + prior_precision[p] * prior_mean[p]
        lower = _cholesky(precision)
        mean = _solve_lower_upper(lower, rhs)
        quadratic = 0.0  # mu_n^T Lambda_n mu_n = mu_n . rhs
        for p in range(d):
            quadratic += mean[p] * rhs[p]
        alpha = alpha0 + 0.5 * row[W] * inv_t
        # beta_n - beta0 is half a minimum of squares, >= 0: clamp the rounding away.
        beta = beta0 + 0.5 * max(row[SUM_R2] * inv_t + prior_quadratic - quadratic, 0.0)
        means[k] = mean
        factors[k] = lower
        sigma2[k] = beta / alpha
        alphas[k] = alpha
    return means, factors, sigma2, alphas


@jit
def _cholesky(a: FloatArray) -> FloatArray:
    """Lower Cholesky factor of a symmetric positive definite matrix."""
    d = a.shape[0]
    lower = np.zeros((d, d))
    for j in range(d):
        total = a[j, j]
        for k in range(j):
            total -= lower[j, k] * lower[j, k]
        if not total > 0.0:
            # Only rounding can get here (the prior precision is positive): keep it definite.
            total = max(a[j, j], 1e-300) * 1e-12
        diagonal = math.sqrt(total)
        lower[j, j] = diagonal
        for i in range(j + 1, d):
            total = a[i, j]
            for k in range(j):
                total -= lower[i, k] * lower[j, k]
            lower[i, j] = total / diagonal
    return lower


@jit
def _solve_lower(lower: FloatArray, b: FloatArray) -> FloatArray:
    d = b.shape[0]
    y = np.empty(d)
    for i in range(d):
        total = b[i]
        for k in range(i):
            total -= lower[i, k] * y[k]
        y[i] = total / lower[i, i]
    return y


@jit
def _solve_lower_upper(lower: FloatArray, b: FloatArray) -> FloatArray:
    """Solve L L^T x = b."""
    y = _solve_lower(lower, b)
    d = b.shape[0]
    x = np.empty(d)
    for i in range(d - 1, -1, -1):
        total = y[i]
        for k in range(i + 1, d):
            total -= lower[k, i] * x[k]
        x[i] = total / lower[i, i]
    return x


@jit
def score_laws(x: FloatArray, means: FloatArray, factors: FloatArray,
               sigma2: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Mean and standard deviation of every arm's score for context x."""
    n_arms, d = means.shape
    loc = np.empty(n_arms)
    scale = np.empty(n_arms)
    y = np.empty(d)
    for k in range(n_arms):
        total = 0.0
        for p in range(d):
            total += x[p] * means[k, p]
        loc[k] = total
        lower = factors[k]
        norm = 0.0
        for i in range(d):
            value = x[i]
            for j in range(i):
                value -= lower[i, j] * y[j]
            value /= lower[i, i]
            y[i] = value
            norm += value * value
        scale[k] = math.sqrt(sigma2[k] * norm)
    return loc, scale


@jit
def _log_cdf(z: float) -> float:
    if z > 8.5:
        return 0.0  # 1 - Phi(8.5) = 1e-17: below the rounding of 1
    return math.log(0.5 * math.erfc(-z / _SQRT2))


@jit
def _best_probabilities(loc: FloatArray, scale: FloatArray, racing: BoolArray) -> FloatArray:
    """P(arm k's score is the largest) for independent normal scores, over the racing arms.

    Arms whose upper bound (loc + 8 sd) lies below the largest lower bound (loc - 8 sd) cannot
    win (probability < 1e-15) and get 0. Identical laws share their probability exactly. The
    rest is integrated over [L, U] on panels whose edges are every relevant arm's loc + sd *
    ``_EDGES`` (thinned), with 7 Gauss-Legendre nodes per panel; a point mass (sd 0) wins
    where it is the largest. The result is normalised to sum to 1.
    """
    n_arms = loc.shape[0]
    out = np.zeros(n_arms)
    floor = -np.inf
    for k in range(n_arms):
        if racing[k]:
            floor = max(floor, loc[k] - _SPAN * scale[k])
    relevant = np.zeros(n_arms, dtype=np.bool_)
    n_relevant = 0
    for k in range(n_arms):
        if racing[k] and loc[k] + _SPAN * scale[k] >= floor:
            relevant[k] = True
            n_relevant += 1
    if n_relevant == 0:
        return out
    if n_relevant == 1:
        for k in range(n_arms):
            if relevant[k]:
                out[k] = 1.0
        return out
    # Identical laws (e.g. every arm at its prior) split evenly; so do point masses that tie.
    first = -1
    same = True
    for k in range(n_arms):
        if relevant[k]:
            if first < 0:
                first = k
            elif loc[k] != loc[first] or scale[k] != scale[first]:
                same = False
    if same:
        for k in range(n_arms):
            if relevant[k]:
                out[k] = 1.0 / n_relevant
        return out
    degenerate = False
    for k in range(n_arms):
        if relevant[k] and not scale[k] > 0.0:
            degenerate = True
    if degenerate:
        return _with_point_masses(loc, scale, relevant)

    ceiling = -np.inf
    for k in range(n_arms):
        if relevant[k]:
            ceiling = max(ceiling, loc[k] + _SPAN * scale[k])
    # Many overlapping arms concentrate the maximum: below the point where P(max < t) =
    # prod Phi_j(t) falls under _MASS, the integrands (which sum to the density of the max)
    # hold less than _MASS in all; start there, and drop arms that exceed it with probability
    # below Phi(-_PRUNE).
    floor = _lower_limit(loc, scale, relevant, floor, ceiling)
    for k in range(n_arms):
        if relevant[k] and loc[k] + _PRUNE * scale[k] < floor:
            relevant[k] = False
            n_relevant -= 1
    n_edges = _EDGES.shape[0]
    raw = np.empty(n_relevant * n_edges + 2)
    step = np.empty(n_relevant * n_edges + 2)
    count = 0
    for k in range(n_arms):
        if not relevant[k]:
            continue
        for e in range(n_edges):
            value = loc[k] + scale[k] * _EDGES[e]
            if floor < value < ceiling:
                width = _EDGES[e + 1] - _EDGES[e] if e + 1 < n_edges else (
                    _EDGES[e] - _EDGES[e - 1])
                raw[count] = value
                step[count] = scale[k] * width
                count += 1
    raw[count], step[count] = floor, 0.0
    raw[count + 1], step[count + 1] = ceiling, 0.0
    count += 2
    order = np.argsort(raw[:count])
    edges = np.empty(count)
    n_kept = 0
    for j in range(count):
        value = raw[order[j]]
        if n_kept == 0 or (value - edges[n_kept - 1] >= _THIN * step[order[j]]
                           and value > edges[n_kept - 1]):
            edges[n_kept] = value
            n_kept += 1
    # The ceiling may have been thinned away: end exactly there.
    edges[n_kept - 1] = max(edges[n_kept - 1], ceiling)

    index = np.empty(n_relevant, dtype=np.int64)
    r = 0
    for k in range(n_arms):
        if relevant[k]:
            index[r] = k
            r += 1
    sums = np.zeros(n_relevant)
    cdf = np.empty(n_relevant)
    density = np.empty(n_relevant)
    n_nodes = _GL_NODES.shape[0]
    for panel in range(n_kept - 1):
        left, right = edges[panel], edges[panel + 1]
        half = 0.5 * (right - left)
        middle = 0.5 * (right + left)
        for g in range(n_nodes):
            t = middle + half * _GL_NODES[g]
            # Every relevant arm's z is >= -8 here (t >= floor), so the product of the CDFs
            # (>= 6e-16 each) underflows only where the integrand is negligible anyway.
            product = 1.0
            for r in range(n_relevant):
                k = index[r]
                z = (t - loc[k]) / scale[k]
                if z > 8.5:
                    cdf[r] = 1.0
                    density[r] = 0.0
                else:
                    cdf[r] = 0.5 * math.erfc(-z / _SQRT2)
                    product *= cdf[r]
                    density[r] = math.exp(-0.5 * z * z) * _INV_SQRT_2PI / scale[k]
            weight = half * _GL_WEIGHTS[g] * product
            for r in range(n_relevant):
                if density[r] > 0.0:
                    sums[r] += weight * density[r] / cdf[r]
    norm = sums.sum()
    for r in range(n_relevant):
        out[index[r]] = sums[r] / norm if norm > 0.0 else 1.0 / n_relevant
    return out


@jit
def _lower_limit(loc: FloatArray, scale: FloatArray, relevant: BoolArray, low: float,
                 high: float) -> float:
    """A point t in [low, high] with P(max of the relevant scores < t) <= _MASS, as high as
    12 bisection steps find (the bracket's lower end, so the bound always holds)."""
    target = math.log(_MASS)
    for _ in range(12):
        middle = 0.5 * (low + high)
        total = 0.0
        for k in range(loc.shape[0]):
            if relevant[k]:
                total += _log_cdf((middle - loc[k]) / scale[k])
                if total < target:
                    break
        if total < target:
            low = middle
        else:
            high = middle
    return low


@jit
def _with_point_masses(loc: FloatArray, scale: FloatArray, relevant: BoolArray) -> FloatArray:
    """P(best) when some relevant scores have no spread (a context of zeros, an arm the prior
    pins): the largest point mass M wins unless a spread arm beats it; with spread arms, each
    point arm's chance is prod Phi_j((M - loc_j) / sd_j) shared among ties at M, and the spread
    arms share the rest by quadrature restricted to scores above M (see the module notes)."""
    n_arms = loc.shape[0]
    out = np.zeros(n_arms)
    top = -np.inf
    for k in range(n_arms):
        if relevant[k] and not scale[k] > 0.0:
            top = max(top, loc[k])
    ties = 0
    for k in range(n_arms):
        if relevant[k] and not scale[k] > 0.0 and loc[k] == top:
            ties += 1
    # Probability that every spread arm stays below the top point mass.
    below = 0.0
    for k in range(n_arms):
        if relevant[k] and scale[k] > 0.0:
            below += _log_cdf((top - loc[k]) / scale[k])
    stays = math.exp(below)
    for k in range(n_arms):
        if relevant[k] and not scale[k] > 0.0 and loc[k] == top:
            out[k] = stays / ties
    rest = 1.0 - stays
    if rest > 0.0:
        # Each spread arm's chance of beating the top and all other spread arms: Monte-Carlo
        # free form by quadrature of f_a(t) prod Phi_j(t) over t > top.
        n_nodes = _GL_NODES.shape[0]
        ceiling = -np.inf
        for k in range(n_arms):
            if relevant[k] and scale[k] > 0.0:
                ceiling = max(ceiling, loc[k] + _SPAN * scale[k])
        sums = np.zeros(n_arms)
        if ceiling > top:
            panels = 256
            width = (ceiling - top) / panels
            for panel in range(panels):
                middle = top + (panel + 0.5) * width
                for g in range(n_nodes):
                    t = middle + 0.5 * width * _GL_NODES[g]
                    total = 0.0
                    for k in range(n_arms):
                        if relevant[k] and scale[k] > 0.0:
                            total += _log_cdf((t - loc[k]) / scale[k])
                    for k in range(n_arms):
                        if relevant[k] and scale[k] > 0.0:
                            z = (t - loc[k]) / scale[k]
                            sums[k] += (0.5 * width * _GL_WEIGHTS[g] * math.exp(
                                -0.5 * z * z) * _INV_SQRT_2PI / scale[k]
                                * math.exp(total - _log_cdf(z)))
        spread_total = sums.sum()
        for k in range(n_arms):
            if relevant[k] and scale[k] > 0.0 and spread_total > 0.0:
                out[k] = rest * sums[k] / spread_total
    total = out.sum()
    if total > 0.0:
        out /= total
    return out


@jit
def context_probabilities(
    x: FloatArray, means: FloatArray, factors: FloatArray, sigma2: FloatArray,
    counts: FloatArray, settings: FloatArray, active: BoolArray,
) -> FloatArray:
    """THE contextual policy: allocation probabilities for context ``x``, every exploration
    setting folded in exactly as for context-free experiments (``fold_exploration``)."""
    racing, warming = racing_arms(counts, settings, active)
    if warming:
        p_best = racing.astype(np.float64)
    else:
        loc, scale = score_laws(x, means, factors, sigma2)
        p_best = _best_probabilities(loc, scale, racing)
    return fold_exploration(p_best, counts, settings, active)


@jit
def context_allocation(
    x: FloatArray, means: FloatArray, factors: FloatArray, sigma2: FloatArray,
    counts: FloatArray, settings: FloatArray, active: BoolArray,
) -> tuple[FloatArray, FloatArray]:
    """``context_probabilities`` and their CDF (``sampling.cumulative``) in one call."""
    probabilities = context_probabilities(x, means, factors, sigma2, counts, settings, active)
    return probabilities, cumulative(probabilities)


@jit
def draw_scores(x: FloatArray, means: FloatArray, factors: FloatArray, sigma2: FloatArray,
                rng: np.random.Generator) -> FloatArray:
    """One Thompson score per arm for context x (the simulator's plain Thompson step)."""
    loc, scale = score_laws(x, means, factors, sigma2)
    out = np.empty(loc.shape[0])
    for k in range(loc.shape[0]):
        out[k] = loc[k] + scale[k] * rng.standard_normal()
    return out



@jit
def context_guarded(
    x: FloatArray, means: FloatArray, factors: FloatArray, sigma2: FloatArray,
    counts: FloatArray, settings: FloatArray, active: BoolArray, feasible: FloatArray,
    held: BoolArray,
) -> tuple[FloatArray, FloatArray]:
    """A contextual experiment's allocation with guardrails, and its CDF: each arm's P(best)
    for context ``x`` (the control racing too) weighted by its P(feasible) from the arms'
    context-free marginals of the guardrail metrics (``feasible``), folded as
    ``allocation.fold_guarded`` folds P(best feasible), with ``held`` at the floor."""
    loc, scale = score_laws(x, means, factors, sigma2)
    p_best = _best_probabilities(loc, scale, active) * feasible
    probabilities = fold_guarded(p_best, counts, settings, active, held)
    return probabilities, cumulative(probabilities)
