"""Public face of the allocation maths: validated wrappers around :mod:`bandit.policy`.

The service imports only this module. Arrays are checked and converted here (contiguous
float64 / bool / int64) so the jitted kernels never see surprises; bad input raises ValueError.
"""

from __future__ import annotations

import bisect
import functools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.stats

from bandit.features import LinearModel
from bandit.policy import (
    allocation,
    best_arm,
    contextual,
    guardrails,
    layout,
    posteriors,
    sampling,
)
from bandit.policy.layout import BERNOULLI, GAUSSIAN, BoolArray, FloatArray, IntArray

__all__ = [
    "BERNOULLI",
    "GAUSSIAN",
    "CoefficientSummary",
    "ContextualPosterior",
    "Guard",
    "Guarded",
    "PolicySettings",
    "PosteriorSummary",
    "allocation_probabilities",
    "cumulative",
    "forget",
    "forget_rows",
    "guarded_allocation",
    "marginal_stats",
    "metric_summary",
    "posterior_summary",
    "sample_arms",
    "sample_one",
    "sample_slates",
    "student_t_tail_table",
    "thompson_choices",
    "warm_up_kernels",
]

# The Monte Carlo fallback of the best-arm kernel (many distinct posteriors) is seeded afresh on
# every call so the same statistics always give the same probabilities on every process.
_MONTE_CARLO_SEED = 20_240_601


@dataclass(frozen=True)
class PolicySettings:
    """Exploration settings as the kernels take them (``bandit.model.EXPLORATION_SETTINGS``
    says what each means); ``control_share`` applies only with ``control_index``."""

    epsilon: float = 0.0
    min_share: float = 0.0
    max_share: float = 1.0
    temperature: float = 1.0
    warmup: int = 0
    top_two: float | None = None
    control_index: int | None = None
    control_share: float = 0.0

    def as_array(self) -> FloatArray:
        out = np.zeros(layout.N_SETTINGS)
        out[layout.EPSILON] = self.epsilon
        out[layout.MIN_SHARE] = self.min_share
        out[layout.MAX_SHARE] = self.max_share
        out[layout.TEMPERATURE] = self.temperature
        out[layout.WARMUP] = self.warmup
        out[layout.TOP_TWO] = np.nan if self.top_two is None else self.top_two
        out[layout.CONTROL_INDEX] = -1.0 if self.control_index is None else self.control_index
        out[layout.CONTROL_SHARE] = self.control_share
        return out


@dataclass(frozen=True)
class PosteriorSummary:
    """Per-arm posterior of the mean (untempered), for the stats endpoint and reports."""

    mean: FloatArray
    ci_low: FloatArray
    ci_high: FloatArray
    p_best: FloatArray
    expected_loss: FloatArray


@functools.cache
def student_t_tail_table() -> FloatArray:
    """Upper quantiles t.isf(TAIL_PROBABILITY, dof) on a dof grid, for the quadrature kernel."""
    dof = np.concatenate([np.geomspace(0.05, 1e6, 96), [np.inf]])
    table = np.vstack([dof, scipy.stats.t.isf(layout.TAIL_PROBABILITY, dof)])
    # Absurd priors (dof -> 0) have astronomically heavy tails; cap to keep the grid finite.
    table[1] = np.minimum(table[1], 1e12)
    table.setflags(write=False)
    return np.ascontiguousarray(table)


def _family(family: int) -> int:
    if family not in (BERNOULLI, GAUSSIAN):
        raise ValueError(f"family must be BERNOULLI (0) or GAUSSIAN (1), got {family!r}")
    return int(family)


def _floats(name: str, values: npt.ArrayLike, shape: tuple[int, ...]) -> FloatArray:
    array = np.ascontiguousarray(values, dtype=np.float64)
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    return array


def _stats(stats: npt.ArrayLike) -> FloatArray:
    array = np.ascontiguousarray(stats, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] != 3 or array.shape[1] < 1:
        raise ValueError(f"stats must have shape (3, K) with K >= 1, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("stats must be finite")
    return array


def _active(active: npt.ArrayLike | None, n_arms: int) -> BoolArray:
    if active is None:
        return np.ones(n_arms, dtype=np.bool_)
    array = np.ascontiguousarray(active, dtype=np.bool_)
    if array.shape != (n_arms,):
        raise ValueError(f"active must have shape ({n_arms},), got {array.shape}")
    return array


def _probabilities(probabilities: npt.ArrayLike) -> FloatArray:
    array = np.ascontiguousarray(probabilities, dtype=np.float64)
    if array.ndim != 1 or array.shape[0] < 1:
        raise ValueError(f"probabilities must be a non-empty 1-d array, got {array.shape}")
    if not np.all(np.isfinite(array)) or np.any(array < 0.0):
        raise ValueError("probabilities must be finite and non-negative")
    if abs(array.sum() - 1.0) > 1e-9:
        raise ValueError(f"probabilities must sum to 1, got {array.sum()!r}")
    return array


def _count(name: str, n: int) -> int:
    if n < 0:
        raise ValueError(f"{name} must be >= 0, got {n}")
    return int(n)


def allocation_probabilities(
    family: int,
    stats: npt.ArrayLike,
    counts: npt.ArrayLike,
    prior: npt.ArrayLike,
    settings: PolicySettings,
    active: npt.ArrayLike | None = None,
) -> FloatArray:
    """Allocation probability of every arm: the propensity of each decision drawn from it."""
    stats_array = _stats(stats)
    n_arms = stats_array.shape[1]
    settings_array = settings.as_array()
    if settings.temperature <= 0.0:
        raise ValueError(f"temperature must be > 0, got {settings.temperature!r}")
    if settings.control_index is not None and not 0 <= settings.control_index < n_arms:
        raise ValueError(f"control_index {settings.control_index} is not an arm index")
    return allocation.policy_probabilities(
        _family(family),
        stats_array,
        _floats("counts", counts, (n_arms,)),
        _floats("prior", prior, (4,)),
        settings_array,
        _active(active, n_arms),
        student_t_tail_table(),
        np.random.default_rng(_MONTE_CARLO_SEED),
    )


#: The hard gate: an arm whose P(violates a guardrail) reaches ``GATE_ON`` (with enough
#: observations) is held at the floor until it falls below ``GATE_OFF``.
GATE_ON = 0.95
GATE_OFF = 0.8


@dataclass(frozen=True)
class Guard:
    """One guardrail metric as the kernel takes it: its posterior's inputs and its rule."""

    family: int
    stats: FloatArray
    #: Raw observations per arm (the gate's minimum sample).
    counts: FloatArray
    prior: FloatArray
    higher: bool
    threshold: float
    relative: bool


@dataclass(frozen=True)
class Guarded:
    """An allocation with guardrails, and what it was computed from."""

    probabilities: FloatArray
    #: P(arm is the best feasible arm) under the tempered primary (K), before exploration.
    p_best_feasible: FloatArray
    #: Its Monte Carlo standard error (0 where exact: absolute thresholds only).
    error: FloatArray
    #: P(violates) per guardrail and arm (G, K), and of any guardrail (K); 0 for the control.
    p_violates: FloatArray
    p_violates_any: FloatArray
    #: Arms the hard gate holds at the floor.
    held: BoolArray
    #: E[primary mean of the best feasible arm] (tempered as ``p_best_feasible``).
    expected_max_feasible: float = math.nan


def guarded_allocation(
    family: int,
    stats: npt.ArrayLike,
    counts: npt.ArrayLike,
    prior: npt.ArrayLike,
    settings: PolicySettings,
    active: npt.ArrayLike | None,
    guards: list[Guard],
    control: int | None,
    gate_min_samples: int | None = None,
    held_before: npt.ArrayLike | None = None,
) -> Guarded:
    """Allocation probabilities when arms must keep guardrails: each arm's P(best feasible)
    (``bandit.policy.guardrails``) folded with the exploration settings (``fold_guarded``),
    and the hard gate: with ``gate_min_samples`` (None: no gate), an arm with at least that
    many observations of every guardrail (and the control too, for relative thresholds) is
    held from P(violates any) >= ``GATE_ON`` until it is below ``GATE_OFF``; ``held_before``
    says which arms were held (the gate's memory, kept by the caller)."""
    family = _family(family)
    stats_array = _stats(stats)
    n_arms = stats_array.shape[1]
    counts_array = _floats("counts", counts, (n_arms,))
    prior_array = _floats("prior", prior, (4,))
    active_array = _active(active, n_arms)
    if control is not None and not 0 <= control < n_arms:
        raise ValueError(f"control {control} is not an arm index")
    if any(g.relative for g in guards) and control is None:
        raise ValueError("a relative guardrail needs a control arm")
    if settings.temperature <= 0.0:
        raise ValueError(f"temperature must be > 0, got {settings.temperature!r}")
    if not guards:
        raise ValueError("guarded_allocation needs at least one guardrail")
    settings_array = settings.as_array()
    params = posteriors.posterior_parameters(family, stats_array, prior_array,
                                             settings.temperature)
    guard_params = np.stack([
        posteriors.posterior_parameters(_family(g.family), _stats(g.stats),
                                        _floats("prior", g.prior, (4,)), 1.0)
        for g in guards])
    control_index = -1 if control is None else control
    shares, error, p_violates, p_any, expected_max = guardrails.feasible_best(
        family, params, np.array([g.family for g in guards], dtype=np.int64), guard_params,
        np.array([guardrails.HIGHER if g.higher else guardrails.LOWER for g in guards],
                 dtype=np.int64),
        np.array([guardrails.RELATIVE if g.relative else guardrails.ABSOLUTE for g in guards],
                 dtype=np.int64),
        np.array([g.threshold for g in guards], dtype=np.float64), control_index, active_array,
        student_t_tail_table(), guardrails.OUTER, np.random.default_rng(_MONTE_CARLO_SEED))
    before = (np.zeros(n_arms, dtype=np.bool_) if held_before is None
              else _active(held_before, n_arms))
    held = np.zeros(n_arms, dtype=np.bool_)
    if gate_min_samples is not None:
        observed = np.min([_floats("counts", g.counts, (n_arms,)) for g in guards], axis=0)
        enough = observed >= gate_min_samples
        if control is not None and any(g.relative for g in guards):
            enough &= observed[control] >= gate_min_samples
        held = enough & active_array & np.where(before, p_any >= GATE_OFF, p_any >= GATE_ON)
        if control is not None:
            held[control] = False
    probabilities = allocation.fold_guarded(shares, counts_array, settings_array,
                                            active_array, held)
    return Guarded(probabilities, shares, error, p_violates, p_any, held, float(expected_max))


def metric_summary(family: int, stats: npt.ArrayLike,
                   prior: npt.ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Each arm's posterior mean (untempered) and central 95% interval."""
    family = _family(family)
    params = posteriors.posterior_parameters(family, _stats(stats),
                                             _floats("prior", prior, (4,)), 1.0)
    marginals = posteriors.marginal_parameters(family, params)
    mean = posteriors.posterior_means(family, marginals)
    if family == BERNOULLI:
        law = scipy.stats.beta(marginals[0], marginals[1])
    else:
        law = scipy.stats.t(marginals[0], loc=marginals[1], scale=marginals[2])
    return (mean, np.asarray(law.ppf(0.025), dtype=np.float64),
            np.asarray(law.ppf(0.975), dtype=np.float64))


def posterior_summary(
    family: int,
    stats: npt.ArrayLike,
    prior: npt.ArrayLike,
    active: npt.ArrayLike | None = None,
) -> PosteriorSummary:
    """Posterior mean, central 95% interval, P(best) and expected loss (NaN if paused)."""
    family = _family(family)
    stats_array = _stats(stats)
    n_arms = stats_array.shape[1]
    prior_array = _floats("prior", prior, (4,))
    active_array = _active(active, n_arms)
    mean, ci_low, ci_high = metric_summary(family, stats_array, prior_array)
    p_best, expected_max = best_arm.best_arm_probabilities(
        family,
        stats_array,
        prior_array,
        1.0,
        active_array,
        student_t_tail_table(),
        np.random.default_rng(_MONTE_CARLO_SEED),
    )
    expected_loss = np.where(active_array, np.maximum(expected_max - mean, 0.0), np.nan)
    return PosteriorSummary(
        mean=mean,
        ci_low=ci_low,
        ci_high=ci_high,
        p_best=p_best,
        expected_loss=expected_loss,
    )


def forget(
    family: int, stats: npt.ArrayLike, elapsed: npt.ArrayLike, half_life: float | None
) -> FloatArray:
    """Stats with evidence decayed by 2**(-elapsed/half_life); None means never forget."""
    stats_array = _stats(stats)
    elapsed_array = _floats("elapsed", elapsed, (stats_array.shape[1],))
    if half_life is not None and not half_life > 0.0:
        raise ValueError(f"half_life must be > 0 or None, got {half_life!r}")
    return posteriors.forget(
        _family(family), stats_array, elapsed_array, math.nan if half_life is None else half_life
    )


def thompson_choices(
    family: int,
    stats: npt.ArrayLike,
    prior: npt.ArrayLike,
    n: int,
    rng: np.random.Generator,
    active: npt.ArrayLike | None = None,
    temperature: float = 1.0,
) -> IntArray:
    """``n`` plain Thompson decisions drawn from the tempered posterior (simulation reference)."""
    stats_array = _stats(stats)
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    return posteriors.thompson_choices(
        _family(family),
        stats_array,
        _floats("prior", prior, (4,)),
        float(temperature),
        _count("n", n),
        rng,
        _active(active, stats_array.shape[1]),
    )


def cumulative(probabilities: npt.ArrayLike) -> FloatArray:
    """CDF to cache next to the probabilities; feed it to :func:`sample_arms`."""
    return sampling.cumulative(_probabilities(probabilities))


def sample_arms(cdf: npt.ArrayLike, n: int, rng: np.random.Generator) -> IntArray:
    """``n`` decisions from a cached CDF. For one decision :func:`sample_one` is faster."""
    array = np.ascontiguousarray(cdf, dtype=np.float64)
    if array.ndim != 1 or array.shape[0] < 1 or array[-1] != 1.0:
        raise ValueError("cdf must be a non-empty 1-d array ending at 1.0 (see cumulative)")
    return sampling.sample_arms(array, _count("n", n), rng)


def sample_one(cdf_list: list[float], uniform: float) -> int:
    """One decision from ``cumulative(...).tolist()`` and a uniform in [0, 1) (e.g. random()).

    Pure Python: for a single decision this beats the numba dispatch of :func:`sample_arms`.
    """
    return min(bisect.bisect_right(cdf_list, uniform), len(cdf_list) - 1)


def sample_slates(
    probabilities: npt.ArrayLike, n: int, k: int, rng: np.random.Generator
) -> tuple[IntArray, FloatArray, FloatArray]:
    """``n`` ranked slates of ``k`` arms: (arms (n, k), slate propensity, position propensities)."""
    array = _probabilities(probabilities)
    positive = int(np.count_nonzero(array > 0.0))
    if not 1 <= k <= positive:
        raise ValueError(f"k must be in [1, {positive}] (arms with positive probability), got {k}")
    return sampling.sample_slates(array, _count("n", n), int(k), rng)


#: Contextual models from which a decision is computed off the event loop (see ``heavy``):
#: with 100 arms in the race the quadrature alone takes about a millisecond; K d^2 = 100k is
#: about 50 us of triangular solves.
HEAVY_ARMS = 100
HEAVY_WORK = 100_000


@dataclass(frozen=True)
class CoefficientSummary:
    """Per arm and column: posterior mean and central 95% interval of the coefficient (K, d)."""

    mean: FloatArray
    ci_low: FloatArray
    ci_high: FloatArray


@dataclass(frozen=True)
class ContextualPosterior:
    """A contextual experiment's posteriors factorised once per refresh; a decision for a
    context is then one kernel call (``probabilities``)."""

    model: LinearModel
    means: FloatArray
    factors: FloatArray
    sigma2: FloatArray
    alphas: FloatArray
    counts: FloatArray
    settings: FloatArray
    active: BoolArray
    #: With guardrails: each arm's P(feasible) from its context-free marginals, and the arms
    #: the hard gate holds (``context_guarded``); None without.
    feasible: FloatArray | None = None
    held: BoolArray | None = None

    @classmethod
    def build(cls, model: LinearModel, rows: npt.ArrayLike, counts: npt.ArrayLike,
              settings: PolicySettings, active: npt.ArrayLike) -> ContextualPosterior:
        d = model.dimension
        rows_array = np.ascontiguousarray(rows, dtype=np.float64)
        if rows_array.ndim != 2 or rows_array.shape[1] != contextual.stats_width(d):
            raise ValueError(f"rows must have shape (K, {contextual.stats_width(d)}), got "
                             f"{rows_array.shape}")
        if not np.all(np.isfinite(rows_array)):
            raise ValueError("rows must be finite")
        n_arms = rows_array.shape[0]
        if not settings.temperature > 0.0:
            raise ValueError(f"temperature must be > 0, got {settings.temperature!r}")
        means, factors, sigma2, alphas = contextual.posterior_factors(
            rows_array, model.prior_precision(), np.zeros(d), model.alpha, model.beta,
            settings.temperature)
        return cls(model, means, factors, sigma2, alphas,
                   _floats("counts", counts, (n_arms,)), settings.as_array(),
                   _active(active, n_arms))

    def probabilities(self, x: FloatArray) -> FloatArray:
        """Allocation probabilities for feature vector ``x`` (every setting folded in)."""
        # The per-decision path: a cheap check (x comes from LinearModel.encode).
        x_array = np.ascontiguousarray(x, dtype=np.float64)
        if x_array.shape != (self.model.dimension,) or not math.isfinite(x_array.sum()):
            raise ValueError(f"x must be {self.model.dimension} finite numbers")
        if self.feasible is not None and self.held is not None:
            return self.allocation(x_array)[0]
        return contextual.context_probabilities(x_array, self.means, self.factors,
                                                self.sigma2, self.counts, self.settings,
                                                self.active)

    @property
    def heavy(self) -> bool:
        """Whether a decision may take a millisecond or more (many arms in the race, or large
        triangular solves): worth a worker thread rather than the event loop."""
        n_arms, d = self.means.shape
        return bool(n_arms >= HEAVY_ARMS or n_arms * d * d >= HEAVY_WORK)

    def allocation(self, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        """``probabilities(x)`` and their CDF for :func:`sample_one` (one kernel call)."""
        if x.dtype != np.float64 or x.shape != (self.means.shape[1],) \
                or not math.isfinite(x.sum()) or not x.flags.c_contiguous:
            raise ValueError(f"x must be {self.means.shape[1]} finite float64 numbers")
        if self.feasible is not None and self.held is not None:
            return contextual.context_guarded(
                x, self.means, self.factors, self.sigma2, self.counts, self.settings,
                self.active, self.feasible, self.held)
        return contextual.context_allocation(
            x, self.means, self.factors, self.sigma2, self.counts, self.settings, self.active)

    def coefficients(self) -> CoefficientSummary:
        """Marginal posterior of every coefficient: Student-t with 2 alpha_n degrees of freedom
        (the noise variance integrated out), scale sqrt(beta_n / alpha_n (Lambda_n^-1)_jj)."""
        n_arms, d = self.means.shape
        spread = np.empty((n_arms, d))
        identity = np.eye(d)
        for k in range(n_arms):
            inverse_factor = np.linalg.solve(self.factors[k], identity)  # L^-1
            spread[k] = np.sqrt(self.sigma2[k] * np.sum(inverse_factor**2, axis=0))
        quantile = scipy.stats.t.ppf(0.975, 2.0 * self.alphas)[:, None]
        return CoefficientSummary(self.means, self.means - quantile * spread,
                                  self.means + quantile * spread)


def forget_rows(rows: npt.ArrayLike, elapsed: npt.ArrayLike,
                half_life: float | None) -> FloatArray:
    """Contextual statistics rows decayed by 2**(-elapsed/half_life) (None: never forget)."""
    rows_array = np.ascontiguousarray(rows, dtype=np.float64)
    elapsed_array = _floats("elapsed", elapsed, (rows_array.shape[0],))
    return contextual.forget_rows(rows_array, elapsed_array,
                                  math.nan if half_life is None else half_life)


def marginal_stats(family: int, rows: npt.ArrayLike) -> FloatArray:
    """Context-free statistics (3, K) of each arm's rewards over all its contexts, from the
    contextual rows: what the stats' means, intervals and P(best) summarise."""
    rows_array = np.asarray(rows, dtype=np.float64)
    weight, total, squares = (rows_array[:, contextual.W], rows_array[:, contextual.SUM_R],
                              rows_array[:, contextual.SUM_R2])
    if _family(family) == BERNOULLI:
        return np.vstack([total, np.maximum(weight - total, 0.0), np.zeros_like(weight)])
    mean = np.where(weight > 0, total / np.where(weight > 0, weight, 1.0), 0.0)
    return np.vstack([weight, mean, np.maximum(squares - weight * mean**2, 0.0)])


def warm_up_kernels() -> None:
    """Compile (or load from the numba cache) every kernel the service uses now, not on the
    first request (the Thompson draws of the simulator and the tests are left to them)."""
    rng = np.random.default_rng(0)
    counts = np.array([5.0, 5.0])
    active = np.ones(2, dtype=np.bool_)
    settings = PolicySettings(top_two=0.5, control_index=None, min_share=0.1)
    for family, stats, prior in (
        (BERNOULLI, [[3.0, 1.0], [2.0, 4.0], [0.0, 0.0]], [1.0, 1.0, 0.0, 0.0]),
        (GAUSSIAN, [[5.0, 5.0], [0.1, 0.2], [4.0, 5.0]], [0.0, 1.0, 1.0, 1.0]),
    ):
        forget(family, stats, [1.0, 2.0], 10.0)
        posterior_summary(family, stats, prior, active)
        probabilities = allocation_probabilities(family, stats, counts, prior, settings, active)
        # Guardrails: one of each kind, relative (the control's draws) and absolute.
        guards = [Guard(BERNOULLI, np.array([[3.0, 1.0], [2.0, 4.0], [0.0, 0.0]]), counts,
                        np.array([1.0, 1.0, 0.0, 0.0]), True, -0.02, True),
                  Guard(GAUSSIAN, np.array([[5.0, 5.0], [0.1, 0.2], [4.0, 5.0]]), counts,
                        np.array([0.0, 1.0, 1.0, 1.0]), False, 1.0, False)]
        guarded = guarded_allocation(family, stats, counts, prior, settings, active, guards, 0,
                                     1, np.array([False, True]))
    model = LinearModel(features=())
    rows = np.zeros((2, contextual.stats_width(1)))
    posterior = ContextualPosterior.build(model, forget_rows(rows, [1.0, 2.0], 10.0), counts,
                                          settings, active)
    posterior.allocation(np.ones(1))
    posterior.probabilities(np.ones(1))
    rows[0, 0] = rows[0, 3] = rows[0, 4] = 2.0
    ContextualPosterior.build(model, rows, counts, PolicySettings(), active).allocation(
        np.ones(1))
    # A score without spread (noise scale 0) beside one with spread takes its own branch.
    contextual.context_allocation(np.ones(1), posterior.means + np.array([[0.0], [1.0]]),
                                  posterior.factors, np.array([0.0, 1.0]), counts,
                                  PolicySettings().as_array(), active)
    contextual.draw_scores(np.ones(1), posterior.means, posterior.factors, posterior.sigma2,
                           rng)
    contextual.context_guarded(np.ones(1), posterior.means, posterior.factors,
                               posterior.sigma2, counts, PolicySettings().as_array(), active,
                               1.0 - guarded.p_violates_any, guarded.held)
    cdf = cumulative(probabilities)
    sample_arms(cdf, 2, rng)
    sample_slates(probabilities, 2, 2, rng)
    sample_one(cdf.tolist(), 0.5)
