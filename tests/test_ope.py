"""Offline evaluation on decision logs: estimators against known truths and against obp, the
reward model, the targets, the advisor's forecast, the log reader and the command line.

**Coverage.** Each setting runs 1,000 seeded replications, a fresh log each, and counts the
replications whose 95% interval covers the true value. If the intervals are right, the count
is Binomial(1000, 0.95): mean 950, standard deviation sqrt(1000 * 0.95 * 0.05) = 6.9, so the
accepted band 930..970 (95 +- 2%) is +- 2.9 standard deviations (a correct interval falls
outside it with probability 0.4%; an interval of true coverage 92% or 98% falls inside it
with probability below 0.1%). Seeded, so the counts are the same on every run.

**True values.** Context-free logs: the target's expected reward per decision, sum_a pi_a
theta_a, exactly (the theta_a are the simulated arms' click rates). Contextual logs (obp's
synthetic logistic problem, as :mod:`simulations.contextual_worlds` reproduces it): the policy
value under the context distribution, V = E_{x ~ N(0, I)} sum_a pi(a | x) mu(x, a), not the
average over the log's own contexts (the estimators' intervals include the contexts' sampling
variance, so they are for V). It is computed by Monte Carlo over 200,000 fresh contexts: its
error, sd / sqrt(200,000) with sd < 0.5, is below 1.2e-3 and about 20 times smaller than the
estimates' standard errors (0.02 to 0.07 at 1,000 rows), so it moves no coverage count by more
than a fraction of a percent.

obp itself is never imported here: its values come from ``tests/data/ope_golden.json``,
written by ``benchmarks/ope_golden.py`` with obp installed.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bandit.forecast import forecast as fc
from bandit.ops.cli import main
from bandit.policy import BERNOULLI, PolicySettings, allocation_probabilities, sample_slates
from bandit.policy.layout import FloatArray
from simulations.contextual_worlds import ContextualWorld, obp_logistic_expected
from simulations.decision_log import DecisionLog, read_decision_log
from simulations.engine import trace
from simulations.environments import Environment
from simulations.evaluation import advisor_forecast, evaluate_log, parse_target
from simulations.logs import Log, LogError, take_rows
from simulations.ope import ESTIMATORS, Estimate, estimate_all, ips, snips
from simulations.policies import parse_policy
from simulations.reward_model import RewardModel, fit_reward_model
from simulations.targets import (
    arm_statistics,
    contextual_posterior,
    contextual_probabilities,
    service_allocation,
    service_settings,
)

# pyarrow ships no type information: imported by name, its objects are Any.
pa: Any = importlib.import_module("pyarrow")
pq: Any = importlib.import_module("pyarrow.parquet")

DATA = Path(__file__).parent / "data"
REPS = 1000
# 95 +- 2% of REPS (module notes).
LOW, HIGH = 930, 970

# Context-free arms and the service's allocations from a fixed posterior (100 rows per arm).
MEANS = np.array([0.05, 0.08, 0.10, 0.12, 0.15])
K = MEANS.shape[0]
ARMS = ("a", "b", "c", "d", "e")
SUCCESSES = np.array([4.0, 8.0, 10.0, 12.0, 16.0])


def _allocation(settings: PolicySettings) -> FloatArray:
    stats = np.vstack([SUCCESSES, 100.0 - SUCCESSES, np.zeros(K)])
    return allocation_probabilities(BERNOULLI, stats, np.full(K, 100.0),
                                    np.array([1.0, 1.0, 0.0, 0.0]), settings)


# The logger: the service's Thompson allocation with epsilon 0.2 (0.04 .. 0.62).
LOGGER = _allocation(PolicySettings(epsilon=0.2))
# Targets: the same posterior under other settings, and a fixed arm.
OTHER_SETTINGS = {"min_share": 0.05, "temperature": 2.0}
THOMPSON_TARGET = _allocation(PolicySettings(min_share=0.05, temperature=2.0))


def _coverage(make: Callable[[int], tuple[Log, dict[str, tuple[Any, float]]]],
              ) -> dict[str, dict[str, tuple[int, FloatArray]]]:
    """Per target and estimator: (replications covered, the REPS errors value - truth)."""
    covered: dict[str, dict[str, int]] = {}
    errors: dict[str, dict[str, list[float]]] = {}
    for seed in range(REPS):
        log, targets = make(seed)
        model = fit_reward_model(log, "logistic", folds=5, seed=seed)
        for label, (target, truth) in targets.items():
            for name, estimate in estimate_all(log, target, model).items():
                covered.setdefault(label, {}).setdefault(name, 0)
                covered[label][name] += estimate.covers(truth)
                errors.setdefault(label, {}).setdefault(name, []).append(estimate.value - truth)
    return {label: {name: (covered[label][name], np.array(errors[label][name]))
                    for name in covered[label]} for label in covered}


def _check(results: dict[str, dict[str, tuple[int, FloatArray]]], *,
           dr_strictly_better: tuple[str, ...] = ()) -> None:
    """Coverage in the band for every estimator; DR's MSE no worse than IPS's.

    "No worse" allows for the Monte Carlo error of the comparison: the paired differences
    d_r = err_dr^2 - err_ips^2 over the same logs have a standard error se = sd(d) / sqrt(REPS),
    and mean(d) > 3 se would happen with probability 0.13% if DR's MSE were IPS's. When the
    target is close to the logger (weights near 1) the two MSEs are equal to a few 1e-4 of
    each other and only this test is meaningful; for the targets in ``dr_strictly_better``
    the model's control variate must show: DR's MSE strictly below IPS's.
    """
    for label, rows in results.items():
        assert list(rows) == list(ESTIMATORS)
        for name, (count, _) in rows.items():
            assert LOW <= count <= HIGH, (label, name, count)
        dr, ips_errors = rows["dr"][1] ** 2, rows["ips"][1] ** 2
        difference = dr - ips_errors
        allowance = 3.0 * float(np.std(difference, ddof=1)) / math.sqrt(REPS)
        assert float(np.mean(difference)) <= allowance, (label, dr.mean(), ips_errors.mean())
        if label in dr_strictly_better:
            assert dr.mean() < ips_errors.mean(), (label, dr.mean(), ips_errors.mean())


def _static_log(seed: int) -> tuple[Log, dict[str, tuple[Any, float]]]:
    rng = np.random.default_rng(seed)
    n = 3000
    actions = rng.choice(K, size=n, p=LOGGER)
    rewards = (rng.random(n) < MEANS[actions]).astype(np.float64)
    log = Log(actions=actions, rewards=rewards, propensities=LOGGER[actions], n_actions=K)
    return log, {"thompson": (THOMPSON_TARGET, float(THOMPSON_TARGET @ MEANS)),
                 "fixed": (np.eye(K)[3], float(MEANS[3]))}


def test_coverage_and_mse_on_a_static_thompson_logger() -> None:
    # The logger is the service's allocation (epsilon 0.2), the targets the same posterior
    # with a floor and temperature 2, and arm "d" alone (~560 rows, ~67 clicks per log).
    _check(_coverage(_static_log), dr_strictly_better=("fixed",))


def _adaptive_log(seed: int) -> tuple[Log, dict[str, tuple[Any, float]]]:
    """Our simulator's log of the service's Thompson sampling learning online (epsilon 0.2,
    posterior refreshed every 100 decisions, exact propensities): the target is learnt on the
    first half, as ``bandit simulate replay --log`` does, and evaluated on the second."""
    n = 4000
    steps = trace(parse_policy("thompson:quadrature=1,epsilon=0.2"), Environment.bernoulli(MEANS),
                  horizon=n, seed=seed, batch=100)
    log = Log(actions=steps.arms, rewards=steps.rewards, propensities=steps.propensities,
              n_actions=K)
    train, test = take_rows(log, np.arange(n // 2)), take_rows(log, np.arange(n // 2, n))
    policy = service_settings(ARMS, "bernoulli", OTHER_SETTINGS)
    target = service_allocation(policy, *arm_statistics(train, policy.family))
    # The truth of a static target: fixed given the training half, whatever the second half.
    return test, {"thompson": (target, float(target @ MEANS))}


def test_coverage_and_mse_on_an_adaptive_log_from_the_simulator() -> None:
    _check(_coverage(_adaptive_log))


OBP_ARMS, OBP_DIM = 10, 5
WORLDS, LOGS_PER_WORLD, OBP_ROWS, TRUTH_CONTEXTS = 20, 50, 1000, 200_000


def _softmax(z: FloatArray) -> FloatArray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)


def _obp_logger(expected: FloatArray) -> FloatArray:
    """Favours the better arms of each context, as an adaptive service does."""
    centred = expected - expected.mean(axis=1, keepdims=True)
    return _softmax(centred / expected.std(axis=1, keepdims=True))


def _obp_target(expected: FloatArray) -> FloatArray:
    """Epsilon-greedy (0.2) on the true best arm of each context."""
    return np.asarray(0.8 * np.eye(OBP_ARMS)[np.argmax(expected, axis=1)] + 0.2 / OBP_ARMS,
                      dtype=np.float64)


def test_coverage_and_mse_on_obps_synthetic_logistic_problem() -> None:
    # obp's SyntheticBanditDataset(random_state=w): coefficients drawn once per dataset,
    # contexts afresh per batch, as obtain_batch_bandit_feedback draws them: 20 datasets x 50
    # logs. The reward model sees an intercept and the raw contexts (the service's features
    # are an affine map of them), so the logistic model is well specified.
    truths = []
    for world in range(WORLDS):
        contexts = np.random.default_rng([world, 99]).normal(size=(TRUTH_CONTEXTS, OBP_DIM))
        expected = obp_logistic_expected(contexts, OBP_ARMS, world)
        truths.append(float(np.mean(np.sum(_obp_target(expected) * expected, axis=1))))

    def make(seed: int) -> tuple[Log, dict[str, tuple[Any, float]]]:
        world, batch = divmod(seed, LOGS_PER_WORLD)
        rng = np.random.default_rng([world, batch])
        contexts = rng.normal(size=(OBP_ROWS, OBP_DIM))
        expected = obp_logistic_expected(contexts, OBP_ARMS, world)
        logger = _obp_logger(expected)
        actions = np.minimum((rng.random(OBP_ROWS)[:, None] > np.cumsum(logger, axis=1))
                             .sum(axis=1), OBP_ARMS - 1)
        rows = np.arange(OBP_ROWS)
        rewards = (rng.random(OBP_ROWS) < expected[rows, actions]).astype(np.float64)
        log = Log(actions=actions, rewards=rewards, propensities=logger[rows, actions],
                  n_actions=OBP_ARMS, features=np.hstack([np.ones((OBP_ROWS, 1)), contexts]))
        return log, {"epsilon-greedy": (_obp_target(expected), truths[world])}

    _check(_coverage(make), dr_strictly_better=("epsilon-greedy",))


# ------------------------------------------------------------------------------------ obp


def _golden() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((DATA / "ope_golden.json").read_text())
    return document


def _given_model(q_hat: FloatArray) -> RewardModel:
    """A reward model holding given predictions (the intervals' parts are placeholders: only
    the values are compared)."""
    n, k = q_hat.shape
    return RewardModel(q_hat=q_hat, design=np.ones((n, 1)), slope=np.ones((n, k)),
                       hessians=np.ones((k, 1, 1)), kind="logistic", folds=1, ridge=1.0)


@pytest.mark.parametrize("case", _golden()["cases"], ids=lambda case: case["name"])
def test_estimates_equal_obps(case: dict[str, Any]) -> None:
    document = _golden()
    assert document["obp_version"] == "0.4.1"
    log = Log(actions=np.array(case["actions"]), rewards=np.array(case["rewards"]),
              propensities=np.array(case["propensities"]), n_actions=case["n_actions"])
    ours = estimate_all(log, np.array(case["target"]), _given_model(np.array(case["q_hat"])),
                        tau=document["tau"], lambda_=document["lambda"])
    assert set(ours) == set(case["obp"])
    for name, value in case["obp"].items():
        assert abs(ours[name].value - value) <= 1e-9, (name, ours[name].value, value)
    # The datasets exercise Switch-DR's switch and DRos's shrinkage: they differ from DR.
    assert abs(ours["switch-dr"].value - ours["dr"].value) > 1e-4
    assert abs(ours["dros"].value - ours["dr"].value) > 1e-4


def test_golden_file_stays_small() -> None:
    assert (DATA / "ope_golden.json").stat().st_size < 300_000


# ------------------------------------------------------------------------- the reward model


def _contextual_log(seed: int, n: int = 2000) -> tuple[Log, FloatArray]:
    rng = np.random.default_rng(seed)
    contexts = rng.normal(size=(n, 3))
    expected = obp_logistic_expected(contexts, 4, seed)
    actions = rng.integers(0, 4, n)
    rewards = (rng.random(n) < expected[np.arange(n), actions]).astype(np.float64)
    log = Log(actions=actions, rewards=rewards, propensities=np.full(n, 0.25), n_actions=4,
              features=np.hstack([np.ones((n, 1)), contexts]))
    return log, expected


def test_cross_fitting_keeps_a_rows_reward_out_of_its_own_prediction() -> None:
    log, _ = _contextual_log(1, 400)
    flipped_rewards = log.rewards.copy()
    flipped_rewards[7] = 1.0 - flipped_rewards[7]
    flipped = Log(actions=log.actions, rewards=flipped_rewards, propensities=log.propensities,
                  n_actions=4, features=log.features)
    for kind in ("logistic", "ridge"):
        before = fit_reward_model(log, kind, folds=5, seed=3)
        after = fit_reward_model(flipped, kind, folds=5, seed=3)
        # Row 7's own q is untouched; rows of its fold too; the other folds' rows move.
        np.testing.assert_array_equal(before.q_hat[7], after.q_hat[7])
        assert not np.array_equal(before.q_hat, after.q_hat)


def test_ridge_is_the_closed_form_and_logistic_the_penalised_optimum() -> None:
    log, expected = _contextual_log(2)
    assert log.features is not None
    x, rows = log.features, log.actions == 1
    ridge = fit_reward_model(log, "ridge", folds=1, ridge=2.0)
    mean = log.rewards.mean()
    beta = np.linalg.solve(x[rows].T @ x[rows] + 2.0 * np.eye(4),
                           x[rows].T @ (log.rewards[rows] - mean))
    np.testing.assert_allclose(ridge.q_hat[:, 1], mean + x @ beta, rtol=1e-10, atol=1e-12)
    # Logistic: the penalised score vanishes at the fit (Newton's method converged).
    logistic = fit_reward_model(log, "logistic", folds=1, ridge=1.0)
    q = logistic.q_hat[rows, 1]
    offset = math.log(mean / (1 - mean))
    coefficients = np.linalg.lstsq(x[rows], np.log(q / (1 - q)) - offset, rcond=None)[0]
    score = x[rows].T @ (log.rewards[rows] - q) - mean * (1 - mean) * coefficients
    assert np.abs(score).max() < 1e-8
    # And it is a sensible model of obp's logistic rewards (2,000 rows, 500 per arm).
    assert np.abs(logistic.q_hat - expected).mean() < 0.05


def test_bad_reward_models_are_refused() -> None:
    log, _ = _contextual_log(3, 50)
    with pytest.raises(ValueError, match="folds"):
        fit_reward_model(log, "logistic", folds=0)
    gaussian = Log(actions=log.actions, rewards=log.rewards * 3.0, propensities=log.propensities,
                   n_actions=4)
    with pytest.raises(ValueError, match="ridge"):
        fit_reward_model(gaussian, "logistic")
    with pytest.raises(ValueError, match="shape"):
        estimate_all(take_rows(log, np.arange(10)), np.full(4, 0.25),
                     fit_reward_model(log, "logistic"))


def test_ips_and_snips_are_the_replay_modules() -> None:
    from simulations import replay

    assert replay.ips is ips and replay.snips is snips and replay.Estimate is Estimate


# ----------------------------------------------------------------------------------- targets


def test_thompson_target_is_the_service_allocation_of_the_training_counts() -> None:
    rng = np.random.default_rng(4)
    actions = rng.integers(0, K, 500)
    rewards = (rng.random(500) < MEANS[actions]).astype(np.float64)
    log = Log(actions=actions, rewards=rewards, propensities=np.full(500, 0.2), n_actions=K,
              timestamps=np.arange(500.0))
    policy = service_settings(ARMS, "bernoulli", {"epsilon": 0.1, "top_two": 0.5})
    stats, counts = arm_statistics(log, policy.family)
    successes = np.bincount(actions, weights=rewards, minlength=K)
    expected = allocation_probabilities(
        BERNOULLI, np.vstack([successes, counts - successes, np.zeros(K)]), counts,
        np.array([1.0, 1.0, 0.0, 0.0]), PolicySettings(epsilon=0.1, top_two=0.5))
    np.testing.assert_array_equal(service_allocation(policy, stats, counts), expected)
    # Forgetting: a half-life of 100 s at t = 500 weighs the last row 1, the first 2^-5.
    decayed, raw = arm_statistics(log, policy.family, half_life_s=100.0, at=500.0)
    assert log.timestamps is not None
    np.testing.assert_array_equal(raw, counts)
    weights = 2.0 ** (-(500.0 - log.timestamps) / 100.0)
    np.testing.assert_allclose(decayed[0], np.bincount(actions, weights=weights * rewards,
                                                       minlength=K))
    with pytest.raises(ValueError, match="min_share"):
        service_settings(ARMS, "bernoulli", {"min_share": 0.3})  # 5 x 0.3 > 1


def test_contextual_target_is_the_allocate_endpoints_probabilities() -> None:
    world = ContextualWorld("obp-logistic", n_arms=4, dim=3)
    model = world.model()
    stream = world.stream(300, 5)
    features = np.array([model.encode(r) for r in world.requests(stream)])
    actions = np.arange(300) % 4
    log = Log(actions=actions, rewards=stream.rewards[np.arange(300), actions],
              propensities=np.full(300, 0.25), n_actions=4, features=features)
    settings = PolicySettings(epsilon=0.05)
    posterior = contextual_posterior(model, log, settings)
    probabilities = contextual_probabilities(posterior, features[:20])
    for i in range(20):
        np.testing.assert_array_equal(probabilities[i], posterior.probabilities(features[i]))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert probabilities.min() >= 0.05 / 4 - 1e-12  # epsilon's floor


@pytest.mark.parametrize(("text", "message"), [
    ("greedy", "unknown target"), ("fixed", "needs an arm"), ("uniform:x=1", "no settings"),
    ("thompson:epsilon", "key=value"), ("thompson:epsilon=high", "number"),
    ("thompson:epsilon=0.1,epsilon=0.2", "twice"), ("contextual:control=a", "ARM@SHARE"),
])
def test_bad_target_specs_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_target(text)


def test_target_settings_read_as_the_service_reads_them() -> None:
    spec = parse_target("thompson:epsilon=0.1,warmup=20,top_two=none,control=a@0.2")
    assert spec.exploration == {"epsilon": 0.1, "warmup": 20, "top_two": None,
                                "control": {"arm": "a", "share": 0.2}}
    policy = service_settings(ARMS, "bernoulli", spec.exploration)
    assert policy.settings.control_index == 0 and policy.settings.control_share == 0.2


# ---------------------------------------------------------------------- the advisor's forecast


def test_forecast_reward_per_decision_is_the_forecasts_own_truths() -> None:
    # The forecast reports regret; the reward per decision is each future's best mean minus
    # its regret per decision, with the truths redrawn from the forecast's seeds. Check the
    # redrawn truths against the forecast's own shares: sum_k shares x means must give the
    # same reward per decision (it would not with other truths).
    policy = service_settings(ARMS, "bernoulli", {"epsilon": 0.1})
    stats = np.vstack([SUCCESSES, 100.0 - SUCCESSES, np.zeros(K)])
    counts = np.full(K, 100.0)
    result = advisor_forecast(policy, stats, counts, decisions=600, rate=10.0, delay_s=1.0,
                              reps=20, seed=8)
    problem = fc.Problem(family=policy.family, prior=policy.prior, stats=stats, counts=counts,
                         horizon=600, batch=result.update_every, delay=10.0,
                         checkpoints=fc.linear_checkpoints(600), threshold=0.95, max_loss=0.0)
    scenario = fc.Scenario(policy.settings.as_array(), np.ones(K, dtype=np.bool_), math.inf)
    [outcome] = fc.forecast(problem, [scenario], reps=20, seed=8, threads=1)
    lengths = np.diff(np.concatenate([[0], problem.checkpoints]))
    by_shares = []
    for r, child in enumerate(np.random.SeedSequence(8).spawn(20)):
        means, _ = fc.draw_truths(policy.family, stats, policy.prior,
                                  np.random.default_rng(child.spawn(3)[0]))
        pulls = (outcome.shares[r] * lengths[:, None]).sum(axis=0)
        by_shares.append(float(pulls @ means) / 600)
    assert result.value == pytest.approx(float(np.mean(by_shares)), abs=1e-12)
    assert result.range80[0] <= result.value <= result.range80[1]
    assert result.update_every == 2 and result.delay_decisions == 10.0


# ------------------------------------------------------------------------ files and the CLI


def _export_table(rows: dict[str, list[Any]], metadata: dict[str, Any] | None) -> Any:
    n = len(rows["action"])
    columns: dict[str, Any] = {
        "decision_id": [f"d{i}" for i in range(n)], "experiment": ["hero"] * n,
        "version": [1] * n, "unit": pa.array([None] * n, type=pa.string()),
        "context": pa.array([None] * n, type=pa.string()),
        "features": pa.array([None] * n, type=pa.list_(pa.float64())),
        "reward_timestamp": pa.array([None] * n, type=pa.float64()),
    }
    columns.update(rows)
    columns["reward"] = pa.array(rows["reward"], type=pa.float64())
    table = pa.table(columns)
    if metadata is not None:
        table = table.replace_schema_metadata({"bandit": json.dumps(metadata)})
    return table


def _thompson_rows(n: int = 1200, seed: int = 2) -> dict[str, list[Any]]:
    """A context-free log of the service's Thompson sampling (our simulator), one click in
    five missing."""
    steps = trace(parse_policy("thompson:quadrature=1,epsilon=0.1"),
                  Environment.bernoulli(MEANS * 2), horizon=n, seed=seed, batch=50)
    times = 1.8e9 + np.arange(n) * 0.25
    rewards: list[float | None] = steps.rewards.tolist()
    for i in range(0, n, 5):
        rewards[i] = None
    return {"timestamp": times.tolist(), "action": steps.arms.tolist(),
            "arm": [ARMS[a] for a in steps.arms], "n_actions": [K] * n, "position": [0] * n,
            "propensity": steps.propensities.tolist(), "reward": rewards,
            "reward_timestamp": (times + 2.0).tolist()}


METADATA = {"experiment": "hero", "arms": list(ARMS), "reward": "bernoulli", "model": None,
            "attribution_window_s": 3600.0, "since": 1.8e9, "until": 1.8e9 + 300}


def _cli(*arguments: str) -> int:
    return main(["simulate", "replay", *arguments])


def test_cli_on_a_parquet_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "hero.parquet"
    pq.write_table(_export_table(_thompson_rows(), METADATA), path)
    out = tmp_path / "out"
    assert _cli("--log", str(path), "--target", "thompson:min_share=0.1,temperature=2",
                "--target", "fixed:e", "--target", "uniform", "--forecast-reps", "10",
                "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert "advisor" in printed and "240 of 1,200 rows have no reward: counted as 0" in printed
    document = json.loads((out / "evaluation.json").read_text())
    assert (out / "evaluation.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert document["train_rows"] == 600 and document["test_rows"] == 600
    targets = document["targets"]
    assert list(targets) == ["thompson:min_share=0.1,temperature=2", "fixed:e", "uniform"]
    for target in targets.values():
        assert list(target["estimates"]) == list(ESTIMATORS)
        for estimate in target["estimates"].values():
            assert estimate["ci_low"] <= estimate["value"] <= estimate["ci_high"]
    thompson = targets["thompson:min_share=0.1,temperature=2"]
    assert min(thompson["allocation"]) >= 0.1 - 1e-12
    forecast = thompson["forecast"]
    assert forecast["reps"] == 10 and forecast["decisions"] == 600
    assert forecast["delay_decisions"] == pytest.approx(2.0 * 4.0, rel=1e-3)  # 2 s at 4/s
    assert targets["uniform"]["forecast"] is None
    # The same numbers as JSON on stdout, and the same log as JSON lines.
    assert _cli("--log", str(path), "--target", "uniform", "--json") == 0
    from_parquet = json.loads(capsys.readouterr().out)["targets"]["uniform"]
    lines = tmp_path / "hero.jsonl"
    rows = _thompson_rows()
    lines.write_text("".join(json.dumps({key: rows[key][i] for key in rows}) + "\n"
                             for i in range(len(rows["action"]))))
    assert _cli("--log", str(lines), "--target", "uniform", "--json") == 0
    from_lines = json.loads(capsys.readouterr().out)
    assert from_lines["reward_source"] == "inferred" and from_lines["reward"] == "bernoulli"
    assert from_lines["targets"]["uniform"] == from_parquet


def test_cli_on_a_slate_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(6)
    n, k = 800, 2
    slates, _, propensities = sample_slates(LOGGER, n, k, rng)
    position_effect = np.array([1.0, 0.5])
    clicks = rng.random((n, k)) < MEANS[slates] * position_effect
    rows: dict[str, list[Any]] = {
        "timestamp": np.repeat(1.8e9 + np.arange(n), k).tolist(),
        "action": slates.ravel().tolist(), "arm": [ARMS[a] for a in slates.ravel()],
        "n_actions": [K] * (n * k), "position": np.tile(np.arange(k), n).tolist(),
        "propensity": propensities.ravel().tolist(),
        "reward": clicks.ravel().astype(float).tolist()}
    path = tmp_path / "slates.parquet"
    pq.write_table(_export_table(rows, METADATA), path)
    assert _cli("--log", str(path), "--target", "uniform", "--json",
                "--forecast-reps", "10") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["position"] == 0 and document["test_rows"] == n // 2
    assert any("slate log" in note for note in document["notes"])
    # The whole slate stays on one side of the cut; position 1's rows are evaluated apart.
    assert _cli("--log", str(path), "--target", "uniform", "--position", "1", "--json") == 0
    second = json.loads(capsys.readouterr().out)
    assert second["position"] == 1 and second["test_rows"] == n // 2
    assert second["train_rows"] == document["train_rows"] == n


def _contextual_rows(n: int = 600) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    world = ContextualWorld("obp-logistic", n_arms=4, dim=3)
    model = world.model()
    stream = world.stream(n, 9)
    requests = world.requests(stream)
    features = np.array([model.encode(request) for request in requests])
    logger = _softmax(stream.expected * 3.0)
    rng = np.random.default_rng(9)
    actions = np.minimum((rng.random(n)[:, None] > np.cumsum(logger, axis=1)).sum(axis=1), 3)
    rows = {"timestamp": (1.8e9 + np.arange(n)).tolist(), "action": actions.tolist(),
            "arm": [f"arm{a}" for a in actions], "n_actions": [4] * n, "position": [0] * n,
            "propensity": logger[np.arange(n), actions].tolist(),
            "reward": stream.rewards[np.arange(n), actions].tolist(),
            "context": [json.dumps(request) for request in requests],
            "features": features.tolist()}
    metadata = {**METADATA, "arms": [f"arm{a}" for a in range(4)], "model": model.to_json()}
    return rows, metadata


def test_cli_on_a_contextual_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows, metadata = _contextual_rows()
    path = tmp_path / "contextual.parquet"
    table = _export_table(rows, metadata)
    pq.write_table(table, path)
    assert _cli("--log", str(path), "--json") == 0
    document = json.loads(capsys.readouterr().out)
    # Default targets on a log with features: contextual included; no forecast (the advisor
    # does not forecast contextual experiments).
    assert list(document["targets"]) == ["uniform", "thompson", "thompson:epsilon=0.1",
                                         "contextual"]
    assert all(t["forecast"] is None for t in document["targets"].values())
    contextual = document["targets"]["contextual"]
    assert contextual["allocation"] is None
    # The evaluated probabilities are the posterior's, learnt on the first 300 rows.
    decisions = read_decision_log(path)
    assert decisions.model is not None and decisions.log.features is not None
    evaluation = evaluate_log(decisions, ["contextual"])
    assert evaluation.targets["contextual"].estimates["ips"].value == \
        contextual["estimates"]["ips"]["value"]
    # Without metadata (JSON lines) the default prior is used, and said.
    lines = tmp_path / "contextual.jsonl"
    lines.write_text("".join(json.dumps({key: rows[key][i] for key in rows}) + "\n"
                             for i in range(len(rows["action"]))))
    assert _cli("--log", str(lines), "--target", "contextual", "--json") == 0
    assert any("no model in the log's metadata" in note
               for note in json.loads(capsys.readouterr().out)["notes"])


def test_gaussian_rows_without_a_reward_are_dropped(tmp_path: Path) -> None:
    rows = _thompson_rows(200)
    rows["reward"] = [None if r is None else 3.0 * r + 0.5 for r in rows["reward"]]
    path = tmp_path / "revenue.parquet"
    pq.write_table(_export_table(rows, {**METADATA, "reward": "gaussian"}), path)
    decisions = read_decision_log(path)
    assert decisions.reward == "gaussian" and decisions.log.n == 160
    assert decisions.missing_rewards == 40 and "dropped" in decisions.notes[0]
    evaluation = evaluate_log(decisions, ["uniform", "thompson"], forecast_reps=10)
    assert set(evaluation.targets["thompson"].estimates) == set(ESTIMATORS)


def _write(tmp_path: Path, rows: dict[str, list[Any]], name: str = "log.parquet") -> Path:
    path = tmp_path / name
    pq.write_table(_export_table(rows, METADATA), path)
    return path


@pytest.mark.parametrize(("change", "arguments", "message"), [
    (None, ["--log", "{dir}/nothing.parquet"], "nothing.parquet: no such file"),
    ("drop-propensity", [], "missing column propensity"),
    ("propensity-zero", [], "column 'propensity' must lie in (0, 1]"),
    ("propensity-above-one", [], "column 'propensity' must lie in (0, 1]"),
    (None, ["--target", "fixed:zebra"], "arm 'zebra' is not in the log"),
    (None, ["--target", "contextual"], "no features column"),
    (None, ["--target", "thompson:min_share=0.5"], "exploration.min_share"),
    (None, ["--position", "2"], "no rows at --position 2"),
    (None, ["--train-share", "1.5"], "--train-share"),
])
def test_cli_errors_exit_2_naming_the_problem(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str | None,
        arguments: list[str], message: str) -> None:
    rows = _thompson_rows(100)
    if change == "drop-propensity":
        del rows["propensity"]
    elif change == "propensity-zero":
        rows["propensity"][17] = 0.0
    elif change == "propensity-above-one":
        rows["propensity"][3] = 1.5
    path = _write(tmp_path, rows)
    given = [a.format(dir=tmp_path) for a in arguments]
    if "--log" not in given:
        given = ["--log", str(path), *given]
    assert _cli(*given) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1, error
    if change is not None:
        assert str(path) in error


def test_obd_replay_keeps_its_positions(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli("--position", "0") == 2
    assert "--position must be 1, 2 or 3" in capsys.readouterr().err


def test_log_reader_refuses_inconsistent_files(tmp_path: Path) -> None:
    rows = _thompson_rows(50)
    rows["arm"][rows["action"].index(2)] = "zzz"
    with pytest.raises(LogError, match="column 'arm'"):
        read_decision_log(_write(tmp_path, rows))
    text = tmp_path / "log.txt"
    text.write_text("x")
    with pytest.raises(LogError, match=r"\.parquet or \.jsonl"):
        read_decision_log(text)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"action": 1}\nnot json\n')
    with pytest.raises(LogError, match="line 2: not JSON"):
        read_decision_log(broken)
    # Found by a run against the docs: each of these changed the estimates silently, or
    # ended in a traceback.
    row = {"timestamp": 1.0, "action": 0, "arm": "a", "n_actions": 2, "position": 0,
           "propensity": 0.5, "reward": 1}
    for change, message in (({"action": 99, "arm": "z"}, "column 'action' holds 99"),
                            ({"n_actions": 7}, "'n_actions' must be the same in every row"),
                            ({"propensity": True}, "row 1 holds True"),
                            ({"propensity": "0.5"}, "row 1 holds '0.5'"),
                            ({"propensity": 10**400}, "column 'propensity' must hold numbers")):
        odd = tmp_path / "odd.jsonl"
        odd.write_text("\n".join(json.dumps(r) for r in (row, {**row, **change}, row)) + "\n")
        with pytest.raises(LogError, match=re.escape(message)):
            read_decision_log(odd)


def test_a_decision_log_keeps_its_positions_and_delays(tmp_path: Path) -> None:
    decisions: DecisionLog = read_decision_log(_write(tmp_path, _thompson_rows(100)))
    assert decisions.arms == ARMS and decisions.reward_source == "metadata"
    assert decisions.positions == [0] and decisions.experiment == "hero"
    np.testing.assert_allclose(decisions.reward_delays, 2.0)


def test_estimates_flag_untrustworthy_normal_intervals() -> None:
    # Arm 0 is logged with probability 0.04 and clicks 5% of the time: ~2 clicks in 1,000
    # rows, too few for a normal interval, whatever its width.
    rng = np.random.default_rng(11)
    actions = rng.choice(K, size=1000, p=LOGGER)
    rewards = (rng.random(1000) < MEANS[actions]).astype(np.float64)
    log = Log(actions=actions, rewards=rewards, propensities=LOGGER[actions], n_actions=K)
    estimate: Estimate = ips(log, np.eye(K)[0])
    assert not estimate.normal_ok
    assert ips(log, THOMPSON_TARGET).normal_ok


def test_bootstrap_interval_agrees_with_the_normal_one_on_many_rows() -> None:
    # 5,000 rows of a static log: the percentile bootstrap and the normal interval of the same
    # IPS terms estimate the same 95% interval. Their endpoints differ by the bootstrap's
    # Monte Carlo error (2,000 replicates: the 2.5% quantile's sd is about 0.06 standard
    # errors) and the terms' skew; 0.25 standard errors allows both.
    from simulations.ope import bootstrap_interval, importance_weights, target_matrix

    rng = np.random.default_rng(12)
    actions = rng.choice(K, size=5000, p=LOGGER)
    rewards = (rng.random(5000) < MEANS[actions]).astype(np.float64)
    log = Log(actions=actions, rewards=rewards, propensities=LOGGER[actions], n_actions=K)
    weights = importance_weights(log, target_matrix(log, THOMPSON_TARGET))
    normal = ips(log, THOMPSON_TARGET)
    low, high = bootstrap_interval(weights * rewards, seed=1)
    assert abs(low - normal.ci_low) <= 0.25 * normal.stderr
    assert abs(high - normal.ci_high) <= 0.25 * normal.stderr
    ratio = snips(log, THOMPSON_TARGET)
    low, high = bootstrap_interval(weights * rewards, ratio_of=weights, seed=1)
    assert abs(low - ratio.ci_low) <= 0.25 * ratio.stderr
    assert abs(high - ratio.ci_high) <= 0.25 * ratio.stderr
