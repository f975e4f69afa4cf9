"""Simulation speed: arm-pulls per second of the engine's Thompson sampling against baselines.

Run: ``python -m benchmarks.bench_simulations [--skip-peers] [--skip-large]``.

1. K=10, T=100,000, Bernoulli (best arm 0.5, the others 0.4): the engine's Thompson sampling
   (sequential, fast path) against a minimal hand-written numba Thompson loop (Beta draws,
   argmax, update) compiled in this script; both single-threaded, after a JIT warm-up.
2. Scaling of a multi-replication run over 1 and 2 threads.
3. Peers, where they are installed (they are not project dependencies; ``pip install
   SMPyBandits obp mabwiser`` into the environment running this script): SMPyBandits'
   ``Thompson``, Open Bandit Pipeline's ``BernoulliTS`` and MABWiser's ``ThompsonSampling``
   driven step by step on the same problem, on a reduced horizon.
4. One 100-replication run of K=100, T=10^6 on all cores (or its projected time when a
   pilot says it would take more than ten minutes).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import statistics
import sys
import time
import types
from collections.abc import Callable

import numba
import numpy as np

from bandit.policy.layout import FloatArray
from simulations.engine import simulate
from simulations.environments import Environment
from simulations.policies import PolicySpec

N_ARMS = 10
HORIZON = 100_000
THOMPSON = PolicySpec("thompson")


def chapelle_li_means(n_arms: int, gap: float = 0.1) -> FloatArray:
    means = np.full(n_arms, 0.5 - gap)
    means[0] = 0.5
    return means


@numba.njit(cache=True, nogil=True)
def minimal_thompson(means: FloatArray, horizon: int, rng: np.random.Generator) -> float:
    """The baseline: Beta(1 + s, 1 + f) draws, argmax, Bernoulli reward, update. Total reward."""
    n_arms = means.shape[0]
    alpha = np.ones(n_arms)
    beta = np.ones(n_arms)
    total = 0.0
    for _ in range(horizon):
        arm = 0
        best = -1.0
        for k in range(n_arms):
            draw = rng.beta(alpha[k], beta[k])
            if draw > best:
                best = draw
                arm = k
        reward = 1.0 if rng.random() < means[arm] else 0.0
        alpha[arm] += reward
        beta[arm] += 1.0 - reward
        total += reward
    return total


def best_of(function: Callable[[], float], repeats: int) -> float:
    """Largest of ``repeats`` pulls-per-second measurements (the least disturbed run)."""
    return max(function() for _ in range(repeats))


def engine_rate(means: FloatArray, horizon: int, reps: int, threads: int, seed: int = 1) -> float:
    result = simulate(THOMPSON, Environment.bernoulli(means), horizon=horizon, reps=reps,
                      seed=seed, threads=threads)
    return reps * horizon / result.seconds


def baseline_rate(means: FloatArray, horizon: int, reps: int, seed: int = 1) -> float:
    generators = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(reps)]
    start = time.perf_counter()
    for rng in generators:
        minimal_thompson(means, horizon, rng)
    return reps * horizon / (time.perf_counter() - start)


def smpybandits_rate(means: FloatArray, horizon: int) -> float:
    import scipy.special

    # SMPyBandits 0.9.7 imports scipy.special.btdtri, removed in scipy 1.14 for betaincinv,
    # the same function (Beta quantile) under its new name; only Bayes-UCB posteriors use it.
    if not hasattr(scipy.special, "btdtri"):
        scipy.special.btdtri = scipy.special.betaincinv
    Thompson = importlib.import_module("SMPyBandits.Policies").Thompson

    rng = np.random.default_rng(2)
    policy = Thompson(means.shape[0])
    policy.startGame()
    start = time.perf_counter()
    for _ in range(horizon):
        arm = policy.choice()
        policy.getReward(arm, float(rng.random() < means[arm]))
    return horizon / (time.perf_counter() - start)


@functools.cache
def _obp_bernoulli_ts() -> type:
    """obp.policy.contextfree.BernoulliTS, loaded without running obp.policy's __init__.

    That __init__ also imports the neural offline learners, hence torch (a multi-GB install
    with its CUDA wheels); the context-free module itself needs only numpy, scikit-learn and
    yaml, so the package is registered as an empty namespace and the module imported alone.
    """
    try:
        bernoulli_ts: type = importlib.import_module("obp.policy").BernoulliTS
    except ImportError:
        obp = importlib.import_module("obp")
        package = types.ModuleType("obp.policy")
        package.__path__ = [f"{obp.__path__[0]}/policy"]
        sys.modules["obp.policy"] = package
        bernoulli_ts = importlib.import_module("obp.policy.contextfree").BernoulliTS
    return bernoulli_ts


def obp_rate(means: FloatArray, horizon: int) -> float:
    BernoulliTS = _obp_bernoulli_ts()

    rng = np.random.default_rng(3)
    policy = BernoulliTS(n_actions=means.shape[0], len_list=1, random_state=3)
    start = time.perf_counter()
    for _ in range(horizon):
        arm = int(policy.select_action()[0])
        policy.update_params(action=arm, reward=float(rng.random() < means[arm]))
    return horizon / (time.perf_counter() - start)


def mabwiser_rate(means: FloatArray, horizon: int) -> float:
    mab = importlib.import_module("mabwiser.mab")
    MAB, LearningPolicy = mab.MAB, mab.LearningPolicy

    rng = np.random.default_rng(4)
    arms = list(range(means.shape[0]))
    policy = MAB(arms=arms, learning_policy=LearningPolicy.ThompsonSampling(), seed=4)
    # MABWiser needs a first fit; one observation per arm, as cheap as it gets.
    policy.fit(decisions=arms, rewards=[float(rng.random() < m) for m in means])
    start = time.perf_counter()
    for _ in range(horizon):
        arm = int(policy.predict())
        policy.partial_fit(decisions=[arm], rewards=[float(rng.random() < means[arm])])
    return horizon / (time.perf_counter() - start)


PEERS: tuple[tuple[str, Callable[[FloatArray, int], float], int, float], ...] = (
    # name, runner, horizon, target ratio (engine / peer)
    ("SMPyBandits Thompson", smpybandits_rate, 20_000, 30.0),
    ("OBP BernoulliTS", obp_rate, 20_000, 30.0),
    ("MABWiser ThompsonSampling", mabwiser_rate, 2_000, 300.0),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    means = chapelle_li_means(N_ARMS)

    print("JIT warm-up ...", flush=True)
    engine_rate(means, 1000, 2, threads=1)
    engine_rate(means, 1000, 2, threads=2)
    baseline_rate(means, 1000, 1)

    print(f"\n(1) Thompson, K={N_ARMS}, T={HORIZON:,}, one thread, best of {args.repeats}")
    baseline = best_of(lambda: baseline_rate(means, HORIZON, 1), args.repeats)
    engine = best_of(lambda: engine_rate(means, HORIZON, 1, threads=1), args.repeats)
    print(f"    minimal numba loop (baseline)   {baseline / 1e6:8.2f} M pulls/s")
    print(f"    engine, fast path               {engine / 1e6:8.2f} M pulls/s"
          f"   ratio {engine / baseline:.2f}x (target >= 1.0x)")

    print("\n(2) scaling, 8 replications of K=10, T=100,000")
    one = best_of(lambda: engine_rate(means, HORIZON, 8, threads=1), 3)
    two = best_of(lambda: engine_rate(means, HORIZON, 8, threads=2), 3)
    print(f"    1 thread   {one / 1e6:8.2f} M pulls/s")
    print(f"    2 threads  {two / 1e6:8.2f} M pulls/s   speed-up {two / one:.2f}x")

    if not args.skip_peers:
        print(f"\n(3) peers, K={N_ARMS}, step by step from Python (engine: {engine / 1e6:.2f} M"
              " pulls/s, one thread)")
        for name, runner, horizon, target in PEERS:
            try:
                rate = statistics.median(runner(means, horizon) for _ in range(3))
            except ImportError as error:
                print(f"    {name:28s} skipped: not installed ({error})")
                continue
            print(f"    {name:28s} T={horizon:>6,} {rate:12,.0f} pulls/s   engine ratio "
                  f"{engine / rate:10,.0f}x (target >= {target:.0f}x)")

    if not args.skip_large:
        large_means = chapelle_li_means(100)
        print("\n(4) K=100, T=1,000,000, 100 replications, all cores")
        pilot = simulate(THOMPSON, Environment.bernoulli(large_means), horizon=1_000_000,
                         reps=2, seed=5)
        projected = pilot.seconds * 50
        print(f"    pilot: 2 replications in {pilot.seconds:.1f} s -> projected "
              f"{projected / 60:.1f} min")
        if projected > 600:
            print("    over ten minutes: not run in full")
        else:
            result = simulate(THOMPSON, Environment.bernoulli(large_means),
                              horizon=1_000_000, reps=100, seed=5)
            print(f"    100 replications: {result.seconds:.1f} s "
                  f"({100e6 / result.seconds / 1e6:.2f} M pulls/s), final mean regret "
                  f"{result.regret[:, -1].mean():.1f}")


if __name__ == "__main__":
    main()
