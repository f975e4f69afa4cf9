"""Golden values of the off-policy estimators, from the Open Bandit Pipeline itself.

Run (in an environment with obp and this checkout on the path)::

    PYTHONPATH=. python -m benchmarks.ope_golden

It writes ``tests/data/ope_golden.json``: a few seeded datasets, the inputs of every estimator
(actions, rewards, propensities, the target's probabilities and the reward model's q(x, a))
and obp's estimates of IPS, SNIPS, DM, DR, Switch-DR and DRos from them, with obp's version.
``tests/test_ope.py`` checks :mod:`simulations.ope` against them within 1e-9, without obp.

obp 0.4 imports torch and pandas at the top of ``obp.utils`` and ``obp.ope.estimators`` (for
its tensor variants and the real dataset), neither of which the numpy estimators use: when
they are not installed, :func:`obp_modules` registers two empty stand-ins (a ``torch`` whose
``Tensor`` is a class nothing is an instance of, so obp's own ``isinstance`` checks take its
numpy branches; a ``pandas`` whose ``DataFrame`` and ``Series`` are such classes too, for
scikit-learn's checks) and registers obp's packages without running their
``__init__`` (which import every module; ``obp.policy`` gets its two base classes, all that
``obp.types`` needs). obp's estimator and dataset code then runs
unmodified.

Both sides get the same reward model: ours (:func:`simulations.reward_model.fit_reward_model`,
cross-fitted), handed to obp as ``estimated_rewards_by_reg_model``, so the comparison is of the
estimators alone. Datasets:

- ``obp-synthetic-{seed}``: obp's ``SyntheticBanditDataset`` (binary rewards, its logistic
  reward function, its linear behaviour policy, contexts of dimension 3), the target an
  epsilon-greedy policy (epsilon 0.3) on obp's own expected rewards, rows at several weights
  around the Switch-DR threshold;
- ``simulator-thompson``: a context-free log of the service's Thompson sampling from our
  simulator (exact propensities), the target the service's allocation with other settings.
"""

from __future__ import annotations

import functools
import importlib
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np

from bandit.policy.layout import FloatArray, IntArray
from benchmarks.bench_contextual_regret import obp_package
from simulations.logs import Log
from simulations.reward_model import fit_reward_model

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "ope_golden.json"
ROWS = 300
TAU = 3.0
LAMBDA = 5.0


@functools.cache
def obp_modules() -> types.SimpleNamespace:
    """obp's ``obp.ope.estimators`` and ``obp.dataset.synthetic`` (see the module notes)."""
    for name in ("torch", "pandas"):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            stand_in = types.ModuleType(name)
            # Classes nothing is an instance of: obp's and scikit-learn's isinstance checks.
            for attribute in ("Tensor",) if name == "torch" else ("DataFrame", "Series"):
                setattr(stand_in, attribute, type(attribute, (), {}))
            sys.modules[name] = stand_in
    # obp.types (imported by the dataset) needs the policies' base classes only.
    policy = obp_package("obp.policy")
    base = importlib.import_module("obp.policy.base")
    policy.BaseContextFreePolicy = base.BaseContextFreePolicy  # type: ignore[attr-defined]
    policy.BaseContextualPolicy = base.BaseContextualPolicy  # type: ignore[attr-defined]
    obp_package("obp.ope")
    obp_package("obp.dataset")
    return types.SimpleNamespace(
        estimators=importlib.import_module("obp.ope.estimators"),
        synthetic=importlib.import_module("obp.dataset.synthetic"))


def _obp_estimates(actions: IntArray, rewards: FloatArray, propensities: FloatArray,
                   target: FloatArray, q_hat: FloatArray) -> dict[str, float]:
    ope = obp_modules().estimators
    inputs = {"reward": rewards, "action": actions, "pscore": propensities,
              "action_dist": target[:, :, None], "position": np.zeros(actions.shape[0], int),
              "estimated_rewards_by_reg_model": q_hat[:, :, None]}
    estimators = {"ips": ope.InverseProbabilityWeighting(),
                  "snips": ope.SelfNormalizedInverseProbabilityWeighting(),
                  "dm": ope.DirectMethod(), "dr": ope.DoublyRobust(),
                  "switch-dr": ope.SwitchDoublyRobust(tau=TAU),
                  "dros": ope.DoublyRobustWithShrinkage(lambda_=LAMBDA)}
    return {name: float(estimator.estimate_policy_value(**inputs))
            for name, estimator in estimators.items()}


def _case(name: str, log: Log, target: FloatArray, seed: int) -> dict[str, Any]:
    model = fit_reward_model(log, "logistic", folds=5, seed=seed)
    return {
        "name": name, "n_actions": log.n_actions,
        "actions": log.actions.tolist(), "rewards": log.rewards.tolist(),
        "propensities": log.propensities.tolist(), "target": target.tolist(),
        "q_hat": model.q_hat.tolist(),
        "obp": _obp_estimates(log.actions, log.rewards, log.propensities, target,
                              model.q_hat),
    }


def _synthetic(seed: int) -> dict[str, Any]:
    synthetic = obp_modules().synthetic
    dataset = synthetic.SyntheticBanditDataset(
        n_actions=5, dim_context=3, reward_type="binary",
        reward_function=synthetic.logistic_reward_function,
        behavior_policy_function=synthetic.linear_behavior_policy, random_state=seed)
    feedback = dataset.obtain_batch_bandit_feedback(n_rounds=ROWS)
    expected = feedback["expected_reward"]
    n_actions = expected.shape[1]
    target = 0.7 * np.eye(n_actions)[np.argmax(expected, axis=1)] + 0.3 / n_actions
    context = feedback["context"]
    log = Log(actions=feedback["action"], rewards=feedback["reward"].astype(np.float64),
              propensities=feedback["pscore"], n_actions=n_actions,
              features=np.hstack([np.ones((context.shape[0], 1)), context]))
    return _case(f"obp-synthetic-{seed}", log, target, seed)


def _simulator() -> dict[str, Any]:
    from simulations.engine import trace
    from simulations.environments import Environment
    from simulations.policies import parse_policy
    from simulations.targets import arm_statistics, service_allocation, service_settings

    means = np.array([0.2, 0.3, 0.35, 0.5])
    steps = trace(parse_policy("thompson:quadrature=1,epsilon=0.1"),
                  Environment.bernoulli(means), horizon=ROWS, seed=5, batch=20)
    log = Log(actions=steps.arms, rewards=steps.rewards, propensities=steps.propensities,
              n_actions=means.shape[0])
    policy = service_settings(("a", "b", "c", "d"), "bernoulli",
                              {"min_share": 0.1, "temperature": 2})
    stats, counts = arm_statistics(log, policy.family)
    target = np.tile(service_allocation(policy, stats, counts), (log.n, 1))
    return _case("simulator-thompson", log, target, 5)


def main() -> None:
    version = str(importlib.import_module("obp").__version__)
    cases = [_synthetic(1), _synthetic(2), _simulator()]
    document = {"generator": "benchmarks/ope_golden.py", "obp_version": version,
                "tau": TAU, "lambda": LAMBDA, "cases": cases}
    OUT.write_text(json.dumps(document) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KB), obp {version}")
    for case in cases:
        print(f"  {case['name']}: " + ", ".join(f"{k} {v:.6f}" for k, v in case["obp"].items()))


if __name__ == "__main__":
    main()
