"""Guardrail simulations: the service's constrained Thompson sampling against worlds where arms
move a primary metric and guardrail metrics together (issue 20).

A :class:`GuardrailWorld` has K arms, a primary metric (the reward, Bernoulli or Gaussian) and
guardrail metrics (:class:`GuardrailMetric`), each arm with a true mean per metric. Within one
decision the outcomes are correlated: a Gaussian copula with latent correlation ``correlation``
between the primary and each guardrail (guardrail g's latent normal is
``rho_g z_0 + sqrt(1 - rho_g^2) e_g``, so two guardrails correlate ``rho_g rho_h``); a Bernoulli
metric is 1 when its latent normal is above ``Phi^-1(1 - mean)``, a Gaussian one is
``mean + noise_sd z``. A negative correlation models "clicks up, revenue down" within a visit.
An arm is truly feasible when every guardrail keeps its threshold at the true means (relative
thresholds against the control's true mean: ``level = c + r |c|``); the control always is.

Policies (:func:`parse_guardrail_policy`, ``name:key=value,...``), each recomputing its
allocation probabilities every ``update_every`` decisions from the statistics seen so far (the
service's refresh: batched feedback) and drawing the decisions of the interval from them with
the service's ``cumulative`` and ``sample_arms``:

- ``constrained``: the service's kernel, ``bandit.policy.guarded_allocation`` (P(best feasible
  arm) under the joint posterior folded with the exploration settings), with the hard gate
  (``gate``: its minimum sample, 200 by default; ``gate=none`` turns it off) and its memory
  passed back as ``held_before`` on each refresh, as the service keeps it;
- ``plain``: the service's Thompson allocation ignoring the guardrails
  (``bandit.policy.allocation_probabilities``);
- ``oracle-feasible``: the same plain allocation on the truly feasible arms only (the others
  paused): the reference for the price of the guardrail.

Every policy takes the exploration settings ``epsilon``, ``min_share``, ``max_share``,
``temperature``, ``warmup``, ``top_two`` and ``control_share`` (the control is the world's).

Metrics per replication, at the end of every refresh interval: the cumulative primary regret
sum_t (mu*_F - mu_{a_t})^+ against the best truly feasible arm (a decision on an infeasible arm
with a better primary is not credited: it is counted in the infeasible traffic instead), the
cumulative number of decisions on truly infeasible arms, the allocation probabilities in force,
the gate's state per arm and each arm's P(violates any guardrail).

Replications run on threads (:func:`bandit.forecast.parallel.run_replications`, as
:mod:`simulations.engine`); replication i draws the world's outcomes from
``SeedSequence(seed, spawn_key=(i, 0))`` and the policy's decisions from
``SeedSequence(seed, spawn_key=(i, 1))``. The world draws every arm's potential outcomes for
each decision whatever is chosen, so every policy meets the same outcomes (common random
numbers) and results do not depend on the number of threads.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import special

from bandit.errors import InvalidValue
from bandit.forecast.guardrails import merge_batch
from bandit.forecast.parallel import run_replications
from bandit.model import BERNOULLI_PRIOR, GAUSSIAN_PRIOR, parse_new_experiment
from bandit.policy import (
    BERNOULLI,
    GAUSSIAN,
    Guard,
    PolicySettings,
    allocation_probabilities,
    cumulative,
    guarded_allocation,
    sample_arms,
)
from bandit.policy.layout import BoolArray, FloatArray, IntArray
from bandit.serving.cache import prior_vector

__all__ = [
    "GUARDRAIL_POLICIES",
    "GUARDRAIL_SCENARIOS",
    "GuardrailMetric",
    "GuardrailPolicy",
    "GuardrailResult",
    "GuardrailScenario",
    "GuardrailWorld",
    "parse_guardrail_policy",
    "plot_guardrails",
    "simulate_guardrails",
    "write_guardrails",
]

Kind = Literal["bernoulli", "gaussian"]


def _family(kind: str) -> int:
    if kind not in ("bernoulli", "gaussian"):
        raise ValueError(f"a metric's kind is bernoulli or gaussian, got {kind!r}")
    return BERNOULLI if kind == "bernoulli" else GAUSSIAN


def _prior(kind: str) -> FloatArray:
    """The service's prior for a guardrail metric of ``kind`` (``bandit.serving.cache``)."""
    return prior_vector(kind, BERNOULLI_PRIOR if _family(kind) == BERNOULLI else GAUSSIAN_PRIOR)


def _means(name: str, values: npt.ArrayLike, kind: str) -> FloatArray:
    array = np.array(values, dtype=np.float64)
    if array.ndim != 1 or array.shape[0] < 2 or not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: means must be at least 2 finite numbers, got {values!r}")
    if kind == "bernoulli" and np.any((array < 0.0) | (array > 1.0)):
        raise ValueError(f"{name}: bernoulli means must be in [0, 1], got {values!r}")
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class GuardrailMetric:
    """A guardrail metric: its true mean per arm, its rule, and its latent correlation with
    the primary within a decision."""

    name: str
    kind: Kind
    means: FloatArray
    higher: bool = True
    #: Relative change allowed against the control (``relative``), else an absolute level.
    threshold: float = -0.02
    relative: bool = True
    correlation: float = 0.0
    noise_sd: float = 1.0

    def __post_init__(self) -> None:
        _family(self.kind)
        object.__setattr__(self, "means", _means(self.name, self.means, self.kind))
        if not -1.0 <= self.correlation <= 1.0:
            raise ValueError(f"{self.name}: correlation must be in [-1, 1], got "
                             f"{self.correlation!r}")
        if not (math.isfinite(self.noise_sd) and self.noise_sd > 0.0):
            raise ValueError(f"{self.name}: noise_sd must be > 0, got {self.noise_sd!r}")
        if not math.isfinite(self.threshold):
            raise ValueError(f"{self.name}: threshold must be finite")

    def level(self, control: int | None) -> float:
        """The threshold's level at the true means."""
        if not self.relative:
            return self.threshold
        if control is None:
            raise ValueError(f"{self.name}: a relative threshold needs a control arm")
        c = float(self.means[control])
        return c + self.threshold * abs(c)

    def keeps(self, control: int | None) -> BoolArray:
        """Which arms keep this guardrail at the true means (the control always does)."""
        level = self.level(control)
        keeps = self.means >= level if self.higher else self.means <= level
        if control is not None:
            keeps[control] = True
        return np.asarray(keeps, dtype=np.bool_)

    def guard(self, stats: FloatArray, counts: FloatArray) -> Guard:
        """The kernel's view of this guardrail, given its statistics."""
        return Guard(_family(self.kind), stats, counts, _prior(self.kind), self.higher,
                     self.threshold, self.relative)


@dataclass(frozen=True)
class GuardrailWorld:
    """Arms with a primary metric and guardrail metrics (see the module notes)."""

    primary: Kind
    means: FloatArray
    guardrails: tuple[GuardrailMetric, ...]
    control: int | None = 0
    noise_sd: float = 1.0

    def __post_init__(self) -> None:
        _family(self.primary)
        object.__setattr__(self, "means", _means("primary", self.means, self.primary))
        object.__setattr__(self, "guardrails", tuple(self.guardrails))
        if not 1 <= len(self.guardrails) <= 5:
            raise ValueError(f"an experiment has 1 to 5 guardrails, got {len(self.guardrails)}")
        for metric in self.guardrails:
            if metric.means.shape != self.means.shape:
                raise ValueError(f"{metric.name}: {metric.means.shape[0]} means for "
                                 f"{self.n_arms} arms")
            metric.level(self.control)  # a relative threshold needs the control
        if self.control is not None and not 0 <= self.control < self.n_arms:
            raise ValueError(f"control {self.control} is not an arm index")
        if not (math.isfinite(self.noise_sd) and self.noise_sd > 0.0):
            raise ValueError(f"noise_sd must be > 0, got {self.noise_sd!r}")
        if not self.feasible.any():
            raise ValueError("no arm is feasible (give a control arm: it always is)")

    @property
    def n_arms(self) -> int:
        return int(self.means.shape[0])

    @property
    def family(self) -> int:
        return _family(self.primary)

    @property
    def feasible(self) -> BoolArray:
        """The truly feasible arms: every guardrail kept at the true means."""
        out = np.ones(self.n_arms, dtype=np.bool_)
        for metric in self.guardrails:
            out &= metric.keeps(self.control)
        return out

    @property
    def best_feasible(self) -> int:
        """The truly feasible arm with the best primary mean."""
        return int(np.flatnonzero(self.feasible)[np.argmax(self.means[self.feasible])])

    @property
    def gaps(self) -> FloatArray:
        """Each arm's primary regret per decision, (mu*_F - mu_k)^+."""
        return np.asarray(np.maximum(self.means[self.best_feasible] - self.means, 0.0),
                          dtype=np.float64)

    def outcomes(self, rng: np.random.Generator,
                 n: int) -> tuple[FloatArray, FloatArray]:
        """Every arm's potential outcomes for ``n`` decisions: the primary (n, K) and the
        guardrails (G, n, K), correlated within a decision by the Gaussian copula."""
        k = self.n_arms
        z0 = rng.standard_normal((n, k))
        primary = _observe(self.primary, self.means, self.noise_sd, z0)
        guards = np.empty((len(self.guardrails), n, k))
        for g, metric in enumerate(self.guardrails):
            rho = metric.correlation
            latent = rho * z0 + math.sqrt(1.0 - rho * rho) * rng.standard_normal((n, k))
            guards[g] = _observe(metric.kind, metric.means, metric.noise_sd, latent)
        return primary, guards


def _observe(kind: str, means: FloatArray, noise_sd: float, latent: FloatArray) -> FloatArray:
    if kind == "bernoulli":
        # 1 in the upper tail, so that the latent correlation keeps its sign.
        return np.asarray(latent > -special.ndtri(means), dtype=np.float64)
    return np.asarray(means + noise_sd * latent, dtype=np.float64)


def _add(kind: str, stats: FloatArray, arms: IntArray, values: FloatArray) -> None:
    """Add observations to statistics in the service's layout (``merge_batch``)."""
    k = stats.shape[1]
    n = np.bincount(arms, minlength=k).astype(np.float64)
    total = np.bincount(arms, weights=values, minlength=k).astype(np.float64)
    mean = np.where(n > 0, total / np.where(n > 0, n, 1.0), 0.0)
    squares = np.bincount(arms, weights=(values - mean[arms]) ** 2,
                          minlength=k).astype(np.float64)
    merge_batch(_family(kind), stats, n, total, squares)


# --- Policies --------------------------------------------------------------------------------

#: Each policy's settings and their defaults (NaN: off).
_SETTINGS: dict[str, float] = {"epsilon": 0.0, "min_share": 0.0, "max_share": 1.0,
                               "temperature": 1.0, "warmup": 0.0, "top_two": math.nan,
                               "control_share": 0.0}
GUARDRAIL_POLICIES: Mapping[str, Mapping[str, float]] = MappingProxyType({
    "constrained": MappingProxyType({**_SETTINGS, "gate": 200.0}),
    "plain": MappingProxyType(dict(_SETTINGS)),
    "oracle-feasible": MappingProxyType(dict(_SETTINGS)),
})
_SHARES = frozenset({"epsilon", "min_share", "max_share", "top_two", "control_share"})


@dataclass(frozen=True)
class GuardrailPolicy:
    """A policy of the module notes and its settings (NaN: off)."""

    name: str
    settings: Mapping[str, float] = field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        if self.name not in GUARDRAIL_POLICIES:
            raise ValueError(f"unknown guardrail policy {self.name!r}; one of "
                             f"{', '.join(GUARDRAIL_POLICIES)}")
        defaults = GUARDRAIL_POLICIES[self.name]
        merged = dict(defaults)
        for key, value in self.settings.items():
            if key not in defaults:
                raise ValueError(f"{self.name}: unknown setting {key!r}; settings: "
                                 f"{', '.join(defaults)}")
            number = float(value)
            off = math.isnan(number)
            if off and key not in ("gate", "top_two"):
                raise ValueError(f"{self.name}: {key} cannot be none")
            if not off and (not math.isfinite(number) or number < 0.0
                            or (key in _SHARES and number > 1.0)
                            or (key == "temperature" and number == 0.0)
                            or (key in ("gate", "warmup") and number != int(number))):
                raise ValueError(f"{self.name}: {key}={value!r} is out of range")
            merged[key] = number
        if merged["min_share"] > merged["max_share"]:
            raise ValueError(f"{self.name}: min_share exceeds max_share")
        # The service's bounds (bandit.model.EXPLORATION_SETTINGS): a gate needs at least
        # one observation, a control share is strictly below 1.
        if not math.isnan(merged.get("gate", math.nan)) and merged["gate"] < 1:
            raise ValueError(f"{self.name}: gate must be at least 1 observation, or none")
        if merged["control_share"] >= 1.0:
            raise ValueError(f"{self.name}: control_share must be below 1")
        object.__setattr__(self, "settings", MappingProxyType(merged))
        if not self.label:
            changed = {k: v for k, v in merged.items() if not _same(v, defaults[k])}
            text = ",".join(f"{k}={'none' if math.isnan(v) else f'{v:g}'}"
                            for k, v in changed.items())
            object.__setattr__(self, "label", f"{self.name}:{text}" if text else self.name)

    @property
    def gate(self) -> int | None:
        """The gate's minimum sample (None: no gate; only ``constrained`` has one)."""
        value = self.settings.get("gate", math.nan)
        return None if math.isnan(value) else int(value)

    def policy_settings(self, control: int | None) -> PolicySettings:
        """The service's settings. The control is named to the kernel only with a control
        share: ``allocation_probabilities`` holds a named control out of the race (it gets
        exactly its share), so without one the plain policies race it as any arm, as
        ``guarded_allocation`` does."""
        s = self.settings
        if self.name != "constrained" and s["control_share"] == 0.0:
            control = None
        return PolicySettings(
            epsilon=s["epsilon"], min_share=s["min_share"], max_share=s["max_share"],
            temperature=s["temperature"], warmup=int(s["warmup"]),
            top_two=None if math.isnan(s["top_two"]) else s["top_two"],
            control_index=control,
            control_share=s["control_share"] if control is not None else 0.0)


def check_with_service(policy: GuardrailPolicy, world: GuardrailWorld) -> None:
    """Refuse, with the service's own message, settings the service would refuse for this
    world's experiment (``bandit.model``'s checks): a simulation of a policy the service cannot
    run measures nothing. The simulator's floors and caps are shares of the traffic left after
    a control share (the kernel's), the service's are absolute: converted here."""
    s = policy.settings
    share = s["control_share"]
    control = None if world.control is None else f"arm{world.control}"
    exploration: dict[str, Any] = {
        "epsilon": s["epsilon"], "min_share": s["min_share"] * (1.0 - share),
        "max_share": min(1.0, s["max_share"] * (1.0 - share)),
        "temperature": s["temperature"], "warmup": int(s["warmup"]),
        "top_two": None if math.isnan(s["top_two"]) else s["top_two"],
        "control": None if share == 0.0 or control is None else {"arm": control,
                                                                  "share": share}}
    gate = s.get("gate", math.nan)
    constrained = policy.name == "constrained"
    if constrained and not math.isnan(gate):
        exploration["gate_min_samples"] = gate if gate != int(gate) else int(gate)
    body = {"id": "simulated", "arms": [f"arm{i}" for i in range(world.n_arms)],
            "reward": world.primary, "exploration": exploration,
            "control": control if constrained else None,
            "guardrails": [{"metric": m.name, "kind": m.kind,
                            "direction": "higher" if m.higher else "lower",
                            "threshold": {"relative" if m.relative else "absolute":
                                          m.threshold}}
                           for m in world.guardrails] if constrained else []}
    try:
        parse_new_experiment(body, 0.0)
    except InvalidValue as error:
        raise ValueError(f"{policy.label}: the service would refuse it: {error.message}") \
            from None


def _no_nan(value: Any) -> Any:
    """``value`` with every NaN (a setting that is off) as None: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _no_nan(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(item) for item in value]
    return value


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def parse_guardrail_policy(text: str,
                           defaults: Mapping[str, float] | None = None) -> GuardrailPolicy:
    """``name`` or ``name:key=value,...``; ``none`` turns ``gate`` or ``top_two`` off.
    ``defaults`` (e.g. the command line's ``--min-share``) apply to the settings the policy
    has and ``text`` does not set."""
    name, _, raw = text.strip().partition(":")
    known = GUARDRAIL_POLICIES.get(name.strip(), {})
    settings: dict[str, float] = {k: v for k, v in (defaults or {}).items() if k in known}
    given: set[str] = set()
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ValueError(f"{name}: expected key=value, got {item!r}")
        if key in given:
            raise ValueError(f"{name}: {key} is given twice")
        given.add(key)
        if value.strip().lower() in ("none", "off", "null"):
            settings[key] = math.nan
            continue
        try:
            settings[key] = float(value)
        except ValueError:
            raise ValueError(f"{name}: {key}={value!r} is not a number") from None
        if not math.isfinite(settings[key]):
            raise ValueError(f"{name}: {key}={value!r} is not a finite number")
    return GuardrailPolicy(name.strip(), settings, text.strip())


# --- Replications ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GuardrailResult:
    """Metrics of ``reps`` replications at the end of every refresh interval (rows:
    replications; B intervals)."""

    policy: str
    #: (B,) decisions made before the interval (when its allocation was computed) and by its end.
    starts: IntArray
    checkpoints: IntArray
    regret: FloatArray  # (reps, B) cumulative primary regret, sum of (mu*_F - mu_a)^+
    infeasible: FloatArray  # (reps, B) cumulative decisions on truly infeasible arms
    allocation: FloatArray  # (reps, B, K) allocation probabilities in force in the interval
    held: BoolArray  # (reps, B, K) arms the gate held in the interval
    p_violates: FloatArray  # (reps, B, K) P(violates any guardrail); NaN without guardrails
    pulls: FloatArray  # (reps, K)
    seconds: float

    def first_held(self, arm: int) -> FloatArray:
        """Per replication, the decisions made when the gate first held ``arm`` (inf: never)."""
        held = self.held[:, :, arm]
        first = np.argmax(held, axis=1)
        return np.where(held.any(axis=1), self.starts[first].astype(np.float64), np.inf)

    def held_to_the_end(self, arm: int) -> BoolArray:
        """Per replication, whether ``arm`` was held from its first hold to the end."""
        held = self.held[:, :, arm]
        started = np.maximum.accumulate(held, axis=1)
        return np.asarray(held.any(axis=1) & np.all(held == started, axis=1), dtype=np.bool_)

    def flips(self) -> IntArray:
        """Per replication, how many times the gate turned on (any arm)."""
        previous = np.concatenate([np.zeros_like(self.held[:, :1]), self.held[:, :-1]], axis=1)
        return np.asarray((self.held & ~previous).sum(axis=(1, 2)), dtype=np.int64)


def _intervals(horizon: int, update_every: int) -> tuple[IntArray, IntArray]:
    starts = np.arange(0, horizon, update_every, dtype=np.int64)
    return starts, np.minimum(starts + update_every, horizon).astype(np.int64)


def _replicate(policy: GuardrailPolicy, world: GuardrailWorld, horizon: int,
               update_every: int, world_rng: np.random.Generator,
               policy_rng: np.random.Generator, regret: FloatArray, infeasible: FloatArray,
               allocation: FloatArray, held_out: BoolArray, p_violates: FloatArray,
               pulls: FloatArray) -> None:
    """One replication (see the module notes), writing its rows."""
    k, family = world.n_arms, world.family
    settings = policy.policy_settings(world.control)
    prior = _prior(world.primary)
    stats = np.zeros((3, k))
    counts = np.zeros(k)
    guard_stats = [np.zeros((3, k)) for _ in world.guardrails]
    feasible = world.feasible
    gaps, bad = world.gaps, (~feasible).astype(np.float64)
    held = np.zeros(k, dtype=np.bool_)
    total_regret = total_bad = 0.0
    starts, stops = _intervals(horizon, update_every)
    for b, (start, stop) in enumerate(zip(starts.tolist(), stops.tolist(), strict=True)):
        if policy.name == "constrained":
            guards = [metric.guard(s, counts) for metric, s
                      in zip(world.guardrails, guard_stats, strict=True)]
            guarded = guarded_allocation(family, stats, counts, prior, settings, None, guards,
                                         world.control, policy.gate, held)
            probabilities, held = guarded.probabilities, guarded.held
            p_violates[b] = guarded.p_violates_any
        else:
            active = feasible if policy.name == "oracle-feasible" else None
            probabilities = allocation_probabilities(family, stats, counts, prior, settings,
                                                     active)
            p_violates[b] = np.nan
        allocation[b] = probabilities
        held_out[b] = held
        n = stop - start
        arms = sample_arms(cumulative(probabilities), n, policy_rng)
        primary, guardrail_values = world.outcomes(world_rng, n)
        rows = np.arange(n)
        _add(world.primary, stats, arms, primary[rows, arms])
        for metric, s, values in zip(world.guardrails, guard_stats, guardrail_values,
                                     strict=True):
            _add(metric.kind, s, arms, values[rows, arms])
        chosen = np.bincount(arms, minlength=k).astype(np.float64)
        counts += chosen
        total_regret += float(chosen @ gaps)
        total_bad += float(chosen @ bad)
        regret[b] = total_regret
        infeasible[b] = total_bad
    pulls[:] = counts


def simulate_guardrails(
    policies: Sequence[GuardrailPolicy], world: GuardrailWorld, *, horizon: int, reps: int,
    seed: int, update_every: int = 100, threads: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[GuardrailResult]:
    """``reps`` replications of every policy on ``world`` (see the module notes); ``threads``
    (default: all cores) changes only the speed. ``progress`` gets 1 per replication."""
    for name, value in (("horizon", horizon), ("reps", reps), ("update_every", update_every)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads!r}")
    for policy in policies:  # only what the service would accept
        check_with_service(policy, world)
    starts, stops = _intervals(horizon, update_every)
    n_intervals, k = starts.shape[0], world.n_arms
    results = []
    for policy in policies:
        regret = np.zeros((reps, n_intervals))
        infeasible = np.zeros((reps, n_intervals))
        allocation = np.zeros((reps, n_intervals, k))
        held = np.zeros((reps, n_intervals, k), dtype=np.bool_)
        p_violates = np.zeros((reps, n_intervals, k))
        pulls = np.zeros((reps, k))

        def replication(i: int, policy: GuardrailPolicy = policy, regret: FloatArray = regret,
                        infeasible: FloatArray = infeasible, allocation: FloatArray = allocation,
                        held: BoolArray = held, p_violates: FloatArray = p_violates,
                        pulls: FloatArray = pulls) -> None:
            world_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i, 0)))
            policy_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i, 1)))
            _replicate(policy, world, horizon, update_every, world_rng, policy_rng, regret[i],
                       infeasible[i], allocation[i], held[i], p_violates[i], pulls[i])

        started = time.perf_counter()
        run_replications(replication, reps, threads, progress)
        results.append(GuardrailResult(policy.label, starts, stops, regret, infeasible,
                                       allocation, held, p_violates, pulls,
                                       time.perf_counter() - started))
    return results


# --- Scenarios -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuardrailScenario:
    name: str
    description: str
    world: GuardrailWorld
    horizon: int


def _harmful_best(quality: list[float]) -> GuardrailWorld:
    return GuardrailWorld("bernoulli", np.array([0.10, 0.11, 0.12, 0.13]), (
        GuardrailMetric("quality", "gaussian", np.array(quality), higher=True, threshold=-0.02,
                        relative=True, correlation=-0.3, noise_sd=1.0),), control=0)


def _scenarios() -> dict[str, GuardrailScenario]:
    scenarios = [
        GuardrailScenario(
            "harmful-best",
            "4 Bernoulli arms, control 0.10, then 0.11, 0.12 and 0.13; a Gaussian guardrail "
            "(mean 10, sd 1, higher is better, no worse than 2% below control) that the best "
            "primary arm (3) breaks by 5%; latent correlation -0.3 with the primary",
            _harmful_best([10.0, 10.0, 10.0, 9.5]), 20_000),
        GuardrailScenario(
            "null",
            "the harmful-best arms with no guardrail effect: every arm's guardrail mean is the "
            "control's (how often does the gate hold an arm by chance?)",
            _harmful_best([10.0, 10.0, 10.0, 10.0]), 5_000),
        GuardrailScenario(
            "clicks-up-revenue-down",
            "3 Bernoulli arms (click rates 0.050, 0.055, 0.060) with revenue per visit "
            "(Gaussian, sd 2, latent correlation -0.5 with the click) of 1.00, 0.99 and 0.90: "
            "the best clicking arm loses 10% of revenue (threshold: no worse than 2% below "
            "control), and a Bernoulli bounce rate (lower is better, at most 0.40 absolute)",
            GuardrailWorld("bernoulli", np.array([0.050, 0.055, 0.060]), (
                GuardrailMetric("revenue", "gaussian", np.array([1.00, 0.99, 0.90]),
                                higher=True, threshold=-0.02, relative=True,
                                correlation=-0.5, noise_sd=2.0),
                GuardrailMetric("bounce", "bernoulli", np.array([0.35, 0.36, 0.37]),
                                higher=False, threshold=0.40, relative=False,
                                correlation=0.2)), control=0), 50_000),
    ]
    return {scenario.name: scenario for scenario in scenarios}


GUARDRAIL_SCENARIOS: Mapping[str, GuardrailScenario] = MappingProxyType(_scenarios())


# --- Outputs ---------------------------------------------------------------------------------


def _mean_and_stderr(values: FloatArray) -> tuple[FloatArray, FloatArray]:
    reps = values.shape[0]
    mean = np.asarray(values.mean(axis=0), dtype=np.float64)
    if reps < 2:
        return mean, np.zeros_like(mean)
    return mean, np.asarray(values.std(axis=0, ddof=1) / math.sqrt(reps), dtype=np.float64)


def summary(results: Sequence[GuardrailResult], world: GuardrailWorld,
            settings: Mapping[str, Any]) -> dict[str, Any]:
    """Final regret and infeasible traffic per policy, with standard errors, and for each
    infeasible arm how often and when the gate held it."""
    infeasible_arms = np.flatnonzero(~world.feasible).tolist()
    policies: dict[str, Any] = {}
    for result in results:
        regret, regret_err = _mean_and_stderr(result.regret[:, -1])
        bad, bad_err = _mean_and_stderr(result.infeasible[:, -1])
        row: dict[str, Any] = {
            "final_mean_regret": float(regret), "final_regret_stderr": float(regret_err),
            "infeasible_decisions": float(bad), "infeasible_decisions_stderr": float(bad_err),
            "pulls_per_arm": [float(p) for p in result.pulls.mean(axis=0)],
            "replications_with_a_hold": int(np.count_nonzero(result.flips() > 0)),
            "seconds": result.seconds,
        }
        gate = {}
        for arm in infeasible_arms:
            first = result.first_held(arm)
            held = np.isfinite(first)
            gate[str(arm)] = {
                "replications_held": int(held.sum()),
                "held_to_the_end": int(result.held_to_the_end(arm).sum()),
                "first_held_median": float(np.median(first[held])) if held.any() else None,
                "first_held_max": float(first[held].max()) if held.any() else None,
            }
        row["gate"] = gate
        policies[result.policy] = row
    return {
        "settings": dict(settings),
        "world": {"primary": world.primary, "means": world.means.tolist(),
                  "control": world.control, "feasible": world.feasible.tolist(),
                  "best_feasible": world.best_feasible,
                  "guardrails": [{"name": m.name, "kind": m.kind, "means": m.means.tolist(),
                                  "higher": m.higher, "threshold": m.threshold,
                                  "relative": m.relative, "correlation": m.correlation,
                                  "level": m.level(world.control)}
                                 for m in world.guardrails]},
        "policies": policies,
    }


def write_guardrails(directory: Path, results: Sequence[GuardrailResult],
                     world: GuardrailWorld, settings: Mapping[str, Any]) -> dict[str, Any]:
    """summary.json, guardrails.csv (mean regret and infeasible decisions with their standard
    errors at the end of every refresh interval) and the plots of :func:`plot_guardrails`."""
    directory.mkdir(parents=True, exist_ok=True)
    document = summary(results, world, settings)
    (directory / "summary.json").write_text(json.dumps(_no_nan(document), indent=2) + "\n")
    lines = ["policy,t,mean_regret,regret_stderr,infeasible,infeasible_stderr"]
    for result in results:
        regret, regret_err = _mean_and_stderr(result.regret)
        bad, bad_err = _mean_and_stderr(result.infeasible)
        lines += [f"{result.policy},{t},{r:.6g},{re:.6g},{b:.6g},{be:.6g}" for t, r, re, b, be
                  in zip(result.checkpoints.tolist(), regret.tolist(), regret_err.tolist(),
                         bad.tolist(), bad_err.tolist(), strict=True)]
    (directory / "guardrails.csv").write_text("\n".join(lines) + "\n")
    plot_guardrails(directory, results, world)
    return document


def plot_guardrails(directory: Path, results: Sequence[GuardrailResult],
                    world: GuardrailWorld) -> None:
    """regret.png (mean primary regret per policy, 95% bands), infeasible.png (cumulative
    decisions on infeasible arms; the share of replications in which the gate holds each
    infeasible arm) and allocation.png (mean allocation per arm over time, per policy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    for result in results:
        mean, stderr = _mean_and_stderr(result.regret)
        (line,) = axes.plot(result.checkpoints, mean, label=result.policy)
        axes.fill_between(result.checkpoints, mean - 1.96 * stderr, mean + 1.96 * stderr,
                          alpha=0.2, color=line.get_color(), linewidth=0)
    axes.set_xlabel("decisions")
    axes.set_ylabel("mean cumulative primary regret")
    axes.set_title(f"Primary regret against the best feasible arm (arm {world.best_feasible})"
                   "\n(shaded: 95% interval of the mean)", fontsize="medium")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(directory / "regret.png", dpi=110)
    plt.close(figure)

    infeasible_arms = np.flatnonzero(~world.feasible).tolist()
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for result in results:
        mean, stderr = _mean_and_stderr(result.infeasible)
        (line,) = top.plot(result.checkpoints, mean, label=result.policy)
        top.fill_between(result.checkpoints, mean - 1.96 * stderr, mean + 1.96 * stderr,
                         alpha=0.2, color=line.get_color(), linewidth=0)
        if result.held.any():
            for arm in infeasible_arms:
                bottom.step(result.starts, result.held[:, :, arm].mean(axis=0), where="post",
                            label=f"{result.policy}, arm {arm}")
    top.set_ylabel("decisions on infeasible arms")
    top.set_title(f"Traffic to truly infeasible arms {infeasible_arms} (cumulative, mean)",
                  fontsize="medium")
    top.grid(True, alpha=0.3)
    top.legend()
    bottom.set_ylim(-0.02, 1.02)
    bottom.set_ylabel("share of replications held")
    bottom.set_xlabel("decisions")
    bottom.set_title("The hard gate: replications in which it holds the arm", fontsize="medium")
    bottom.grid(True, alpha=0.3)
    if bottom.get_lines():
        bottom.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(directory / "infeasible.png", dpi=110)
    plt.close(figure)

    figure, panels = plt.subplots(len(results), 1, figsize=(8, 2.6 * len(results)),
                                  squeeze=False, sharex=True)
    for panel, result in zip(panels[:, 0], results, strict=True):
        shares = result.allocation.mean(axis=0)
        labels = [f"arm {k}" + ("" if world.feasible[k] else " (infeasible)")
                  for k in range(world.n_arms)]
        panel.stackplot(result.starts, shares.T, labels=labels, step="post")
        panel.set_ylim(0, 1)
        panel.set_ylabel("allocation")
        panel.set_title(result.policy, fontsize="medium")
        panel.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small")
    panels[-1, 0].set_xlabel("decisions")
    figure.tight_layout()
    figure.savefig(directory / "allocation.png", dpi=110)
    plt.close(figure)
