"""Sweeps on Dask: arm-pulls per second of a local Dask cluster against the threaded engine.

Run: ``python -m benchmarks.bench_dask [--threads N] [--horizon T] [--reps R] [--repeats N]``.

Two Thompson-sampling sweeps over epsilon x temperature on K=10 Bernoulli arms (best 0.5, the
others 0.4), each run (a) on this machine the way ``bandit simulate`` runs it without ``--dask``
(one configuration after another, each on ``--threads`` threads) and (b) on a local Dask cluster
with the same number of threads in all (``bandit simulate --dask``), in the same process, after
the JIT has warmed up here and on every worker:

1. many replications per configuration (``--reps``): the threaded run already keeps every
   thread busy, so the ratio shows Dask's overhead (task scheduling, results sent back);
2. one replication per configuration: the threaded run has one replication to spread over its
   threads at a time, while Dask runs configurations side by side.

The cluster's start-up is timed apart and not counted. Each Dask run is checked to give the
threaded run's numbers bit for bit.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import time
from collections.abc import Callable

import numpy as np
from distributed import Client

from simulations.distributed import connect, simulate_policies, worker_threads
from simulations.engine import SimulationResult, simulate
from simulations.environments import Environment
from simulations.policies import PolicySpec

N_ARMS = 10
EPSILONS = (0.0, 0.05, 0.1)
TEMPERATURES = (0.5, 1.0, 2.0)
SEED = 1


def environment() -> Environment:
    means = np.full(N_ARMS, 0.4)
    means[0] = 0.5
    return Environment.bernoulli(means)


def sweep() -> list[PolicySpec]:
    return [PolicySpec("thompson", {"epsilon": epsilon, "temperature": temperature})
            for epsilon, temperature in itertools.product(EPSILONS, TEMPERATURES)]


def warm_up() -> None:
    """Compile (or load from numba's cache) the engine's kernels in this process."""
    simulate(PolicySpec("thompson", {"epsilon": 0.1}), environment(), horizon=1000, reps=2,
             seed=0, threads=1)


def threaded(policies: list[PolicySpec], horizon: int, reps: int,
             threads: int) -> tuple[float, list[SimulationResult]]:
    started = time.perf_counter()
    results = [simulate(policy, environment(), horizon=horizon, reps=reps, seed=SEED,
                        threads=threads) for policy in policies]
    return time.perf_counter() - started, results


def on_dask(client: Client, policies: list[PolicySpec], horizon: int,
            reps: int) -> tuple[float, list[SimulationResult]]:
    started = time.perf_counter()
    results = simulate_policies(client, policies, environment(), horizon=horizon, reps=reps,
                                seed=SEED)
    return time.perf_counter() - started, results


def identical(first: list[SimulationResult], second: list[SimulationResult]) -> bool:
    names = ("pseudo_regret", "regret", "best_arm_rate", "shares", "pulls")
    return all(getattr(a, name).tobytes() == getattr(b, name).tobytes()
               for a, b in zip(first, second, strict=True) for name in names)


def best(run: Callable[[], tuple[float, list[SimulationResult]]],
         repeats: int) -> tuple[float, list[SimulationResult]]:
    """The fastest of ``repeats`` runs (the least disturbed) and its results."""
    return min((run() for _ in range(repeats)), key=lambda outcome: outcome[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--horizon", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    policies = sweep()

    print("JIT warm-up and local cluster start-up ...", flush=True)
    warm_up()
    started = time.perf_counter()
    with connect(threads=args.threads) as client:
        startup = time.perf_counter() - started
        client.run(warm_up)  # on every worker
        workers = worker_threads(client)
        print(f"    cluster: {len(workers)} worker processes, {sum(workers.values())} threads"
              f" in all, started in {startup:.1f} s (not counted below)")
        cases = (("(1)", args.reps), ("(2)", 1))
        for label, reps in cases:
            pulls = len(policies) * reps * args.horizon
            print(f"\n{label} {len(policies)} configurations x {reps} replications, K={N_ARMS}, "
                  f"T={args.horizon:,} ({pulls / 1e6:.1f} M pulls), best of {args.repeats}")
            here, expected = best(functools.partial(threaded, policies, args.horizon, reps,
                                                    args.threads), args.repeats)
            there, results = best(functools.partial(on_dask, client, policies, args.horizon,
                                                    reps), args.repeats)
            print(f"    threaded engine, {args.threads} threads (baseline) "
                  f"{pulls / here / 1e6:8.2f} M pulls/s")
            print(f"    local Dask cluster                     {pulls / there / 1e6:8.2f} M pulls/s"
                  f"   ratio {here / there:.2f}x   identical: "
                  f"{'yes' if identical(results, expected) else 'NO'}")


if __name__ == "__main__":
    main()
