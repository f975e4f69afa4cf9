"""Contextual Thompson sampling: the feature spec, the exact propensities, the posterior updates
in Redis (idempotent, order free, concurrent), and positive definiteness over long runs."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import scipy.integrate
import scipy.stats

from bandit import policy
from bandit.errors import InvalidValue
from bandit.features import LinearModel, parse_model
from bandit.model import parse_new_experiment
from bandit.policy import contextual
from bandit.serving.cache import MAX_CHOICES, build_snapshot
from bandit.serving.decisions import Choice
from bandit.store.codec import EncodedEvent, StoredState, arm_sums
from bandit.store.redis_store import APPLIED, DUPLICATE, RedisStore

SPEC = {"type": "linear", "features": [
    {"name": "region", "type": "categorical", "values": ["eu", "us"]},
    {"name": "recency", "type": "numeric", "scale": [0, 30], "default": 0},
    {"name": "query", "type": "hashed", "buckets": 4, "default": ""},
]}


# -- the feature spec ------------------------------------------------------------------------

def test_the_encoding_of_every_feature_type() -> None:
    model = parse_model(SPEC, "bernoulli")
    assert model.columns() == ["intercept", "region=eu", "region=us", "region=other",
                               "recency", "query#0", "query#1", "query#2", "query#3"]
    x = model.encode({"region": "us", "recency": 45, "query": "shoes"})
    bucket = 5 + __import__("zlib").crc32(b"shoes") % 4
    expected = np.zeros(9)
    expected[[0, 2, 4, bucket]] = 1.0  # recency 45 is clipped to the top of its scale
    np.testing.assert_array_equal(x, expected)
    # Values beyond the scale clip, however far (an integer no float holds included).
    for far in (1e308, 10**400):
        assert model.encode({"region": "us", "recency": far})[4] == 1.0
    assert model.encode({"region": "us", "recency": -1e308})[4] == 0.0
    # An undeclared value is "other", not an error; defaults fill absent features.
    np.testing.assert_array_equal(model.encode({"region": "fr"})[[1, 2, 3, 4]], [0, 0, 1, 0])


@pytest.mark.parametrize(("context", "message"), [
    ({"region": 1}, "context.region: expected a string, got a number"),
    ({"region": True}, "context.region: expected a string, got a boolean"),
    ({"region": "eu", "recency": "3"}, "context.recency: expected a number, got a string"),
    ({"region": "eu", "recency": math.nan}, "context.recency: must be finite"),
    ({"region": "eu", "recency": math.inf}, "context.recency: must be finite"),
    ({"region": "eu", "recency": -math.inf}, "context.recency: must be finite"),
    ({"recency": 1}, "context.region: required"),
    ({"region": None}, "context.region: null is not a value"),
    ([], "context: expected an object"),
])
def test_bad_contexts_name_the_feature(context: object, message: str) -> None:
    with pytest.raises(InvalidValue, match=message.replace("(", r"\(")):
        parse_model(SPEC, "bernoulli").encode(context)


def _feature(**fields: object) -> dict[str, object]:
    return {"type": "linear", "features": [{"name": "f", **fields}]}


@pytest.mark.parametrize(("spec", "message"), [
    ({"type": "tree", "features": []}, "model.type: must be 'linear'"),
    (_feature(type="numeric", scale=[3, 3]), "scale: low 3 is not below high 3"),
    (_feature(type="numeric", scale=[0]), "scale: expected \\[low, high\\]"),
    (_feature(type="numeric", scale=[0, 1], values=["a"]), "values: not a field of a numeric"),
    (_feature(type="categorical", values=["a", "a"]), "a value is listed twice"),
    (_feature(type="categorical", values=["other"]), "'other' is the column"),
    (_feature(type="categorical", values=[]), "non-empty list"),
    (_feature(type="hashed", buckets=1), "buckets: expected an integer from 2"),
    (_feature(type="numeric", scale=[0, 1], default="x"), "default: expected a finite number"),
    (_feature(type="ordinal"), "type: must be one of"),
    ({"type": "linear", "features": [{"name": "f", "type": "numeric", "scale": [0, 1]}] * 2},
     "'f' is declared twice"),
    ({"type": "linear", "features": [], "intercept": False}, "no columns"),
    ({"type": "linear", "features": [{"name": f"f{i}", "type": "numeric", "scale": [0, 1]}
                                     for i in range(64)]}, "65 columns"),
    ({"type": "linear", "features": [], "dimension": 3}, "the features make 1 columns"),
    ({"type": "linear", "features": [], "prior": {"precision": 0}}, "model.prior.precision"),
    (_feature(type="numeric", scale=[-1e308, 1e308]), "too wide or too narrow"),
    (_feature(type="numeric", scale=[0, 5e-324]), "too wide or too narrow"),
    (_feature(type="numeric", scale=[1e6, 1e6 + 1e-6]), "too wide or too narrow"),
    ({"type": "linear", "features": [], "version": True}, "model.version"),
    ({"type": "linear", "features": [], "dimension": True}, "model.dimension"),
    (_feature(type="categorical", values=["\u202eevil"]), "control characters"),
    (_feature(type="categorical", values=["a\x1b[31m"]), "control characters"),
    (_feature(type="hashed", buckets=4, default="x" * 201), "at most 200 characters"),
    ({"type": "linear", "features": [{"name": "f"}]}, "type: must be one of .* got null"),
])
def test_contradictory_or_oversized_specs_are_refused(spec: object, message: str) -> None:
    with pytest.raises(InvalidValue, match=message):
        parse_model(spec, "bernoulli")


def test_a_whole_float_is_an_integer_bucket_count() -> None:
    """JSON has one number type: ``9.0`` buckets is the integer 9, as the API's JSON Schema
    says (the fuzz found it refused as "expected an integer")."""
    model = parse_model(_feature(type="hashed", buckets=9.0), "bernoulli")
    assert model.features[0].buckets == 9


def test_the_largest_model_has_64_columns_and_survives_a_round_trip() -> None:
    spec = {"type": "linear", "features": [{"name": f"f{i}", "type": "numeric",
                                            "scale": [0, 1]} for i in range(63)]}
    experiment = parse_new_experiment({"id": "big", "arms": ["a", "b"], "reward": "gaussian",
                                       "model": spec}, 0.0)
    assert experiment.model is not None and experiment.model.dimension == 64
    assert type(experiment).from_json(experiment.to_json()) == experiment
    with pytest.raises(InvalidValue, match="prior: a contextual experiment's prior"):
        parse_new_experiment({"id": "p", "arms": ["a", "b"], "reward": "bernoulli",
                              "model": spec, "prior": {"alpha": 2}}, 0.0)


# -- exact propensities ----------------------------------------------------------------------

def _reference(loc: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """P(best) of independent normal scores by scipy's adaptive quadrature, per arm."""
    out = []
    for a in range(loc.shape[0]):
        others = [j for j in range(loc.shape[0]) if j != a]

        def integrand(t: float, a: int = a, others: list[int] = others) -> float:
            z = (t - loc[a]) / scale[a]
            value = math.exp(-0.5 * z * z) / (scale[a] * math.sqrt(2 * math.pi))
            for j in others:
                value *= 0.5 * math.erfc(-(t - loc[j]) / (scale[j] * math.sqrt(2)))
            return float(value)

        low, high = loc[a] - 9 * scale[a], loc[a] + 9 * scale[a]
        points = sorted({float(np.clip(p, low, high)) for p in
                         np.r_[loc - 3 * scale, loc, loc + 3 * scale]})
        out.append(scipy.integrate.quad(integrand, low, high, points=points, limit=500,
                                        epsabs=1e-13, epsrel=1e-12)[0])
    return np.array(out)


def test_propensities_match_adaptive_quadrature_within_1e_6() -> None:
    rng = np.random.default_rng(17)
    worst = 0.0
    for trial in range(200):
        k = int(rng.integers(2, 9))
        loc = rng.normal(0, 1, k)
        scale = np.exp(rng.normal(-1, 1.2, k))  # spreads over a factor of ~1000
        if trial % 4 == 0:
            loc = rng.normal(0, 0.01, k)  # a close race
        p = contextual._best_probabilities(loc, scale, np.ones(k, dtype=np.bool_))
        assert abs(p.sum() - 1.0) <= 1e-9
        worst = max(worst, float(np.abs(p - _reference(loc, scale)).max()))
    assert worst <= 1e-6, worst


def _trained(k: int, d: int, n: int, seed: int) -> tuple[LinearModel, np.ndarray, np.ndarray]:
    """A model of d - 1 numeric features and statistics rows after n observations."""
    rng = np.random.default_rng(seed)
    model = LinearModel(features=tuple(
        parse_model({"type": "linear", "features": [
            {"name": f"f{i}", "type": "numeric", "scale": [-3, 3]} for i in range(d - 1)]},
            "bernoulli").features))
    x = np.column_stack([np.ones(n), rng.uniform(0, 1, (n, d - 1))])
    arms = rng.integers(0, k, n)
    theta = rng.normal(0, 0.3, (k, d))
    rewards = (rng.random(n) < 1 / (1 + np.exp(-np.einsum("ij,ij->i", x, theta[arms])))
               ).astype(float)
    rows = np.zeros((k, contextual.stats_width(d)))
    contextual.add_observations(rows, arms, x, rewards, np.ones(n))
    return model, rows, x


def test_propensities_match_a_million_thompson_draws() -> None:
    """The law of the decisions (argmax of one score draw per arm) is the propensity vector:
    10^6 draws estimate each probability with a standard error <= 0.5e-3, so 1e-3 is 2 se
    at the worst (p = 0.5); the seed is fixed."""
    model, rows, contexts = _trained(k=5, d=4, n=300, seed=4)
    posterior = policy.ContextualPosterior.build(model, rows, np.full(5, 60.0),
                                                 policy.PolicySettings(), np.ones(5, bool))
    rng = np.random.default_rng(5)
    for x in contexts[:3]:
        p = posterior.probabilities(x)
        loc, scale = contextual.score_laws(x, posterior.means, posterior.factors,
                                           posterior.sigma2)
        draws = loc + scale * rng.standard_normal((1_000_000, 5))
        frequencies = np.bincount(np.argmax(draws, axis=1), minlength=5) / 1_000_000
        assert np.abs(frequencies - p).max() <= 1e-3, (frequencies, p)
        # The same scores drawn by the kernel the simulator uses.
        kernel = np.array([np.argmax(contextual.draw_scores(x, posterior.means,
                                                            posterior.factors,
                                                            posterior.sigma2, rng))
                           for _ in range(20_000)])
        assert np.abs(np.bincount(kernel, minlength=5) / 20_000 - p).max() <= 0.0175  # 5 se


def test_exploration_settings_fold_in_exactly() -> None:
    model, rows, contexts = _trained(k=4, d=3, n=2000, seed=8)
    x = contexts[0]
    counts = np.full(4, 500.0)
    active = np.ones(4, dtype=np.bool_)

    def probabilities(settings: policy.PolicySettings,
                      active: np.ndarray = active) -> np.ndarray:
        return policy.ContextualPosterior.build(model, rows, counts, settings,
                                                active).probabilities(x)

    plain = probabilities(policy.PolicySettings())
    assert abs(plain.sum() - 1) <= 1e-9
    np.testing.assert_allclose(probabilities(policy.PolicySettings(epsilon=0.2)),
                               0.8 * plain + 0.05, atol=1e-12)
    floored = probabilities(policy.PolicySettings(min_share=0.1))
    assert floored.min() >= 0.1 - 1e-12 and abs(floored.sum() - 1) <= 1e-9
    capped = probabilities(policy.PolicySettings(max_share=0.4))
    assert capped.max() <= 0.4 + 1e-12 and abs(capped.sum() - 1) <= 1e-9
    paused = probabilities(policy.PolicySettings(), np.array([True, False, True, True]))
    assert paused[1] == 0.0 and abs(paused.sum() - 1) <= 1e-9
    control = probabilities(policy.PolicySettings(control_index=2, control_share=0.3))
    assert control[2] == pytest.approx(0.3, abs=1e-12)
    warming = policy.ContextualPosterior.build(model, rows, np.array([500, 3, 500, 500.0]),
                                               policy.PolicySettings(warmup=10),
                                               active).probabilities(x)
    np.testing.assert_allclose(warming, 0.25, atol=1e-15)


def test_decisions_from_a_frozen_snapshot_follow_the_propensities() -> None:
    """Chi-square goodness of fit of 10^5 decisions drawn as the service draws them (a
    uniform and a binary search on the context's cumulative probabilities)."""
    model, rows, contexts = _trained(k=6, d=5, n=400, seed=9)
    posterior = policy.ContextualPosterior.build(model, rows, np.full(6, 70.0),
                                                 policy.PolicySettings(min_share=0.02),
                                                 np.ones(6, bool))
    p = posterior.probabilities(contexts[1])
    cdf = policy.cumulative(p).tolist()
    rng = np.random.default_rng(10)
    chosen = [policy.sample_one(cdf, u) for u in rng.random(100_000).tolist()]
    observed = np.bincount(chosen, minlength=6)
    statistic, p_value = scipy.stats.chisquare(observed, 100_000 * p)
    assert p_value > 0.001, (statistic, observed, p)


def test_the_store_sums_rows_as_the_kernel_does() -> None:
    model = parse_model(SPEC, "bernoulli")
    events, features = _events(model, 500, seed=14)
    weights = np.random.default_rng(15).uniform(0.2, 1.0, 500)
    rows = np.zeros((3, contextual.stats_width(model.dimension)))
    contextual.add_observations(rows, np.array([e.arm_index for e in events]), features,
                                np.array([e.reward for e in events]), weights)
    for arm, (row, count) in arm_sums(events, features, weights).items():
        np.testing.assert_allclose(row, rows[arm], rtol=1e-12, atol=1e-12)
        assert count == sum(e.arm_index == arm for e in events)


def test_posterior_factors_match_the_normal_inverse_gamma_update() -> None:
    model, rows, _ = _trained(k=2, d=4, n=500, seed=12)
    means, factors, sigma2, alphas = contextual.posterior_factors(
        rows, model.prior_precision(), np.zeros(4), model.alpha, model.beta, 1.0)
    w, _, squares = rows[0, :3]
    xy = rows[0, 3:7]
    upper = rows[0, 7:]
    gram = np.zeros((4, 4))
    gram[np.triu_indices(4)] = upper
    gram = gram + np.triu(gram, 1).T
    precision = np.diag(model.prior_precision()) + gram
    mean = np.linalg.solve(precision, xy)
    np.testing.assert_allclose(factors[0] @ factors[0].T, precision, rtol=1e-12)
    np.testing.assert_allclose(means[0], mean, rtol=1e-10)
    alpha = model.alpha + w / 2
    beta = model.beta + 0.5 * (squares - mean @ precision @ mean)
    assert alphas[0] == pytest.approx(alpha)
    assert sigma2[0] == pytest.approx(beta / alpha, rel=1e-10)


def test_the_precision_stays_positive_definite_over_a_million_updates_with_forgetting() -> None:
    """10^6 rank-one additions, each after decaying the sums (half-life 5,000 updates), with
    nearly collinear features: the stored precision is Lambda0 + a decayed sum of x x^T, so
    its smallest eigenvalue cannot fall below Lambda0's (rounding aside), and the Cholesky
    factor reproduces it."""
    d = 16
    rng = np.random.default_rng(13)
    rows = np.zeros((1, contextual.stats_width(d)))
    base = rng.normal(size=d)
    decay = 2.0 ** (-1 / 5000)
    for _ in range(1000):
        x = base + 1e-4 * rng.normal(size=(1000, d))  # nearly collinear columns
        weights = decay ** np.arange(999, -1, -1)
        rows *= decay**1000
        contextual.add_observations(rows, np.zeros(1000, dtype=np.int64), x,
                                    rng.normal(size=1000), weights)
    prior = np.full(d, 0.5)
    _, factors, sigma2, _ = contextual.posterior_factors(rows, prior, np.zeros(d), 1.0, 1.0,
                                                         1.0)
    gram = np.zeros((d, d))
    gram[np.triu_indices(d)] = rows[0, 3 + d:]
    precision = np.diag(prior) + gram + np.triu(gram, 1).T
    assert np.all(np.diag(factors[0]) > 0) and sigma2[0] > 0
    assert np.linalg.eigvalsh(precision).min() >= 0.5 * (1 - 1e-6)
    np.testing.assert_allclose(factors[0] @ factors[0].T, precision, rtol=1e-9, atol=1e-9)


# -- updates in Redis --------------------------------------------------------------------------

@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    store = RedisStore.from_url(redis_url, "test", timeout_s=5, max_connections=16)
    yield store
    await store.close()


async def _contextual(store: RedisStore, experiment_id: str, half_life: float | None = None
                      ) -> LinearModel:
    body: dict[str, object] = {"id": experiment_id, "arms": ["a", "b", "c"],
                               "reward": "bernoulli", "model": SPEC}
    if half_life is not None:
        body["exploration"] = {"half_life_s": half_life}
    experiment = parse_new_experiment(body, time.time())
    await store.delete_all(experiment_id)
    await store.create(experiment, {"action": "create"})
    assert experiment.model is not None
    return experiment.model


def _events(model: LinearModel, n: int, seed: int, prefix: str = "e"
            ) -> tuple[list[EncodedEvent], np.ndarray]:
    rng = np.random.default_rng(seed)
    regions = ["eu", "us", "fr"]
    features = np.vstack([model.encode({"region": regions[int(rng.integers(3))],
                                        "recency": float(rng.uniform(0, 40)),
                                        "query": str(rng.integers(100))}) for _ in range(n)])
    events = [EncodedEvent(f"{prefix}{i}", int(rng.integers(3)), float(rng.random() < 0.3),
                           None, None) for i in range(n)]
    return events, features


async def _apply(store: RedisStore, experiment_id: str, events: list[EncodedEvent],
                 features: np.ndarray) -> list[int]:
    statuses = await store.apply_contextual(experiment_id, events, features,
                                            np.ones(len(events)), time.time(), 86_400)
    assert statuses is not None
    return statuses


async def _rows(store: RedisStore, experiment_id: str) -> tuple[np.ndarray, np.ndarray]:
    state = await store.read(experiment_id)
    assert state is not None and state.rows is not None
    return state.rows, state.counts


def _expected(events: list[EncodedEvent], features: np.ndarray) -> np.ndarray:
    rows = np.zeros((3, contextual.stats_width(features.shape[1])))
    contextual.add_observations(rows, np.array([e.arm_index for e in events]), features,
                                np.array([e.reward for e in events]), np.ones(len(events)))
    return rows


async def test_the_same_events_three_times_count_once(store: RedisStore) -> None:
    model = await _contextual(store, "idem")
    events, features = _events(model, 300, seed=1)
    assert await _apply(store, "idem", events, features) == [APPLIED] * 300
    for _ in range(2):
        assert await _apply(store, "idem", events, features) == [DUPLICATE] * 300
    rows, counts = await _rows(store, "idem")
    np.testing.assert_allclose(rows, _expected(events, features), rtol=1e-12, atol=1e-12)
    assert counts.sum() == 300
    # A batch half made of resent events: only the new half counts (the sums are redone).
    more, more_features = _events(model, 100, seed=2, prefix="f")
    statuses = await _apply(store, "idem", events[:100] + more,
                            np.vstack([features[:100], more_features]))
    assert statuses == [DUPLICATE] * 100 + [APPLIED] * 100
    rows, _ = await _rows(store, "idem")
    np.testing.assert_allclose(rows, _expected(events + more, np.vstack([features,
                                                                         more_features])),
                               rtol=1e-12, atol=1e-12)


async def test_shuffled_events_give_the_same_statistics(store: RedisStore) -> None:
    model = await _contextual(store, "order-a")
    await _contextual(store, "order-b")
    events, features = _events(model, 10_000, seed=3)
    order = np.random.default_rng(4).permutation(10_000)
    for start in range(0, 10_000, 1000):
        chunk = list(range(start, start + 1000))
        await _apply(store, "order-a", [events[i] for i in chunk], features[chunk])
        shuffled = order[start:start + 1000]
        await _apply(store, "order-b", [events[i] for i in shuffled], features[shuffled])
    a, _ = await _rows(store, "order-a")
    b, _ = await _rows(store, "order-b")
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a, _expected(events, features), rtol=1e-9, atol=1e-12)


async def test_eight_concurrent_writers_lose_nothing(redis_url: str, store: RedisStore) -> None:
    """Eight writers (own connections) send overlapping batches at once: every event id
    counts exactly once, whichever writer's batch it arrived in first."""
    model = await _contextual(store, "busy")
    events, features = _events(model, 4000, seed=6)
    picks = [np.random.default_rng(seed).permutation(4000)[:2000] for seed in range(8)]
    writers = [RedisStore.from_url(redis_url, "test", timeout_s=5, max_connections=2)
               for _ in range(8)]
    one_by_one = 0  # second calls: a batch whose statuses changed under a concurrent writer

    for writer in writers:
        run = writer._scripts.run

        async def counting(calls: Any, *, wait: bool, raw: bool = False,
                           run: Any = run) -> list[Any]:
            nonlocal one_by_one
            one_by_one += sum(1 for call in calls if "*" in call[2][4:5])  # ARGV[5]: mode
            return list(await run(calls, wait=wait, raw=raw))

        writer._scripts.run = counting  # type: ignore[method-assign]

    async def write(writer: RedisStore, mine: np.ndarray) -> int:
        applied = 0
        for start in range(0, 2000, 250):
            chunk = mine[start:start + 250]
            statuses = await _apply(writer, "busy", [events[i] for i in chunk], features[chunk])
            applied += statuses.count(APPLIED)
        return applied

    try:
        applied = await asyncio.gather(*(write(w, mine)
                                         for w, mine in zip(writers, picks, strict=True)))
    finally:
        for writer in writers:
            await writer.close()
    rows, counts = await _rows(store, "busy")
    assert one_by_one > 0  # the contended path was taken
    assert sum(applied) == counts.sum()
    chosen = sorted(set(np.concatenate(picks).tolist()))  # every event some writer sent
    assert counts.sum() == len(chosen)
    np.testing.assert_allclose(rows, _expected([events[i] for i in chosen], features[chosen]),
                               rtol=1e-9, atol=1e-9)


async def test_forgetting_decays_the_stored_sums(store: RedisStore) -> None:
    model = await _contextual(store, "fading", half_life=1.0)
    events, features = _events(model, 200, seed=11)
    await _apply(store, "fading", events, features)
    first, _ = await _rows(store, "fading")
    await asyncio.sleep(1.0)
    more, more_features = _events(model, 1, seed=12, prefix="g")
    await _apply(store, "fading", more, more_features)
    second, counts = await _rows(store, "fading")
    arm = more[0].arm_index
    # One half-life later (and a little more: the script's clock runs on), then one event.
    ratio = (second[arm, 0] - 1.0) / first[arm, 0]
    assert 0.4 < ratio <= 0.5, ratio
    assert counts.sum() == 201  # raw counts are never forgotten


async def test_a_gaussian_model_recovers_its_coefficients(store: RedisStore) -> None:
    """r = 2 + 3 x + N(0, 0.5^2) on arm 0: the posterior mean of each coefficient is within
    4 posterior standard deviations of the truth (a 6e-5 chance each of failing by bad luck,
    for this fixed seed a deterministic check), and the noise scale is estimated."""
    spec = {"type": "linear", "features": [{"name": "x", "type": "numeric", "scale": [0, 1]}]}
    experiment = parse_new_experiment({"id": "line", "arms": ["a", "b"], "reward": "gaussian",
                                       "model": spec, "exploration": {"half_life_s": 1e9}},
                                      time.time())
    await store.delete_all("line")
    await store.create(experiment, {"action": "create"})
    rng = np.random.default_rng(16)
    x = rng.uniform(0, 1, 2000)
    rewards = 2 + 3 * x + rng.normal(0, 0.5, 2000)
    events = [EncodedEvent(f"l{i}", 0, float(r), None, None) for i, r in enumerate(rewards)]
    features = np.column_stack([np.ones(2000), x])
    assert await _apply(store, "line", events, features) == [APPLIED] * 2000
    state = await store.read("line")
    assert state is not None
    snapshot = build_snapshot(state)
    posterior = snapshot.contextual
    assert posterior is not None
    summary = posterior.coefficients()
    sd = (summary.ci_high[0] - summary.ci_low[0]) / (2 * 1.96)
    assert np.all(np.abs(summary.mean[0] - [2.0, 3.0]) <= 4 * sd), (summary.mean[0], sd)
    assert math.sqrt(posterior.sigma2[0]) == pytest.approx(0.5, rel=0.05)
    # The untouched arm keeps its prior: mean 0, and the context-free marginals say n = 0.
    np.testing.assert_array_equal(summary.mean[1], [0.0, 0.0])
    assert snapshot.counts.tolist() == [2000.0, 0.0]


def test_a_repeated_context_reuses_its_allocation_until_the_snapshot_changes() -> None:
    experiment = parse_new_experiment({"id": "rep", "arms": ["a", "b", "c"],
                                       "reward": "bernoulli", "model": SPEC}, 0.0)
    assert experiment.model is not None
    rows = np.zeros((3, contextual.stats_width(experiment.model.dimension)))
    rows[:, 0], rows[:, 1], rows[:, 3] = 50.0, [10.0, 20.0, 30.0], 50.0
    state = StoredState(experiment, np.zeros((3, 3)), np.full(3, 50.0), np.zeros(3), 1, 0.0,
                        rows)
    snapshot = build_snapshot(state)
    first = Choice.of(snapshot, {"region": "eu", "recency": 3})
    assert Choice.of(snapshot, {"region": "eu", "recency": 3, "ignored": 1}) is first
    # "fr" and "de" are both "other": the same features, the same allocation and segments.
    other = Choice.of(snapshot, {"region": "fr"})
    assert Choice.of(snapshot, {"region": "de"}) is other
    assert other.segments == ("region=other",) and other is not first
    np.testing.assert_array_equal(first.probabilities, snapshot.contextual.allocation(  # type: ignore[union-attr]
        parse_model(SPEC, "bernoulli").encode({"region": "eu", "recency": 3}))[0])
    fresh = build_snapshot(state)  # a refresh: computed again, equal
    assert Choice.of(fresh, {"region": "eu", "recency": 3}) is not first
    for recency in range(MAX_CHOICES + 5):
        Choice.of(fresh, {"region": "us", "recency": recency / 1000})
    assert len(fresh.choices) <= MAX_CHOICES
