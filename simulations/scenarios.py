"""Built-in scenarios from the literature (``bandit simulate --scenario NAME``).

Each names the environment, its usual horizon and feedback (batch, delay), and the paper it
comes from, so a researcher can reproduce a published comparison with one flag.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulations.environments import Environment


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    environment: Environment
    horizon: int
    batch: int = 1
    delay: float = 0.0
    reference: str = ""


def _chapelle_li(arms: int, gap: float) -> Scenario:
    means = np.full(arms, 0.5 - gap)
    means[0] = 0.5
    return Scenario(
        name=f"chapelle-li-k{arms}-eps{gap:g}",
        description=f"{arms} Bernoulli arms: the best at 0.5, the others at {0.5 - gap:g}",
        environment=Environment(reward="bernoulli", means=means),
        horizon=1_000_000,
        reference="Chapelle & Li, An Empirical Evaluation of Thompson Sampling, NIPS 2011, "
                  "section 3.1 (they run to 10^7 steps)",
    )


def _besson(number: int, segments: list[list[float]]) -> Scenario:
    changes = tuple((4000 * (i + 1), np.array(means)) for i, means in enumerate(segments[1:]))
    return Scenario(
        name=f"besson-2020-problem{number}",
        description=f"3 Bernoulli arms, piecewise stationary: means change every 4000 steps "
                    f"({' -> '.join(str(s) for s in segments)})",
        environment=Environment(reward="bernoulli", means=np.array(segments[0]),
                                changes=changes),
        horizon=20_000,
        reference=f"Besson, Kaufmann, Maillard & Seznec, Efficient Change-Point Detection for "
                  f"Tackling Piecewise-Stationary Bandits, 2020, problem {number}",
    )


def _scenarios() -> dict[str, Scenario]:
    scenarios = [_chapelle_li(arms, gap) for arms in (10, 100) for gap in (0.1, 0.02)]
    scenarios.append(Scenario(
        name="chapelle-li-delayed",
        description="100 arm slots whose arms retire with probability 1e-3 per step and are "
                    "replaced by arms with a click rate drawn from Beta(4, 4); rewards fed "
                    "back in batches of 100 steps",
        environment=Environment(reward="bernoulli",
                                means=np.random.default_rng(2011).beta(4.0, 4.0, 100),
                                churn=1e-3, churn_alpha=4.0, churn_beta=4.0),
        horizon=1_000_000,
        batch=100,
        reference="after Chapelle & Li 2011, sections 3.2 (delayed, batched feedback) and 3.3 "
                  "(arms with a limited life drawn from Beta(4, 4)); lifetime and delay chosen "
                  "here",
    ))
    scenarios.append(Scenario(
        name="garivier-cappe-2011",
        description="10 low-reward Bernoulli arms: 0.1, 0.05 x3, 0.02 x3, 0.01 x3",
        environment=Environment(reward="bernoulli", means=np.array(
            [0.1, 0.05, 0.05, 0.05, 0.02, 0.02, 0.02, 0.01, 0.01, 0.01])),
        horizon=20_000,
        reference="Garivier & Cappé, The KL-UCB Algorithm for Bounded Stochastic Bandits and "
                  "Beyond, COLT 2011, scenario 2",
    ))
    scenarios.append(_besson(1, [[0.3, 0.5, 0.9], [0.3, 0.2, 0.9], [0.3, 0.2, 0.1],
                                 [0.7, 0.2, 0.1], [0.7, 0.5, 0.1]]))
    scenarios.append(_besson(2, [[0.4, 0.5, 0.9], [0.5, 0.4, 0.7], [0.6, 0.3, 0.5],
                                 [0.7, 0.2, 0.3], [0.8, 0.1, 0.1]]))
    return {scenario.name: scenario for scenario in scenarios}


SCENARIOS = _scenarios()


def get(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(
            f"unknown scenario {name!r}; `bandit simulate --list` shows the {len(SCENARIOS)} "
            "built-in ones"
        ) from None
