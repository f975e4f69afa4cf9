"""Policies the simulator runs: the service's Thompson sampling and the classic baselines.

A :class:`PolicySpec` names a policy and its parameters; :func:`parse_policy` reads the command
line form ``name:key=value,...``. Every name maps to one kernel code and arrays
(:meth:`PolicySpec.arrays`); the index-policy kernels live here, the loop in
:mod:`simulations.engine`.

Names, parameters (defaults) and the rewards they support:

- ``thompson`` (both): the service's exploration settings: ``epsilon`` (0), ``min_share`` (0),
  ``max_share`` (1), ``temperature`` (1), ``half_life`` (in steps; none), ``warmup`` (0),
  ``top_two`` (none), ``control`` (arm index; none), ``control_share`` (0); the prior
  (``prior_alpha``, ``prior_beta``: 1, 1; Gaussian also ``prior_mean`` 0, ``prior_kappa``
  0.01: the service's defaults); ``quadrature`` (0; 1 forces the allocation-probability path).
- ``top-two`` (both): as ``thompson`` with ``top_two`` 0.5 (Russo 2016).
- ``discounted-thompson`` (both): ``gamma`` (0.99): every step all evidence is multiplied by
  gamma (Raj & Kalyani 2017), i.e. the service's forgetting with a half-life of
  ln 2 / -ln gamma steps; the prior.
- ``uniform`` (both); ``epsilon-greedy`` (both): ``epsilon`` (0.1).
- ``ucb1`` (both): ``scale`` (1): mean + scale sqrt(2 ln t / n) (Auer et al. 2002); set the
  scale to the noise sd for Gaussian rewards.
- ``kl-ucb`` (Bernoulli): ``c`` (0): max q with n kl(mean, q) <= ln t + c ln ln t (Garivier &
  Cappe 2011).
- ``bayes-ucb`` (Bernoulli): ``c`` (0): the 1 - 1/(t (ln T)^c) quantile of the Beta posterior
  (Kaufmann et al. 2012); the prior.
- ``sw-ucb`` (both): ``tau`` (window; 0 = 4 sqrt(T ln T)), ``xi`` (0.6), ``scale`` (1):
  mean + scale sqrt(xi ln min(t, tau) / n) over the last tau observations (Garivier &
  Moulines 2011).

Unobserved arms have an infinite index; ties between index maxima are broken uniformly at
random. With batched or delayed feedback, n and the means are those the policy has seen.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

import numba
import numpy as np
import numpy.typing as npt

from bandit.policy import PolicySettings, kernels
from bandit.policy.kernels import BERNOULLI

__all__ = [
    "POLICIES",
    "PolicyArrays",
    "PolicySpec",
    "parse_policy",
]

FloatArray = npt.NDArray[np.float64]

# Kernel codes.
UNIFORM = 0
EPSILON_GREEDY = 1
UCB1 = 2
KL_UCB = 3
BAYES_UCB = 4
SW_UCB = 5
THOMPSON = 6

# Layout of PolicyArrays.extra.
X_EPSILON = 0
X_SCALE = 1
X_C = 2
X_TAU = 3
X_XI = 4
X_HALF_LIFE = 5
X_HORIZON = 6
X_QUADRATURE = 7
N_EXTRA = 8

_PRIOR = {"prior_alpha": 1.0, "prior_beta": 1.0, "prior_mean": 0.0, "prior_kappa": 0.01}
_THOMPSON = {
    "epsilon": 0.0, "min_share": 0.0, "max_share": 1.0, "temperature": 1.0,
    "half_life": math.inf, "warmup": 0.0, "top_two": math.nan, "control": -1.0,
    "control_share": 0.0, "quadrature": 0.0, **_PRIOR,
}


@dataclass(frozen=True)
class _Entry:
    code: int
    defaults: Mapping[str, float]
    gaussian: bool


POLICIES: Mapping[str, _Entry] = MappingProxyType({
    "thompson": _Entry(THOMPSON, _THOMPSON, True),
    "top-two": _Entry(THOMPSON, {**_THOMPSON, "top_two": 0.5}, True),
    "discounted-thompson": _Entry(THOMPSON, {"gamma": 0.99, **_PRIOR}, True),
    "uniform": _Entry(UNIFORM, {}, True),
    "epsilon-greedy": _Entry(EPSILON_GREEDY, {"epsilon": 0.1}, True),
    "ucb1": _Entry(UCB1, {"scale": 1.0}, True),
    "kl-ucb": _Entry(KL_UCB, {"c": 0.0}, False),
    "bayes-ucb": _Entry(BAYES_UCB, {"c": 0.0, "prior_alpha": 1.0, "prior_beta": 1.0}, False),
    "sw-ucb": _Entry(SW_UCB, {"tau": 0.0, "xi": 0.6, "scale": 1.0}, True),
})

# name -> (low, high, low_open, integer). None in params means "off" where the default is.
_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "epsilon": (0.0, 1.0, False, False),
    "min_share": (0.0, 1.0, False, False),
    "max_share": (0.0, 1.0, True, False),
    "temperature": (0.0, math.inf, True, False),
    "half_life": (0.0, math.inf, True, False),
    "warmup": (0.0, math.inf, False, True),
    "top_two": (0.0, 1.0, False, False),
    "control": (0.0, math.inf, False, True),
    "control_share": (0.0, 1.0, False, False),
    "quadrature": (0.0, 1.0, False, True),
    "prior_alpha": (0.0, math.inf, True, False),
    "prior_beta": (0.0, math.inf, True, False),
    "prior_mean": (-math.inf, math.inf, False, False),
    "prior_kappa": (0.0, math.inf, True, False),
    "gamma": (0.0, 1.0, True, False),
    "scale": (0.0, math.inf, True, False),
    "c": (0.0, math.inf, False, False),
    "tau": (0.0, math.inf, False, True),
    "xi": (0.0, math.inf, True, False),
}
# Parameters that may be infinite (no forgetting) or "none".
_NONE_ALLOWED = {"half_life", "top_two", "control"}


class PolicyArrays(NamedTuple):
    """What the jitted engine reads for one policy."""

    code: int
    settings: FloatArray  # (kernels.N_SETTINGS,), the service's settings array
    prior: FloatArray  # (4,), the service's prior layout
    extra: FloatArray  # (N_EXTRA,), indexed by X_EPSILON ... X_QUADRATURE


def _check(name: str, policy: str, value: float) -> float:
    number = float(value)
    off = math.isnan(number) or (name == "half_life" and number == math.inf)
    if name in _NONE_ALLOWED and off:
        return number
    low, high, low_open, integer = _RANGES[name]
    inside = (number > low if low_open else number >= low) and number <= high
    if not (inside and math.isfinite(number)) or (integer and number != int(number)):
        kind = "an integer" if integer else "a number"
        left = "(" if low_open else "["
        raise ValueError(f"{policy}: {name} must be {kind} in {left}{low}, {high}], got {value!r}")
    return number


@dataclass(frozen=True)
class PolicySpec:
    """A policy by name with parameter overrides (validated; unset ones take the defaults)."""

    name: str
    params: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in POLICIES:
            raise ValueError(f"unknown policy {self.name!r}; known: {', '.join(POLICIES)}")
        defaults = POLICIES[self.name].defaults
        checked: dict[str, float] = {}
        for key, value in self.params.items():
            if key not in defaults:
                known = ", ".join(defaults) or "none"
                raise ValueError(f"{self.name}: unknown parameter {key!r}; known: {known}")
            checked[key] = _check(key, self.name, value)
        merged = {**defaults, **checked}
        if merged.get("min_share", 0.0) > merged.get("max_share", 1.0):
            raise ValueError(f"{self.name}: min_share {merged['min_share']} exceeds "
                             f"max_share {merged['max_share']}")
        control = merged.get("control", math.nan)
        if merged.get("control_share", 0.0) > 0.0 and not control >= 0.0:
            raise ValueError(f"{self.name}: control_share needs control (an arm index)")
        object.__setattr__(self, "params", MappingProxyType(checked))

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.params.items()))))

    @property
    def label(self) -> str:
        """``name`` or ``name(key=value,...)`` with the overrides, for tables and legends."""
        if not self.params:
            return self.name
        return f"{self.name}({','.join(f'{k}={v:g}' for k, v in self.params.items())})"

    def value(self, key: str) -> float:
        """A parameter's value, override or default."""
        return float(self.params.get(key, POLICIES[self.name].defaults[key]))

    def supports(self, family: int) -> bool:
        return family == BERNOULLI or POLICIES[self.name].gaussian

    def settings(self) -> PolicySettings:
        """The service's exploration settings of a Thompson-family policy."""
        if POLICIES[self.name].code != THOMPSON:
            raise ValueError(f"{self.name} is not a Thompson-sampling policy")
        if self.name == "discounted-thompson":
            return PolicySettings()
        top_two = self.value("top_two")
        control = self.value("control")
        return PolicySettings(
            epsilon=self.value("epsilon"),
            min_share=self.value("min_share"),
            max_share=self.value("max_share"),
            temperature=self.value("temperature"),
            warmup=int(self.value("warmup")),
            top_two=None if math.isnan(top_two) else top_two,
            control_index=None if math.isnan(control) or control < 0 else int(control),
            control_share=self.value("control_share"),
        )

    def half_life(self) -> float:
        """Forgetting half-life in steps (inf: never forget)."""
        if self.name == "discounted-thompson":
            gamma = self.value("gamma")
            return math.inf if gamma >= 1.0 else math.log(2.0) / -math.log(gamma)
        if POLICIES[self.name].code == THOMPSON:
            return self.value("half_life")
        return math.inf

    def arrays(self, family: int, n_arms: int, horizon: int) -> PolicyArrays:
        """Validate against the problem and convert for the engine kernel."""
        entry = POLICIES[self.name]
        if not self.supports(family):
            raise ValueError(f"{self.name} supports Bernoulli rewards only")
        defaults = entry.defaults
        prior = np.zeros(4)
        if family == BERNOULLI:
            prior[0] = self.value("prior_alpha") if "prior_alpha" in defaults else 1.0
            prior[1] = self.value("prior_beta") if "prior_beta" in defaults else 1.0
        elif "prior_mean" in defaults:
            prior[:] = [self.value("prior_mean"), self.value("prior_kappa"),
                        self.value("prior_alpha"), self.value("prior_beta")]
        settings = PolicySettings()
        if entry.code == THOMPSON:
            settings = self.settings()
            if settings.control_index is not None and settings.control_index >= n_arms:
                raise ValueError(f"{self.name}: control {settings.control_index} is not an arm "
                                 f"index (K = {n_arms})")
        extra = np.zeros(N_EXTRA)
        extra[X_SCALE] = self.value("scale") if "scale" in defaults else 1.0
        extra[X_C] = self.value("c") if "c" in defaults else 0.0
        tau = self.value("tau") if "tau" in defaults else 0.0
        extra[X_TAU] = tau or max(1.0, math.ceil(4.0 * math.sqrt(horizon * math.log(horizon))))
        extra[X_XI] = self.value("xi") if "xi" in defaults else 0.6
        extra[X_HALF_LIFE] = self.half_life()
        extra[X_HORIZON] = horizon
        extra[X_QUADRATURE] = self.value("quadrature") if "quadrature" in defaults else 0.0
        if entry.code == EPSILON_GREEDY:
            extra[X_EPSILON] = self.value("epsilon")
        return PolicyArrays(entry.code, settings.as_array(), prior, extra)


def parse_policy(text: str) -> PolicySpec:
    """``"thompson:epsilon=0.1,half_life=500"`` -> PolicySpec; ``none`` turns a setting off."""
    name, _, rest = text.strip().partition(":")
    name = name.strip()
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r} in {text!r}; known: {', '.join(POLICIES)}")
    params: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        # The service's name; in simulations a half-life is counted in steps, not seconds.
        key = "half_life" if key == "half_life_s" else key
        if not sep:
            raise ValueError(f"{name}: expected key=value, got {item!r} in {text!r}")
        if key in params:
            raise ValueError(f"{name}: parameter {key!r} given twice in {text!r}")
        raw = raw.strip()
        if raw.lower() in ("none", "null", "off"):
            if key not in _NONE_ALLOWED:
                raise ValueError(f"{name}: {key} cannot be none")
            params[key] = math.inf if key == "half_life" else math.nan
            continue
        try:
            params[key] = float(raw)
        except ValueError as error:
            raise ValueError(f"{name}: {key} must be a number, got {raw!r}") from error
    return PolicySpec(name, params)


# ---------------------------------------------------------------------------------------------
# Decision kernels. ``view`` holds the statistics the policy has seen, in the service's layout
# (Bernoulli: successes, failures; Gaussian: weight, mean, squared deviations), except for
# SW-UCB whose rows are the windowed count and reward sum.

_jit = numba.njit(cache=True, nogil=True)
_QUANTILE_ITERATIONS = 48
_KL_ITERATIONS = 40
_CF_ITERATIONS = 10_000
_TINY = 1e-300


@_jit
def _better(index: float, best: float, ties: int, rng: np.random.Generator) -> tuple[bool, int]:
    """Running argmax with uniform tie-breaking (reservoir sampling over equal maxima)."""
    if index > best:
        return True, 1
    if index == best:
        ties += 1
        return rng.random() * ties < 1.0, ties
    return False, ties


@_jit
def _observed(family: int, view: FloatArray, k: int) -> tuple[float, float]:
    """(weight n, mean) of arm k's observations; the Bernoulli mean is s / (s + f)."""
    if family == BERNOULLI:
        n = view[0, k] + view[1, k]
        return n, view[0, k] / n if n > 0.0 else 0.0
    return view[0, k], view[1, k]


@_jit
def bernoulli_kl_scalar(p: float, q: float) -> float:
    """KL(Bernoulli(p) || Bernoulli(q)) with q clipped into (0, 1)."""
    q = min(max(q, 1e-15), 1.0 - 1e-15)
    kl = 0.0
    if p > 0.0:
        kl += p * math.log(p / q)
    if p < 1.0:
        kl += (1.0 - p) * math.log((1.0 - p) / (1.0 - q))
    return kl


@_jit
def kl_ucb_index(mean: float, n: float, level: float) -> float:
    """max{q in [mean, 1] : n kl(mean, q) <= level}, by bisection to ~1e-12."""
    low, high = mean, 1.0
    if n * bernoulli_kl_scalar(mean, high) <= level:
        return 1.0
    for _ in range(_KL_ITERATIONS):
        middle = 0.5 * (low + high)
        if n * bernoulli_kl_scalar(mean, middle) > level:
            high = middle
        else:
            low = middle
    return low


@_jit
def _beta_cf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _CF_ITERATIONS):
        m2 = 2.0 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-14:
            break
    return h


@_jit
def beta_upper_tail(a: float, b: float, x: float) -> float:
    """P(X > x) for X ~ Beta(a, b), accurate when small (1 - I_x(a, b) = I_{1-x}(b, a))."""
    if x <= 0.0:
        return 1.0
    if x >= 1.0:
        return 0.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return 1.0 - math.exp(log_front) * _beta_cf(a, b, x) / a
    return math.exp(log_front) * _beta_cf(b, a, 1.0 - x) / b


@_jit
def beta_upper_quantile(a: float, b: float, tail: float) -> float:
    """x with P(X > x) = tail for X ~ Beta(a, b): Newton on log P(X > x), kept inside a
    bisection bracket (~6 tail evaluations instead of ~48 for bisection alone)."""
    if tail >= 1.0:
        return 0.0
    if tail <= 0.0:
        return 1.0
    log_target = math.log(tail)
    log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    low, high = 0.0, 1.0
    x = a / (a + b)
    for _ in range(_QUANTILE_ITERATIONS):
        upper = beta_upper_tail(a, b, x)
        if upper > tail:
            low = x
        else:
            high = x
        density = math.exp(log_norm + (a - 1.0) * math.log(x) + (b - 1.0) * math.log1p(-x))
        following = 0.5 * (low + high)
        if upper > 0.0 and density > 0.0:
            # d/dx log P(X > x) = -density / P(X > x)
            newton = x + (math.log(upper) - log_target) * upper / density
            if low < newton < high:
                following = newton
        if abs(following - x) <= 1e-14 or high - low <= 1e-15:
            return following
        x = following
    return x


@_jit
def choose_index_policy(
    code: int,
    family: int,
    view: FloatArray,
    prior: FloatArray,
    extra: FloatArray,
    t: int,
    rng: np.random.Generator,
) -> int:
    """Decision of a non-Thompson policy at step ``t`` (0-based: ``t`` plays so far)."""
    n_arms = view.shape[1]
    if code == UNIFORM:
        return int(rng.integers(0, n_arms))
    greedy_only = False
    if code == EPSILON_GREEDY:
        if rng.random() < extra[X_EPSILON]:
            return int(rng.integers(0, n_arms))
        greedy_only = True
    log_t = math.log(max(t, 1))
    level = log_t
    if code == KL_UCB and log_t > 1.0:
        level += extra[X_C] * math.log(log_t)
    tail = 1.0
    if code == BAYES_UCB:
        tail = 1.0 / ((t + 1) * math.log(max(extra[X_HORIZON], 2.0)) ** extra[X_C])
    window_log = math.log(max(min(t, extra[X_TAU]), 1.0))
    best = -math.inf
    winner = 0
    ties = 0
    for k in range(n_arms):
        if code == SW_UCB:
            n = view[0, k]
            mean = view[1, k] / n if n > 0.0 else 0.0
        else:
            n, mean = _observed(family, view, k)
        if code == BAYES_UCB:
            index = beta_upper_quantile(prior[0] + view[0, k], prior[1] + view[1, k], tail)
        elif n <= 0.0:
            index = math.inf
        elif greedy_only:
            index = mean
        elif code == UCB1:
            index = mean + extra[X_SCALE] * math.sqrt(2.0 * log_t / n)
        elif code == KL_UCB:
            index = kl_ucb_index(mean, n, level)
        else:
            index = mean + extra[X_SCALE] * math.sqrt(extra[X_XI] * window_log / n)
        take, ties = _better(index, best, ties, rng)
        if take:
            best = index
            winner = k
    return winner


# Thompson draw parameters ("params", float64 (N_PARAMS, K)): rows 0-3 are those of
# kernels.posterior_parameters; for Bernoulli arms rows 2-5 cache the Marsaglia-Tsang constants
# (d = shape - 1/3, c = 1/sqrt(9 d)) of alpha and of beta, which change only with the posterior.
N_PARAMS = 6


@_jit
def posterior_column(
    family: int, view: FloatArray, prior: FloatArray, inv_temperature: float, k: int,
    params: FloatArray,
) -> None:
    """Column k of kernels.posterior_parameters, in place (same floating-point operations)."""
    if family == BERNOULLI:
        for row in range(2):
            shape = prior[row] + view[row, k] * inv_temperature
            params[row, k] = shape
            d = shape - 1. / 3.
            params[2 + 2 * row, k] = d
            params[3 + 2 * row, k] = 1. / np.sqrt(9 * d) if shape > 1.0 else 0.0
        return
    kernels.normal_gamma_column(prior, view, inv_temperature, k, params)


@numba.njit(inline="always")
def _standard_gamma(shape: float, d: float, c: float, rng: np.random.Generator) -> float:
    """Generator.standard_gamma(shape), with its constants d, c precomputed when shape > 1.

    numba's port of numpy's Marsaglia-Tsang loop statement for statement, so the same random
    numbers give the same value; without its sqrt and division per draw, and inlined, a Beta
    draw costs about half of Generator.beta.
    """
    if shape <= 1.0:
        return float(rng.standard_gamma(shape))
    while True:
        while True:
            x = rng.standard_normal()
            v = 1.0 + c * x
            if v > 0.0:
                break
        v = v * v * v
        u = rng.random()
        if u < 1.0 - 0.0331 * (x * x) * (x * x):
            return d * v
        if np.log(u) < 0.5 * x * x + d * (1. - v + np.log(v)):
            return d * v


@numba.njit(inline="always")
def _beta_draw(params: FloatArray, k: int, rng: np.random.Generator) -> float:
    """Generator.beta(params[0, k], params[1, k]), value for value (numba's random_beta)."""
    a = params[0, k]
    b = params[1, k]
    if a <= 1.0 and b <= 1.0:
        return float(rng.beta(a, b))
    gamma_a = _standard_gamma(a, params[2, k], params[3, k], rng)
    gamma_b = _standard_gamma(b, params[4, k], params[5, k], rng)
    return gamma_a / (gamma_a + gamma_b)


@_jit
def _draw_mean(family: int, params: FloatArray, k: int, rng: np.random.Generator) -> float:
    """One posterior draw of arm k's mean: the same draws, in the same order, as the service."""
    if family == BERNOULLI:
        return _beta_draw(params, k, rng)
    precision = rng.gamma(params[2, k], 1.0 / params[3, k])
    return float(rng.normal(params[0, k], 1.0 / math.sqrt(params[1, k] * precision)))


@_jit
def thompson_argmax(family: int, params: FloatArray, control: int,
                    rng: np.random.Generator) -> int:
    """Plain Thompson decision: argmax of one posterior draw over the arms but ``control``."""
    # One loop per family: a family test inside the loop costs ~25% of the Bernoulli speed.
    # Draws are finite, so the first arm beats -inf: the first maximum wins, as in the service.
    winner = -1
    best = -math.inf
    if family == BERNOULLI:
        for k in range(params.shape[1]):
            if k != control:
                draw = _beta_draw(params, k, rng)
                if draw > best:
                    best = draw
                    winner = k
        return winner
    for k in range(params.shape[1]):
        if k != control:
            draw = _draw_mean(family, params, k, rng)
            if winner < 0 or draw > best:
                best = draw
                winner = k
    return winner


@_jit
def _uniform_bandit_arm(n_arms: int, control: int, rng: np.random.Generator) -> int:
    arm = int(rng.integers(0, n_arms - 1 if control >= 0 else n_arms))
    return arm + 1 if 0 <= control <= arm else arm


# Top-two challenger: resampling attempts before switching to the exact conditional law from
# the quadrature. Rejection sampling is memoryless, so the switch does not bias the law.
_CHALLENGER_ATTEMPTS = 64


@_jit
def choose_thompson(
    family: int,
    view: FloatArray,
    counts: FloatArray,
    params: FloatArray,
    prior: FloatArray,
    settings: FloatArray,
    racing: npt.NDArray[np.bool_],
    tail_table: FloatArray,
    rng: np.random.Generator,
) -> int:
    """One decision distributed exactly as kernels.fold_exploration's probabilities.

    Valid when floors and caps are off (MIN_SHARE 0, MAX_SHARE 1; then the projection is the
    identity) and every arm is active. ``params`` is posterior_parameters(view) (tempered).
    Matching fold_exploration term by term:

    - control arm: probability CONTROL_SHARE, held out of the race;
    - epsilon: with probability EPSILON a uniform bandit arm (the eps / n mixture term);
    - warm-up: while any bandit arm has fewer than WARMUP observations, uniform;
    - otherwise the argmax of one tempered posterior draw over the bandit arms: arm i wins with
      probability p_best[i], which is what best_arm_probabilities integrates;
    - top-two (leader probability beta): with probability 1 - beta the draw is repeated until a
      different arm wins, so given leader j arm i != j comes with probability p_i / (1 - p_j),
      and overall psi_i = beta p_i + (1 - beta) p_i sum_{j != i} p_j / (1 - p_j) (_top_two).

    With no exploration setting on, it makes exactly the draws of kernels.thompson_choices.
    """
    n_arms = view.shape[1]
    control = int(settings[kernels.CONTROL_INDEX]) if settings[kernels.CONTROL_INDEX] >= 0 else -1
    share = settings[kernels.CONTROL_SHARE]
    if control >= 0 and share > 0.0 and rng.random() < share:
        return control
    if settings[kernels.EPSILON] > 0.0 and rng.random() < settings[kernels.EPSILON]:
        return _uniform_bandit_arm(n_arms, control, rng)
    if settings[kernels.WARMUP] > 0.0:
        for k in range(n_arms):
            if k != control and counts[k] < settings[kernels.WARMUP]:
                return _uniform_bandit_arm(n_arms, control, rng)
    leader = thompson_argmax(family, params, control, rng)
    leader_share = settings[kernels.TOP_TWO]
    if math.isnan(leader_share) or n_arms - (control >= 0) == 1 or rng.random() < leader_share:
        return leader
    for _ in range(_CHALLENGER_ATTEMPTS):
        challenger = thompson_argmax(family, params, control, rng)
        if challenger != leader:
            return challenger
    # The leader wins almost surely: draw the challenger from p_i / (1 - p_leader) directly,
    # with fold_exploration's normalisation and its convention when p_leader rounds to 1.
    p_best, _ = kernels.best_arm_probabilities(
        family, view, prior, settings[kernels.TEMPERATURE], racing, tail_table, rng
    )
    total = 0.0
    for k in range(n_arms):
        if racing[k]:
            total += max(p_best[k], 0.0)
    others = 0.0
    for k in range(n_arms):
        if k != leader and racing[k]:
            others += max(p_best[k], 0.0)
    if not (total > 0.0 and others > 0.0 and max(p_best[leader], 0.0) / total < 1.0):
        # As _top_two when p_leader is 1: a uniform challenger.
        arm = int(rng.integers(0, n_arms - 2 if control >= 0 else n_arms - 1))
        for k in range(n_arms):
            if k not in (leader, control):
                if arm == 0:
                    return k
                arm -= 1
    target = rng.random() * others
    acc = 0.0
    last = leader
    for k in range(n_arms):
        if k != leader and racing[k] and p_best[k] > 0.0:
            acc += p_best[k]
            last = k
            if acc > target:
                return k
    return last
