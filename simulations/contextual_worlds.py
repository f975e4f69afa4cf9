"""Contextual environments ("worlds"): a context each round, and what every arm pays in it.

A :class:`ContextualWorld` draws a :class:`Stream` for one replication: the contexts of T
rounds, the expected reward of every arm in each of them, mu[t, a], and a potential outcome
r[t, a] for every arm (Bernoulli(mu[t, a]), or mu[t, a] plus N(0, noise_sd^2) noise), so that
every policy of a comparison meets the same contexts and the same rewards. The regret of round
t is max_a mu[t, a] - mu[t, a_t] (pseudo-regret: the noise of the reward is left out).

Worlds (K arms, d context dimensions):

- ``obp-logistic`` (Bernoulli): the Open Bandit Pipeline's
  ``SyntheticBanditDataset(n_actions=K, dim_context=d, reward_type="binary",
  reward_function=logistic_reward_function, random_state=seed)``, reproduced: contexts
  x ~ N(0, I_d), the first draws of ``RandomState(seed)``; coefficients theta_a ~ U(0, 1)^d
  and intercepts b_a ~ U(0, 1) from a fresh ``RandomState(seed)``; mu = sigmoid(x . theta_a +
  b_a). obp samples the reward of its logged action only; a bandit needs every arm's, drawn
  here as 1[u < mu] with u uniform from ``default_rng(seed)``.
  ``benchmarks/bench_contextual_regret.py`` checks the contexts and mu against obp's own code.
- ``linear`` (Bernoulli or Gaussian): x ~ U(0, 1)^d, mu = 0.1 + 0.4 b_a + 0.4 (x . w_a) / d with
  b_a, w_a ~ U(0, 1): linear in x and inside [0.1, 0.9], so a valid Bernoulli mean.
- ``segments`` (Bernoulli): one categorical context, the segment s ~ uniform over S values;
  mu[s, a] ~ U(0.05, 0.15) except arm s mod K of segment s, which pays 0.35: the best arm differs
  by segment and no single arm is good everywhere (a context-free policy loses about
  0.35 - (0.35 + 0.1 (S - 1)) / S per round).

Each world also declares the :class:`~bandit.features.LinearModel` a contextual experiment of
the service would use for it (intercept plus the features below, the service's default prior
for the reward), and turns its contexts into the request objects that model encodes:

- ``obp-logistic``: numeric features ``x0 .. x{d-1}`` with the fixed scale [-4, 4] (the N(0, 1)
  contexts leave it with probability 6e-5 per value, and are then clipped);
- ``linear``: numeric features with scale [0, 1];
- ``segments``: a categorical feature ``segment`` declaring its S values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from bandit.features import DEFAULT_NOISE, Feature, LinearModel
from bandit.policy.layout import FloatArray, IntArray

__all__ = ["WORLDS", "ContextualWorld", "Stream", "obp_logistic_expected"]

WorldKind = Literal["obp-logistic", "linear", "segments"]
WORLDS: tuple[WorldKind, ...] = ("obp-logistic", "linear", "segments")
#: Numeric scale of the N(0, 1) contexts of ``obp-logistic``.
OBP_SCALE = (-4.0, 4.0)
#: Mean of the best arm of a segment, and the range of the others (``segments``).
SEGMENT_BEST, SEGMENT_LOW, SEGMENT_HIGH = 0.35, 0.05, 0.15


@dataclass(frozen=True)
class Stream:
    """One replication's rounds: contexts, expected rewards and potential outcomes."""

    contexts: FloatArray  # (T, m) raw context values (segments: the segment index, as float)
    expected: FloatArray  # (T, K) mu[t, a]
    rewards: FloatArray  # (T, K) the reward arm a would get at round t
    segments: IntArray | None  # (T,) segment of each round, for worlds that have segments

    @property
    def best(self) -> FloatArray:
        return np.asarray(self.expected.max(axis=1), dtype=np.float64)


def obp_logistic_expected(contexts: FloatArray, n_arms: int, seed: int) -> FloatArray:
    """obp's ``logistic_reward_function(context, eye(K), random_state=seed)``, vectorised."""
    state = np.random.RandomState(seed)
    theta = state.uniform(size=(n_arms, contexts.shape[1]))
    intercepts = state.uniform(size=n_arms)
    return np.asarray(1.0 / (1.0 + np.exp(-(contexts @ theta.T + intercepts))), dtype=np.float64)


@dataclass(frozen=True)
class ContextualWorld:
    """What a contextual simulation runs against (see the module notes for each kind)."""

    kind: WorldKind = "obp-logistic"
    reward: Literal["bernoulli", "gaussian"] = "bernoulli"
    n_arms: int = 10
    dim: int = 5
    segments: int = 4
    noise_sd: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in WORLDS:
            raise ValueError(f"world must be one of {', '.join(WORLDS)}, got {self.kind!r}")
        if self.reward not in ("bernoulli", "gaussian"):
            raise ValueError(f"reward must be bernoulli or gaussian, got {self.reward!r}")
        if self.reward == "gaussian" and self.kind != "linear":
            raise ValueError(f"the {self.kind} world pays Bernoulli rewards only")
        if not 2 <= self.n_arms <= 64:
            raise ValueError(f"arms must be from 2 to 64, got {self.n_arms}")
        if not 1 <= self.dim <= 63:
            raise ValueError(f"dim must be from 1 to 63, got {self.dim}")
        if not 2 <= self.segments <= 63:
            raise ValueError(f"segments must be from 2 to 63, got {self.segments}")
        if not self.noise_sd > 0.0:
            raise ValueError(f"noise_sd must be > 0, got {self.noise_sd}")

    @property
    def family(self) -> Literal["bernoulli", "gaussian"]:
        return self.reward

    @property
    def has_segments(self) -> bool:
        return self.kind == "segments"

    def model(self) -> LinearModel:
        """The service's model of this world's contexts (intercept and features)."""
        if self.kind == "segments":
            values = tuple(f"s{s}" for s in range(self.segments))
            features: tuple[Feature, ...] = (Feature("segment", "categorical", values=values),)
        else:
            scale = OBP_SCALE if self.kind == "obp-logistic" else (0.0, 1.0)
            features = tuple(Feature(f"x{j}", "numeric", scale=scale) for j in range(self.dim))
        return LinearModel(features=features, beta=DEFAULT_NOISE[self.reward]["beta"])

    def requests(self, stream: Stream) -> list[dict[str, str | float]]:
        """The request context of every round, as a client of the service would send it."""
        if self.kind == "segments":
            return [{"segment": f"s{int(s)}"} for s in stream.contexts[:, 0]]
        return [{f"x{j}": float(v) for j, v in enumerate(row)} for row in stream.contexts]

    def stream(self, rounds: int, seed: int) -> Stream:
        """The rounds of replication ``seed`` (the same seed, the same stream)."""
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        k = self.n_arms
        if self.kind == "obp-logistic":
            state = np.random.RandomState(seed)
            contexts = state.normal(size=(rounds, self.dim))
            expected = obp_logistic_expected(contexts, k, seed)
            outcomes = np.random.default_rng(seed).random((rounds, k))
            return Stream(contexts, expected, (outcomes < expected).astype(np.float64), None)
        rng = np.random.default_rng(seed)
        if self.kind == "linear":
            base, weights = rng.random(k), rng.random((k, self.dim))
            contexts = rng.random((rounds, self.dim))
            expected = 0.1 + 0.4 * base + 0.4 * (contexts @ weights.T) / self.dim
            segments = None
        else:
            table = rng.uniform(SEGMENT_LOW, SEGMENT_HIGH, (self.segments, k))
            table[np.arange(self.segments), np.arange(self.segments) % k] = SEGMENT_BEST
            segments = rng.integers(0, self.segments, rounds)
            contexts = segments[:, None].astype(np.float64)
            expected = table[segments]
        if self.reward == "gaussian":
            rewards = expected + self.noise_sd * rng.standard_normal((rounds, k))
        else:
            rewards = (rng.random((rounds, k)) < expected).astype(np.float64)
        return Stream(contexts, np.ascontiguousarray(expected), rewards, segments)
