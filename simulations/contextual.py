"""Contextual simulations: the service's contextual Thompson sampling and baselines on a
:class:`~simulations.contextual_worlds.ContextualWorld`, with delayed and batched feedback.

One replication walks a :class:`~simulations.contextual_worlds.Stream` round by round: the
policy chooses an arm for the round's context, the arm's potential outcome is its reward, and
the pseudo-regret max_a mu[t, a] - mu[t, a_t] is recorded. Feedback: the reward of round t
arrives ``delay`` rounds later (usable from the decision of round t + delay + 1 on; delay 0:
from the next round), and the policy takes in what has arrived only after every ``batch``-th
round (batch 1: after every round), as a service that refreshes its posteriors periodically.

Policies (:func:`parse_contextual_policy` reads ``name:key=value,...``), every one given the
feature vector x the world's :class:`~bandit.features.LinearModel` encodes
(``LinearModel.encode``, the service's own code):

- ``thompson``: the service's contextual Thompson sampling, its code end to end: statistics
  rows added by ``bandit.policy.contextual.add_observations``, posteriors factorised by
  ``ContextualPosterior.build`` at each refresh, and each decision drawn from
  ``ContextualPosterior.probabilities(x)`` with ``cumulative`` and ``sample_one``, exactly what
  the allocate endpoint serves (and the propensity it logs). Drawing one score per arm
  (``draw_scores``) and taking the argmax has the same law for the plain policy, but the
  probabilities fold in every exploration setting; settings ``epsilon``, ``min_share``,
  ``max_share``, ``temperature``, ``warmup``, and the prior: ``precision``,
  ``intercept_precision``, ``alpha``, ``beta`` (the model's defaults).
- ``linucb``: LinUCB (Li et al. 2010), ridge regression per arm with A = I + sum x x^T, index
  x . theta_hat + ``alpha`` sqrt(x^T A^-1 x) (alpha 1), ties at random.
- ``epsilon-greedy``: the same ridge estimate, greedy except with probability ``epsilon``
  (0.1), when the arm is uniform.
- ``context-free-thompson``: the service's context-free Thompson sampling
  (``bandit.policy.thompson_choices``: Beta(1, 1) prior for Bernoulli rewards, the service's
  normal-inverse-gamma default for Gaussian), blind to the context.
- ``segment-thompson``: the same, one independent posterior per segment (worlds with segments).
- ``uniform``: every arm with probability 1/K.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from bandit.features import LinearModel
from bandit.policy import (
    BERNOULLI,
    GAUSSIAN,
    ContextualPosterior,
    PolicySettings,
    cumulative,
    marginal_stats,
    sample_one,
    thompson_choices,
)
from bandit.policy.contextual import add_observations, stats_width
from bandit.policy.layout import FloatArray, IntArray
from simulations.contextual_worlds import ContextualWorld, Stream

__all__ = [
    "CONTEXTUAL_POLICIES",
    "ContextualPolicy",
    "ContextualResult",
    "ContextualSpec",
    "encode",
    "parse_contextual_policy",
    "run_stream",
    "simulate_contextual",
]

#: Each policy's settings and their defaults.
CONTEXTUAL_POLICIES: Mapping[str, Mapping[str, float]] = {
    "thompson": {"epsilon": 0.0, "min_share": 0.0, "max_share": 1.0, "temperature": 1.0,
                 "warmup": 0.0, "precision": math.nan, "intercept_precision": math.nan,
                 "alpha": math.nan, "beta": math.nan},
    "linucb": {"alpha": 1.0},
    "epsilon-greedy": {"epsilon": 0.1},
    "context-free-thompson": {},
    "segment-thompson": {},
    "uniform": {},
}


#: Settings that must be positive (a prior of zero precision or shape, or no temperature).
_POSITIVE = frozenset({"precision", "intercept_precision", "alpha", "beta", "temperature"})


class ContextualPolicy(Protocol):
    """What a replication asks of a policy: a decision per context, and the arrived rewards."""

    def choose(self, x: FloatArray, segment: int, rng: np.random.Generator) -> int: ...

    def learn(self, xs: FloatArray, segments: IntArray, arms: IntArray,
              rewards: FloatArray) -> None: ...


@dataclass(frozen=True)
class ContextualSpec:
    """A policy name and its settings (NaN: the model's own value)."""

    name: str
    settings: Mapping[str, float]
    label: str

    def build(self, world: ContextualWorld, model: LinearModel) -> ContextualPolicy:
        k, d = world.n_arms, model.dimension
        s = self.settings
        if self.name == "thompson":
            prior = {name: s[name] if not math.isnan(s[name]) else getattr(model, name)
                     for name in ("precision", "intercept_precision", "alpha", "beta")}
            tuned = dataclasses.replace(model, precision=prior["precision"],
                                        intercept_precision=prior["intercept_precision"],
                                        alpha=prior["alpha"], beta=prior["beta"])
            return ContextualThompson(tuned, k, PolicySettings(
                epsilon=s["epsilon"], min_share=s["min_share"], max_share=s["max_share"],
                temperature=s["temperature"], warmup=int(s["warmup"])))
        if self.name in ("linucb", "epsilon-greedy"):
            return RidgePolicy(k, d, ucb=s["alpha"] if self.name == "linucb" else 0.0,
                               epsilon=s.get("epsilon", 0.0))
        if self.name == "context-free-thompson":
            return SegmentThompson(world.family, k, 1)
        if self.name == "segment-thompson":
            if not world.has_segments:
                raise ValueError("segment-thompson needs a world with segments (--world "
                                 "segments)")
            return SegmentThompson(world.family, k, world.segments)
        if self.name == "uniform":
            return Uniform(k)
        raise ValueError(f"unknown contextual policy {self.name!r}")


def parse_contextual_policy(text: str) -> ContextualSpec:
    """``name`` or ``name:key=value,...`` (see the module notes for names and settings)."""
    name, _, raw = text.partition(":")
    if name not in CONTEXTUAL_POLICIES:
        raise ValueError(f"unknown contextual policy {name!r}; one of "
                         f"{', '.join(CONTEXTUAL_POLICIES)}")
    defaults = CONTEXTUAL_POLICIES[name]
    settings = dict(defaults)
    for item in filter(None, raw.split(",")):
        key, _, value = item.partition("=")
        if key not in defaults:
            raise ValueError(f"{name}: unknown setting {key!r}; settings: "
                             f"{', '.join(defaults) or 'none'}")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{name}: {key}={value!r} is not a number") from None
        if not math.isfinite(number) or number < 0.0:
            raise ValueError(f"{name}: {key} must be a finite number >= 0, got {value!r}")
        if number == 0.0 and key in _POSITIVE:
            raise ValueError(f"{name}: {key} must be > 0, got {value!r}")
        settings[key] = number
    return ContextualSpec(name, settings, text)


class ContextualThompson:
    """The service's contextual Thompson sampling (see the module notes)."""

    def __init__(self, model: LinearModel, n_arms: int, settings: PolicySettings) -> None:
        self.model, self.settings = model, settings
        self.rows = np.zeros((n_arms, stats_width(model.dimension)))
        self.counts = np.zeros(n_arms)
        self.active = np.ones(n_arms, dtype=np.bool_)
        self.posterior = self._build()

    def _build(self) -> ContextualPosterior:
        return ContextualPosterior.build(self.model, self.rows, self.counts, self.settings,
                                         self.active)

    def choose(self, x: FloatArray, segment: int, rng: np.random.Generator) -> int:
        return sample_one(cumulative(self.posterior.probabilities(x)).tolist(), rng.random())

    def learn(self, xs: FloatArray, segments: IntArray, arms: IntArray,
              rewards: FloatArray) -> None:
        add_observations(self.rows, arms, xs, rewards, np.ones(arms.shape[0]))
        self.counts += np.bincount(arms, minlength=self.counts.shape[0])
        self.posterior = self._build()


class RidgePolicy:
    """LinUCB (``ucb`` > 0) or epsilon-greedy on ridge estimates (ridge 1, as LinUCB's A = I).

    A^-1 is kept per arm by Sherman-Morrison updates, theta_hat = A^-1 b."""

    def __init__(self, n_arms: int, d: int, *, ucb: float, epsilon: float) -> None:
        self.inverse = np.tile(np.eye(d), (n_arms, 1, 1))
        self.b = np.zeros((n_arms, d))
        self.theta = np.zeros((n_arms, d))
        self.ucb, self.epsilon = ucb, epsilon

    def choose(self, x: FloatArray, segment: int, rng: np.random.Generator) -> int:
        n_arms = self.theta.shape[0]
        if self.epsilon > 0.0 and rng.random() < self.epsilon:
            return int(rng.integers(n_arms))
        index = self.theta @ x
        if self.ucb > 0.0:
            index = index + self.ucb * np.sqrt(np.einsum("i,kij,j->k", x, self.inverse, x))
        best = np.flatnonzero(index == index.max())
        return int(best[0] if best.shape[0] == 1 else rng.choice(best))

    def learn(self, xs: FloatArray, segments: IntArray, arms: IntArray,
              rewards: FloatArray) -> None:
        for x, arm, reward in zip(xs, arms.tolist(), rewards.tolist(), strict=True):
            inverse = self.inverse[arm]
            ax = inverse @ x
            inverse -= np.outer(ax, ax) / (1.0 + x @ ax)
            self.b[arm] += reward * x
        for arm in np.unique(arms).tolist():
            self.theta[arm] = self.inverse[arm] @ self.b[arm]


class SegmentThompson:
    """The service's context-free Thompson sampling, one posterior per segment (one segment:
    blind to the context). Sums w, sum r, sum r^2 per arm become the kernel's statistics by
    ``marginal_stats``; the prior is the service's default."""

    def __init__(self, family: str, n_arms: int, segments: int) -> None:
        self.family = BERNOULLI if family == "bernoulli" else GAUSSIAN
        self.prior = np.array([1.0, 1.0, 0.0, 0.0] if self.family == BERNOULLI
                              else [0.0, 0.01, 1.0, 1.0])
        self.sums = np.zeros((segments, n_arms, 3))

    def choose(self, x: FloatArray, segment: int, rng: np.random.Generator) -> int:
        row = segment if self.sums.shape[0] > 1 else 0
        stats = marginal_stats(self.family, self.sums[row])
        return int(thompson_choices(self.family, stats, self.prior, 1, rng)[0])

    def learn(self, xs: FloatArray, segments: IntArray, arms: IntArray,
              rewards: FloatArray) -> None:
        rows = segments if self.sums.shape[0] > 1 else np.zeros_like(segments)
        np.add.at(self.sums, (rows, arms), np.stack(
            [np.ones_like(rewards), rewards, rewards**2], axis=1))


class Uniform:
    def __init__(self, n_arms: int) -> None:
        self.n_arms = n_arms

    def choose(self, x: FloatArray, segment: int, rng: np.random.Generator) -> int:
        return int(rng.integers(self.n_arms))

    def learn(self, xs: FloatArray, segments: IntArray, arms: IntArray,
              rewards: FloatArray) -> None:
        pass


def encode(world: ContextualWorld, model: LinearModel, stream: Stream) -> FloatArray:
    """Every round's feature vector, by the service's ``LinearModel.encode``."""
    return np.array([model.encode(request) for request in world.requests(stream)])


def run_stream(choose: Callable[[int], int], learn: Callable[[int, int, IntArray], None],
               stream: Stream, *, delay: int, batch: int) -> tuple[IntArray, FloatArray]:
    """One replication's loop, for any decision maker: ``choose(t)`` picks round t's arm;
    ``learn(start, stop, arms)`` hands over rounds start .. stop-1 and the arms chosen in them.
    Returns the arms and the per-round pseudo-regret."""
    if delay < 0 or batch < 1:
        raise ValueError(f"delay must be >= 0 and batch >= 1, got {delay}, {batch}")
    rounds = stream.expected.shape[0]
    arms = np.zeros(rounds, dtype=np.int64)
    delivered = 0
    for t in range(rounds):
        arms[t] = choose(t)
        arrived = t - delay + 1  # rounds 0 .. t - delay have arrived after round t
        if (t + 1) % batch == 0 and arrived > delivered:
            learn(delivered, arrived, arms[delivered:arrived])
            delivered = arrived
    regret = stream.best - stream.expected[np.arange(rounds), arms]
    return arms, np.asarray(regret, dtype=np.float64)


def replicate(spec: ContextualSpec, world: ContextualWorld, stream: Stream, xs: FloatArray,
              *, delay: int, batch: int, rng: np.random.Generator) -> FloatArray:
    """Per-round pseudo-regret of one replication of ``spec`` on ``stream``."""
    policy = spec.build(world, world.model())
    segments = (stream.segments if stream.segments is not None
                else np.zeros(xs.shape[0], dtype=np.int64))

    def choose(t: int) -> int:
        return policy.choose(xs[t], int(segments[t]), rng)

    def learn(start: int, stop: int, arms: IntArray) -> None:
        policy.learn(xs[start:stop], segments[start:stop], arms,
                     stream.rewards[np.arange(start, stop), arms])

    return run_stream(choose, learn, stream, delay=delay, batch=batch)[1]


@dataclass(frozen=True)
class ContextualResult:
    """Per-round pseudo-regret of every replication of one policy."""

    policy: str
    regret: FloatArray  # (reps, T)
    seconds: float

    @property
    def cumulative(self) -> FloatArray:
        return np.asarray(np.cumsum(self.regret, axis=1), dtype=np.float64)

    def final(self) -> tuple[float, float]:
        """Mean cumulative regret at the horizon and its standard error over replications."""
        totals = self.regret.sum(axis=1)
        stderr = (float(totals.std(ddof=1)) / math.sqrt(totals.shape[0])
                  if totals.shape[0] > 1 else 0.0)
        return float(totals.mean()), stderr


def simulate_contextual(
    specs: list[ContextualSpec], world: ContextualWorld, *, horizon: int, reps: int, seed: int,
    delay: int = 0, batch: int = 1, progress: Callable[[int], None] | None = None,
) -> list[ContextualResult]:
    """``reps`` replications of every policy; replication i runs on stream ``seed + i`` with
    policy randomness from ``SeedSequence(seed, spawn_key=(i,))``, the same for every policy,
    so all policies meet the same contexts and rewards."""
    if horizon < 1 or reps < 1:
        raise ValueError(f"horizon and reps must be >= 1, got {horizon}, {reps}")
    model = world.model()
    regrets = {spec.label: np.zeros((reps, horizon)) for spec in specs}
    seconds = dict.fromkeys(regrets, 0.0)
    for i in range(reps):
        stream = world.stream(horizon, seed + i)
        xs = encode(world, model, stream)
        for spec in specs:
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i,)))
            started = time.perf_counter()
            regrets[spec.label][i] = replicate(spec, world, stream, xs, delay=delay,
                                               batch=batch, rng=rng)
            seconds[spec.label] += time.perf_counter() - started
            if progress is not None:
                progress(1)
    return [ContextualResult(label, regrets[label], seconds[label]) for label in regrets]
