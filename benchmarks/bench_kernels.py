"""Decision cost from cached probabilities versus fresh Thompson draws, and policy recompute time.

Run: ``python benchmarks/bench_kernels.py``. Every ratio is against a baseline measured in the
same run, after the JIT has been warmed up.
"""

from __future__ import annotations

import functools
import random
import statistics
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from bandit import kernels, policy
from bandit.policy import BERNOULLI, PolicySettings

FloatArray = npt.NDArray[np.float64]
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
        "cached, batch of 10000 in numba": median_ns(lambda: kernels.sample_arms(cdf, BATCH, rng))
        / BATCH,
        "cached, kernels.sample_arms(n=1)": median_ns(
            lambda: kernels.sample_arms(cdf, 1, rng), inner=1000
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
            lambda: kernels.thompson_choices(BERNOULLI, stats, PRIOR, 1.0, BATCH, rng, active)
        )
        / BATCH
    )
    baseline_call = median_ns(
        lambda: kernels.thompson_choices(BERNOULLI, stats, PRIOR, 1.0, 1, rng, active),
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


def batch_versus_numpy(rng: np.random.Generator) -> None:
    print(f"\n(2) {BATCH} decisions: cached CDF vs numpy rng.beta(a, b, (n, K)).argmax(1)")
    print(f"    {'K':>5s} {'cached us':>10s} {'numpy us':>10s} {'speed-up':>9s}")
    for n_arms in (2, 10, 100, 1000):
        stats = stats_after_data(n_arms, rng)
        alpha, beta = PRIOR[0] + stats[0], PRIOR[1] + stats[1]
        probabilities = policy.allocation_probabilities(
            BERNOULLI, stats, stats[0] + stats[1], PRIOR, PolicySettings()
        )
        cdf = policy.cumulative(probabilities)
        repeats = 21 if n_arms <= 100 else 5
        cached = median_ns(functools.partial(kernels.sample_arms, cdf, BATCH, rng), repeats)
        numpy = median_ns(functools.partial(numpy_thompson, rng, alpha, beta), repeats)
        print(f"    {n_arms:5d} {cached / 1e3:10.1f} {numpy / 1e3:10.1f} {numpy / cached:9.1f}x")


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
                        kernels.policy_probabilities,
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
    batch_versus_numpy(rng)
    recompute(rng)


if __name__ == "__main__":
    main()
