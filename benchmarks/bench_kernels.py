"""Decision cost from cached probabilities versus fresh Thompson draws, and policy recompute time.

Run: ``python -m benchmarks.bench_kernels``. Every ratio is against a baseline measured in the
same run, after the JIT has been warmed up. For K in {2, 10, 100, 1000}, single decisions and
batches of 10000 are timed from the cached allocation probabilities, by drawing K Betas in
numba (the baseline) and in numpy, and with MABWiser's ThompsonSampling when it is installed
(``pip install mabwiser``: a peer, not a dependency).
"""

from __future__ import annotations

import functools
import importlib
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bandit import policy
from bandit.policy import BERNOULLI, PolicySettings, allocation, posteriors, sampling
from bandit.policy.layout import FloatArray

PRIOR = np.array([1.0, 1.0, 0.0, 0.0])
BATCH = 10_000


def median_ns(function: Callable[[], object], repeats: int = 21, inner: int = 1) -> float:
    """Median wall time of ``inner`` back-to-back calls, per call, in nanoseconds."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(inner):
            function()
        samples.append((time.perf_counter_ns() - start) / inner)
    return statistics.median(samples)


def stats_after_data(n_arms: int, rng: np.random.Generator) -> FloatArray:
    """Distinct, overlapping posteriors: 2000 observations per arm, rates in [0.05, 0.07]."""
    successes = rng.binomial(2000, rng.uniform(0.05, 0.07, n_arms)).astype(np.float64)
    return np.array([successes, 2000.0 - successes, np.zeros(n_arms)])


def numpy_thompson(rng: np.random.Generator, alpha: FloatArray, beta: FloatArray) -> object:
    """The baseline: one Beta draw per arm and decision, argmax, all in numpy."""
    return rng.beta(alpha, beta, size=(BATCH, alpha.shape[0])).argmax(1)


def per_decision(rng: np.random.Generator) -> None:
    n_arms = 10
    stats = stats_after_data(n_arms, rng)
    active = np.ones(n_arms, dtype=np.bool_)
    probabilities = policy.allocation_probabilities(
        BERNOULLI, stats, stats[0] + stats[1], PRIOR, PolicySettings(), active
    )
    cdf = policy.cumulative(probabilities)
    cdf_list = cdf.tolist()
    uniform = random.Random(1).random

    rows = {
        "cached, batch of 10000 in numba": median_ns(lambda: sampling.sample_arms(cdf, BATCH, rng))
        / BATCH,
        "cached, sampling.sample_arms(n=1)": median_ns(
            lambda: sampling.sample_arms(cdf, 1, rng), inner=1000
        ),
        "cached, policy.sample_arms(n=1)": median_ns(
            lambda: policy.sample_arms(cdf, 1, rng), inner=1000
        ),
        "cached, policy.sample_one (pure Python)": median_ns(
            lambda: policy.sample_one(cdf_list, uniform()), inner=1000
        ),
    }
    baseline_batch = (
        median_ns(
            lambda: posteriors.thompson_choices(BERNOULLI, stats, PRIOR, 1.0, BATCH, rng, active)
        )
        / BATCH
    )
    baseline_call = median_ns(
        lambda: posteriors.thompson_choices(BERNOULLI, stats, PRIOR, 1.0, 1, rng, active),
        inner=1000,
    )
    print("(1) one decision, K=10: cached probabilities vs 10 Beta draws + argmax")
    print(f"    baseline in numba, batched: {baseline_batch:9.1f} ns/decision")
    print(f"    baseline numba, one call:   {baseline_call:9.1f} ns/decision")
    print(f"    {'method':42s} {'ns':>9s} {'/batched':>9s} {'/per-call':>9s}")
    for name, value in rows.items():
        print(
            f"    {name:42s} {value:9.1f} {value / baseline_batch:9.3f}"
            f" {value / baseline_call:9.3f}"
        )
    single = rows["cached, policy.sample_one (pure Python)"] / baseline_call
    batch = rows["cached, batch of 10000 in numba"] / baseline_batch
    mixed = rows["cached, policy.sample_one (pure Python)"] / baseline_batch
    print(f"    target <= 0.1x: one cached decision / one decision drawing 10 Betas "
          f"{single:.3f}x; in batches {batch:.3f}x;\n    (one cached decision against a "
          f"batched draw's share, not like for like: {mixed:.2f}x)")


def numpy_single(rng: np.random.Generator, alpha: FloatArray, beta: FloatArray) -> object:
    """One decision in numpy: K Beta draws and an argmax."""
    return int(rng.beta(alpha, beta).argmax())


def mabwiser_model(n_arms: int, stats: FloatArray) -> Any | None:
    """MABWiser's ThompsonSampling fitted to the same counts (None when not installed)."""
    try:
        mab = importlib.import_module("mabwiser.mab")
    except ImportError:
        return None
    model = mab.MAB(list(range(n_arms)), mab.LearningPolicy.ThompsonSampling(), seed=7)
    decisions = np.repeat(np.arange(n_arms), 2000)
    rewards = np.concatenate([np.r_[np.ones(int(s)), np.zeros(2000 - int(s))]
                              for s in stats[0]])
    model.fit(decisions, rewards)
    return model


Row = tuple[float, float, float, float | None]


def ratio(value: float, baseline: float) -> str:
    """``value / baseline`` to two significant digits, e.g. ``0.031x`` or ``27x``."""
    share = value / baseline
    return f"{share:.0f}x" if share >= 10 else f"{share:#.2g}".rstrip(".") + "x"


def measure_k(n_arms: int, rng: np.random.Generator) -> dict[str, Row]:
    """ns per decision for K = ``n_arms``: cached, numba draws, numpy draws, MABWiser."""
    stats = stats_after_data(n_arms, rng)
    alpha, beta = PRIOR[0] + stats[0], PRIOR[1] + stats[1]
    active = np.ones(n_arms, dtype=np.bool_)
    cdf = policy.cumulative(policy.allocation_probabilities(
        BERNOULLI, stats, stats[0] + stats[1], PRIOR, PolicySettings()))
    cdf_list = cdf.tolist()
    uniform = random.Random(1).random
    model = mabwiser_model(n_arms, stats)
    contexts = np.zeros((BATCH, 1))
    big = n_arms >= 1000
    inner = 20 if big else 200
    return {
        "single": (
            median_ns(lambda: policy.sample_one(cdf_list, uniform()), inner=1000),
            median_ns(lambda: posteriors.thompson_choices(BERNOULLI, stats, PRIOR, 1.0, 1, rng,
                                                       active), inner=inner),
            median_ns(functools.partial(numpy_single, rng, alpha, beta), inner=inner),
            None if model is None else median_ns(model.predict, repeats=5,
                                                 inner=5 if big else 50),
        ),
        "batch": (
            median_ns(functools.partial(sampling.sample_arms, cdf, BATCH, rng)) / BATCH,
            median_ns(lambda: posteriors.thompson_choices(BERNOULLI, stats, PRIOR, 1.0, BATCH, rng,
                                                       active), repeats=5 if big else 21)
            / BATCH,
            median_ns(functools.partial(numpy_thompson, rng, alpha, beta),
                      repeats=5 if big else 21) / BATCH,
            None if model is None else median_ns(lambda: model.predict(contexts),
                                                 repeats=1 if big else 3) / BATCH,
        ),
    }


def per_k(rng: np.random.Generator) -> None:
    print("\n(2) ns per decision, single and in batches of 10000: cached probabilities vs")
    print("    drawing K Betas in numba (the baseline), in numpy and with MABWiser's")
    print("    ThompsonSampling.predict; ratios against the numba draws")
    print(f"    {'K':>5s} {'mode':>6s} {'cached':>16s} {'numba draws':>11s} {'numpy':>16s} "
          f"{'MABWiser':>18s}")
    installed = True
    for n_arms in (2, 10, 100, 1000):
        for mode, (cached, numba_draws, numpy_draws, mabwiser) in measure_k(n_arms, rng).items():
            first = f"{cached:9.1f} {ratio(cached, numba_draws)}"
            third = f"{numpy_draws:9.0f} {ratio(numpy_draws, numba_draws)}"
            fourth = ("not installed" if mabwiser is None
                      else f"{mabwiser:10.0f} {ratio(mabwiser, numba_draws)}")
            installed = mabwiser is not None
            print(f"    {n_arms:5d} {mode:>6s} {first:>16s} {numba_draws:11.1f} {third:>16s} "
                  f"{fourth:>18s}")
    if not installed:
        print("    (MABWiser: `pip install mabwiser` into this environment to compare)")


def recompute(rng: np.random.Generator) -> None:
    print("\n(3) policy_probabilities recompute (quadrature), ms")
    print(f"    {'K':>5s} {'fresh':>9s} {'after data':>11s} {'top-two+floors':>15s}")
    table = policy.student_t_tail_table()
    plain = PolicySettings().as_array()
    tuned = PolicySettings(top_two=0.5, min_share=0.001, epsilon=0.05).as_array()
    for n_arms in (2, 10, 100, 1000):
        active = np.ones(n_arms, dtype=np.bool_)
        fresh = np.zeros((3, n_arms))
        data = stats_after_data(n_arms, rng)
        counts = data[0] + data[1]
        times = []
        for stats, chosen in ((fresh, plain), (data, plain), (data, tuned)):
            times.append(
                median_ns(
                    functools.partial(
                        allocation.policy_probabilities,
                        BERNOULLI,
                        stats,
                        counts,
                        PRIOR,
                        chosen,
                        active,
                        table,
                        np.random.default_rng(0),
                    ),
                    repeats=11 if n_arms <= 100 else 5,
                )
                / 1e6
            )
        print(f"    {n_arms:5d} {times[0]:9.3f} {times[1]:11.3f} {times[2]:15.3f}")


def main() -> None:
    start = time.perf_counter()
    policy.warm_up_kernels()
    print(f"JIT warm-up (compile or cache load): {time.perf_counter() - start:.2f} s\n")
    rng = np.random.default_rng(2024)
    per_decision(rng)
    per_k(rng)
    recompute(rng)


if __name__ == "__main__":
    main()
