"""Policies the simulator runs: the service's Thompson sampling and the classic baselines.

A :class:`PolicySpec` names a policy and its parameters; :func:`parse_policy` reads the command
line form ``name:key=value,...``. Every name maps to one kernel code and arrays
(:meth:`PolicySpec.arrays`, laid out as :mod:`bandit.forecast.codes` says); the decision
kernels are :mod:`bandit.forecast.thompson` and :mod:`bandit.forecast.index_policies`, the
loop :mod:`bandit.forecast.replicate`, which the advisor's forecasts run too.

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

import numpy as np

from bandit.forecast.codes import (
    BAYES_UCB,
    EPSILON_GREEDY,
    KL_UCB,
    N_EXTRA,
    SW_UCB,
    THOMPSON,
    UCB1,
    UNIFORM,
    X_C,
    X_EPSILON,
    X_HALF_LIFE,
    X_HORIZON,
    X_QUADRATURE,
    X_SCALE,
    X_TAU,
    X_XI,
)
from bandit.policy import PolicySettings
from bandit.policy.layout import BERNOULLI, FloatArray

__all__ = [
    "POLICIES",
    "PolicyArrays",
    "PolicySpec",
    "parse_policy",
]


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
    """What the replication loop reads for one policy."""

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
