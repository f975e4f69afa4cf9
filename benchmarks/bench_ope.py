"""Offline evaluation of a one-million-row log: our estimators against obp's, same data.

Run: ``python -m benchmarks.bench_ope [--rows N] [--repeats R]`` (obp's side when obp and
scikit-learn are importable, e.g. ``PYTHONPATH=. /tmp/vsim/bin/python -m benchmarks.bench_ope``).

The log: obp's synthetic logistic problem (:mod:`simulations.contextual_worlds`' reproduction:
10 arms, contexts N(0, I_5), Bernoulli rewards), a logger that favours each context's better
arms (softmax of the standardised expected rewards) and its exact propensities; the target is
epsilon-greedy (0.2) on the true best arm. Timed, after a warm-up on 10,000 rows (numba's
compilation or cache load; scikit-learn's imports), the median of ``--repeats`` runs of:

- ours: :func:`simulations.reward_model.fit_reward_model` (logistic, one model per action on
  an intercept and the contexts, 5-fold cross-fitting) and
  :func:`simulations.ope.estimate_all` (IPS, SNIPS, DM, DR, Switch-DR, DRos with their
  intervals);
- obp 0.4.1: ``RegressionModel(base_model=LogisticRegression(), action_context=eye(K))
  .fit_predict(n_folds=5)`` (one model on the contexts and the action's one-hot, obp's usual
  set-up) and the six estimators' ``estimate_policy_value`` (values only: obp's intervals are
  a 10,000-sample bootstrap each, not timed).

The two reward models differ (ours interacts the action with the contexts, obp's adds it), so
the estimates differ too; the values are printed side by side. Single process; numpy's BLAS
may use several threads on either side.
"""

from __future__ import annotations

import argparse
import importlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bandit.policy.layout import FloatArray
from simulations.contextual_worlds import obp_logistic_expected
from simulations.logs import Log
from simulations.ope import estimate_all
from simulations.reward_model import fit_reward_model

ARMS, DIM, FOLDS = 10, 5, 5


def make_log(rows: int, seed: int = 0) -> tuple[Log, FloatArray]:
    """The benchmark's log and the target's probabilities (n, K)."""
    rng = np.random.default_rng(seed)
    contexts = rng.normal(size=(rows, DIM))
    expected = obp_logistic_expected(contexts, ARMS, seed)
    centred = (expected - expected.mean(axis=1, keepdims=True)) / expected.std(
        axis=1, keepdims=True)
    logger = np.exp(centred - centred.max(axis=1, keepdims=True))
    logger /= logger.sum(axis=1, keepdims=True)
    actions = np.minimum((rng.random(rows)[:, None] > np.cumsum(logger, axis=1)).sum(axis=1),
                         ARMS - 1)
    index = np.arange(rows)
    rewards = (rng.random(rows) < expected[index, actions]).astype(np.float64)
    log = Log(actions=actions, rewards=rewards, propensities=logger[index, actions],
              n_actions=ARMS, features=np.hstack([np.ones((rows, 1)), contexts]))
    target = 0.8 * np.eye(ARMS)[np.argmax(expected, axis=1)] + 0.2 / ARMS
    return log, target


def ours(log: Log, target: FloatArray) -> dict[str, float]:
    model = fit_reward_model(log, "logistic", folds=FOLDS, seed=0)
    return {name: e.value for name, e in estimate_all(log, target, model).items()}


def obp_available() -> bool:
    try:
        importlib.import_module("obp")
        importlib.import_module("sklearn")
    except ModuleNotFoundError:
        return False
    return True


def theirs(log: Log, target: FloatArray) -> dict[str, float]:
    from benchmarks.ope_golden import obp_modules

    estimators = obp_modules().estimators
    regression = importlib.import_module("obp.ope.regression_model")
    logistic: Any = importlib.import_module("sklearn.linear_model").LogisticRegression
    assert log.features is not None
    model = regression.RegressionModel(n_actions=ARMS, base_model=logistic(max_iter=1000),
                                       action_context=np.eye(ARMS))
    q_hat = model.fit_predict(context=log.features[:, 1:], action=log.actions,
                              reward=log.rewards, n_folds=FOLDS, random_state=0)
    inputs = {"reward": log.rewards, "action": log.actions, "pscore": log.propensities,
              "action_dist": target[:, :, None], "position": np.zeros(log.n, int),
              "estimated_rewards_by_reg_model": q_hat}
    peers = {"ips": estimators.InverseProbabilityWeighting(),
             "snips": estimators.SelfNormalizedInverseProbabilityWeighting(),
             "dm": estimators.DirectMethod(), "dr": estimators.DoublyRobust(),
             "switch-dr": estimators.SwitchDoublyRobust(tau=10.0),
             "dros": estimators.DoublyRobustWithShrinkage(lambda_=100.0)}
    return {name: float(e.estimate_policy_value(**inputs)) for name, e in peers.items()}


def timed(function: Callable[[Log, FloatArray], dict[str, float]], log: Log,
          target: FloatArray, repeats: int) -> tuple[float, dict[str, float]]:
    seconds, values = [], {}
    for _ in range(repeats):
        start = time.perf_counter()
        values = function(log, target)
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds)), values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    log, target = make_log(arguments.rows)
    warm_log, warm_target = make_log(10_000, seed=1)
    peer = obp_available()
    ours(warm_log, warm_target)
    if peer:
        theirs(warm_log, warm_target)
    print(f"{arguments.rows:,} rows, {ARMS} arms, contexts of dimension {DIM}, "
          f"{FOLDS}-fold cross-fitted reward model, median of {arguments.repeats}")
    our_seconds, our_values = timed(ours, log, target, arguments.repeats)
    print(f"ours: {our_seconds:.2f} s")
    if not peer:
        print("obp not importable: no ratio")
        return
    obp_seconds, obp_values = timed(theirs, log, target, arguments.repeats)
    print(f"obp:  {obp_seconds:.2f} s; obp / ours = {obp_seconds / our_seconds:.1f}x")
    print(f"{'estimator':10} {'ours':>9} {'obp':>9}")
    for name, value in our_values.items():
        print(f"{name:10} {value:9.5f} {obp_values[name]:9.5f}")


if __name__ == "__main__":
    main()
