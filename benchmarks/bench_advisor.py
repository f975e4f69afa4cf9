"""Tuning-advisor forecast cost: what a POST .../advise asks of one service process.

Run: ``python -m benchmarks.bench_advisor``.

A forecast runs two paired scenarios of ``reps`` replications from a live posterior (K arms,
200 observations each) and looks for the first winner call at 60 checkpoints. The baseline,
measured in the same process after the same JIT warm-up, is the simulation engine running the
same number of Thompson decisions from the prior (``simulate``, two runs), so the ratio is the
forecast's own overhead: truth draws, live starting state, checkpoint statistics and the
winner-call quadratures. Single-threaded, as the service runs it by default.
"""

from __future__ import annotations

import numpy as np

from bandit.forecast import forecast as fc
from bandit.policy import PolicySettings
from bandit.serving import advisor
from benchmarks.bench_kernels import median_ns
from simulations.engine import simulate
from simulations.environments import Environment
from simulations.policies import PolicySpec

DECISIONS = 10_000
REPS = 100


def _problem(n_arms: int, batch: int) -> fc.Problem:
    rng = np.random.default_rng(0)
    rates = rng.uniform(0.04, 0.06, n_arms)
    stats = np.zeros((3, n_arms))
    stats[0] = np.round(200 * rates)
    stats[1] = 200 - stats[0]
    return fc.Problem(family=0, prior=np.array([1.0, 1.0, 0.0, 0.0]), stats=stats,
                      counts=stats[0] + stats[1], horizon=DECISIONS, batch=batch, delay=40.0,
                      checkpoints=fc.linear_checkpoints(DECISIONS), threshold=0.95,
                      max_loss=0.0005)


def main() -> None:
    print(f"forecast: {DECISIONS:,} decisions x {REPS} futures x 2 scenarios, 1 thread; "
          "baseline: simulate() of the same decisions; estimate: the advisor's cost model")
    print(f"{'K':>5} {'proposal':<16} {'forecast':>9} {'baseline':>9} {'ratio':>6} "
          f"{'estimate':>9}")
    for n_arms in (3, 10, 100):
        active = np.ones(n_arms, dtype=np.bool_)
        current = fc.Scenario(PolicySettings().as_array(), active, np.inf)
        for label, settings in (("epsilon 0.1", PolicySettings(epsilon=0.1)),
                                ("min_share 0.5/K", PolicySettings(min_share=0.5 / n_arms))):
            proposed = fc.Scenario(settings.as_array(), active, np.inf)
            quadrature = int(proposed.needs_quadrature)
            # The probability path updates the posterior at most MAX_UPDATES times.
            batch = -(-DECISIONS // advisor.MAX_UPDATES) if quadrature else 20
            problem = _problem(n_arms, batch)
            spec = PolicySpec("thompson", {"epsilon": settings.epsilon,
                                           "min_share": settings.min_share})
            environment = Environment.bernoulli(np.full(n_arms, 0.05))

            def run_forecast(p: fc.Problem = problem, c: fc.Scenario = current,
                             s: fc.Scenario = proposed) -> object:
                return fc.forecast(p, [c, s], reps=REPS, seed=1, threads=1)

            def run_baseline(spec: PolicySpec = spec, env: Environment = environment,
                             batch: int = batch) -> object:
                simulate(PolicySpec("thompson"), env, horizon=DECISIONS, reps=REPS, seed=1,
                         batch=batch, delay=40.0, threads=1)
                return simulate(spec, env, horizon=DECISIONS, reps=REPS, seed=1, batch=batch,
                                delay=40.0, threads=1)

            run_forecast()  # JIT warm-up (or numba cache load) of both paths
            run_baseline()
            forecast_s = median_ns(run_forecast, repeats=3) / 1e9
            baseline_s = median_ns(run_baseline, repeats=3) / 1e9
            estimate = advisor.estimated_seconds(DECISIONS, REPS, n_arms, quadrature)
            print(f"{n_arms:>5} {label:<16} {forecast_s:>8.2f}s {baseline_s:>8.2f}s "
                  f"{forecast_s / baseline_s:>5.2f}x {estimate:>8.2f}s", flush=True)


if __name__ == "__main__":
    main()
