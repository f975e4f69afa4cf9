"""Off-policy evaluation (simulations.replay): estimators against known truths, loading, OBD.

Synthetic environment: K Bernoulli arms with known click rates, so every policy's true value is
``sum_k pi_k * theta_k``. Every test is seeded, so it cannot flake; the tolerances still come
from the maths (standard errors, binomial bounds on coverage counts) so that a seed change would
keep them passing with overwhelming probability.
"""

from __future__ import annotations

import math
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from bandit.policy import BERNOULLI, PolicySettings, allocation_probabilities
from bandit.policy.layout import FloatArray
from simulations.data import obd_sample_archive
from simulations.logs import Log, LogError, load_log, select_position
from simulations.obd import evaluate_obd, load_obd_log
from simulations.replay import Estimate, ips, logged_mean, replay, snips
from simulations.targets import (
    StaticPolicy,
    ThompsonPolicy,
    fixed_arm_probabilities,
    thompson_probabilities,
    uniform_probabilities,
)

DATA = Path(__file__).parent / "data"
CLICK_RATES = np.array([0.05, 0.10, 0.20, 0.35, 0.50])
K = CLICK_RATES.shape[0]
ROWS = 20_000
REPETITIONS = 50
# A stochastic target policy and its exact value.
TARGET = np.array([0.1, 0.1, 0.2, 0.2, 0.4])
TRUTH = float(TARGET @ CLICK_RATES)
# Coverage counts of nominal 95% intervals: fewer than this many out of REPETITIONS has
# probability < 0.1% (binomial), so a lower count means the interval really undercovers.
MIN_COVERED = int(scipy.stats.binom.ppf(0.001, REPETITIONS, 0.95))
# A single seeded estimate further than this many standard errors from the truth: p < 1e-4.
SIGMAS = 4.0


def _log(seed: int, logging_probabilities: FloatArray, n: int = ROWS) -> Log:
    """n decisions drawn from a static logging policy, clicks from CLICK_RATES."""
    rng = np.random.default_rng(seed)
    actions = rng.choice(K, size=n, p=logging_probabilities)
    rewards = (rng.random(n) < CLICK_RATES[actions]).astype(np.float64)
    return Log(
        actions=actions,
        rewards=rewards,
        propensities=logging_probabilities[actions],
        n_actions=K,
        timestamps=np.arange(n, dtype=np.float64),
    )


def _softmax(scale: float) -> FloatArray:
    weights = np.exp(scale * CLICK_RATES)
    return np.asarray(weights / weights.sum(), dtype=np.float64)


UNIFORM = uniform_probabilities(K)
# Favours the good arms (propensities ~0.13 to ~0.30): the kind of logger an adaptive service is.
SOFTMAX = _softmax(5.0)


def _close(estimate: Estimate, truth: float) -> bool:
    return abs(estimate.value - truth) <= SIGMAS * estimate.stderr


# ------------------------------------------------------------------------------ IPS and SNIPS


@pytest.mark.parametrize("estimator", [ips, snips])
@pytest.mark.parametrize(
    ("target", "truth"),
    [(TARGET, TRUTH), (fixed_arm_probabilities(K, 3), float(CLICK_RATES[3]))],
    ids=["stochastic", "fixed-arm"],
)
@pytest.mark.parametrize("logger", [UNIFORM, SOFTMAX], ids=["uniform", "softmax"])
def test_importance_estimators_recover_a_known_value(
    estimator: object, target: FloatArray, truth: float, logger: FloatArray
) -> None:
    assert callable(estimator)
    estimates = [estimator(_log(seed, logger), target) for seed in range(REPETITIONS)]
    assert _close(estimates[0], truth), estimates[0]
    covered = sum(estimate.covers(truth) for estimate in estimates)
    assert covered >= MIN_COVERED, (covered, MIN_COVERED)


@pytest.mark.parametrize("logger", [UNIFORM, SOFTMAX], ids=["uniform", "softmax"])
def test_ips_is_unbiased_for_any_covering_logger(logger: FloatArray) -> None:
    # The mean of independent IPS estimates has standard error sd / sqrt(R): any bias larger
    # than a few of those would show.
    values = np.array([ips(_log(100 + seed, logger), TARGET).value for seed in range(REPETITIONS)])
    spread = values.std(ddof=1) / math.sqrt(REPETITIONS)
    assert abs(values.mean() - TRUTH) <= SIGMAS * spread


def test_ips_accepts_a_callable_and_per_row_probabilities() -> None:
    log = _log(7, SOFTMAX)
    per_row = np.tile(TARGET, (log.n, 1))
    by_vector = ips(log, TARGET)
    assert ips(log, per_row) == by_vector
    assert ips(log, lambda given: np.tile(TARGET, (given.n, 1))) == by_vector
    # Per-row policies: arm 4 on even rows, arm 0 on odd rows: value is the mix of the two.
    alternating = np.where((np.arange(log.n) % 2 == 0)[:, None], np.eye(K)[4], np.eye(K)[0])
    mixed = ips(log, alternating)
    assert _close(mixed, (CLICK_RATES[4] + CLICK_RATES[0]) / 2)


def test_uniform_target_on_uniform_log_is_the_logged_mean() -> None:
    log = _log(8, UNIFORM)
    assert ips(log, UNIFORM).value == pytest.approx(logged_mean(log).value, rel=1e-12)
    assert snips(log, UNIFORM).value == pytest.approx(logged_mean(log).value, rel=1e-12)


def test_effective_n_is_kish() -> None:
    log = _log(9, UNIFORM)
    assert ips(log, UNIFORM).effective_n == pytest.approx(log.n)
    # Fixed arm on a uniform log: only the ~n/K rows with that arm carry weight.
    fixed = ips(log, fixed_arm_probabilities(K, 2))
    assert fixed.effective_n == np.count_nonzero(log.actions == 2)


def test_static_thompson_helper_is_the_service_allocation() -> None:
    successes = np.array([3.0, 10.0, 1.0, 0.0, 7.0])
    failures = np.array([30.0, 20.0, 5.0, 0.0, 9.0])
    settings = PolicySettings(epsilon=0.1, min_share=0.02)
    expected = allocation_probabilities(
        BERNOULLI,
        np.vstack([successes, failures, np.zeros(K)]),
        successes + failures,
        [1.0, 1.0, 0.0, 0.0],
        settings,
    )
    got = thompson_probabilities(successes, failures, settings=settings)
    np.testing.assert_array_equal(got, expected)
    assert ThompsonPolicy(successes, failures, settings=settings).probabilities().tolist() == (
        expected.tolist()
    )
    # And it is a valid target: IPS of it recovers its value.
    estimate = ips(_log(10, UNIFORM), got)
    assert _close(estimate, float(got @ CLICK_RATES))


# ------------------------------------------------------------------------------------- replay


def test_replay_of_a_fixed_arm_is_the_mean_of_its_rows() -> None:
    log = _log(11, UNIFORM)
    estimate = replay(log, StaticPolicy(fixed_arm_probabilities(K, 3)), seed=1)
    rows = log.actions == 3
    assert estimate.effective_n == np.count_nonzero(rows)
    assert estimate.value == pytest.approx(log.rewards[rows].mean(), rel=1e-12)
    assert estimate.covers(float(CLICK_RATES[3]))


@pytest.mark.parametrize(
    ("allocation", "truth"),
    [(fixed_arm_probabilities(K, 1), float(CLICK_RATES[1])), (TARGET, TRUTH)],
    ids=["fixed-arm", "stochastic"],
)
def test_replay_of_a_static_policy_covers_its_value(allocation: FloatArray, truth: float) -> None:
    estimates = [
        replay(_log(200 + seed, UNIFORM), StaticPolicy(allocation), seed=seed)
        for seed in range(REPETITIONS)
    ]
    assert _close(estimates[0], truth), estimates[0]
    # About n/K rows are kept, independently of everything else.
    expected_kept = ROWS / K
    assert abs(estimates[0].effective_n - expected_kept) <= SIGMAS * math.sqrt(
        ROWS * (1 / K) * (1 - 1 / K)
    )
    covered = sum(estimate.covers(truth) for estimate in estimates)
    assert covered >= MIN_COVERED, (covered, MIN_COVERED)


def test_replay_of_online_thompson_approaches_the_best_arm() -> None:
    log = _log(12, UNIFORM, n=30_000)
    estimate = replay(log, seed=3)
    best = float(CLICK_RATES.max())
    # ~6000 matched steps; Thompson's regret there is of order sum_k gap_k log T / KL_k, about
    # 60 clicks or 0.01 per step for these arms. Allow 3x that below the best arm.
    assert estimate.value <= best + SIGMAS * estimate.stderr
    assert estimate.value >= best - 0.03 - SIGMAS * estimate.stderr
    assert estimate.ci_low > float(CLICK_RATES.mean())
    # Same seed, same walk, same number.
    assert replay(log, seed=3) == estimate


def test_replay_uses_the_exploration_settings() -> None:
    # epsilon = 1 folds the allocation to uniform: replay must then see the uniform value.
    log = _log(13, UNIFORM)
    explore_all = ThompsonPolicy.fresh(K, settings=PolicySettings(epsilon=1.0))
    estimate = replay(log, explore_all, seed=4)
    assert _close(estimate, float(CLICK_RATES.mean()))
    assert estimate.covers(float(CLICK_RATES.mean()))


def test_replay_walks_the_log_in_timestamp_order() -> None:
    log = _log(14, UNIFORM, n=5_000)
    shuffled_order = np.random.default_rng(0).permutation(log.n)
    shuffled = Log(
        actions=log.actions[shuffled_order],
        rewards=log.rewards[shuffled_order],
        propensities=log.propensities[shuffled_order],
        n_actions=K,
        timestamps=None if log.timestamps is None else log.timestamps[shuffled_order],
    )
    assert replay(shuffled, seed=5) == replay(log, seed=5)


def test_replay_refuses_non_uniform_logs() -> None:
    with pytest.raises(LogError, match="uniform-random logging policy"):
        replay(_log(15, SOFTMAX))


def test_thompson_policy_learning_is_pure() -> None:
    policy = ThompsonPolicy.fresh(K)
    learned = policy.learn(2, 1.0)
    assert policy.successes.sum() == 0.0
    assert learned.successes[2] == 1.0
    assert learned.failures.sum() == 0.0
    with pytest.raises(ValueError, match=r"rewards in \[0, 1\]"):
        policy.learn(0, 2.0)


# -------------------------------------------------------------------------------- loading


def test_load_generic_columns() -> None:
    log = load_log(DATA / "replay_small.csv")
    assert log.n_actions == 3
    assert log.actions.tolist() == [0, 1, 2, 0]
    assert log.rewards.tolist() == [1.0, 0.0, 0.5, 0.0]
    assert log.propensities.tolist() == [0.5, 0.25, 0.25, 0.5]
    assert log.positions is None
    assert log.timestamps is not None
    # ISO 8601 with or without an offset (naive = UTC), 'T' or space: seconds apart as written.
    assert (log.timestamps - log.timestamps[1]).tolist() == [1.0, 0.0, 2.0, 3.0]
    assert not log.actions.flags.writeable
    assert load_log(DATA / "replay_small.csv", n_actions=5).n_actions == 5


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "log.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("arm,reward\n0,1\n", "no propensity column"),
        ("item_id,propensity_score\n0,0.5\n", "no reward column"),
        ("click,propensity_score\n0,0.5\n", "no action column"),
        ("arm,reward,propensity\n0,1,0.5\n1,0,0\n", r"propensities must lie in \(0, 1\]"),
        ("arm,reward,propensity\n0,1,1.5\n", r"propensities must lie in \(0, 1\]"),
        ("arm,reward,propensity\n0,1,0.5\nx,0,0.5\n", "line 3"),
        ("arm,reward,propensity\n0,1,0.5\n-1,0,0.5\n", "actions must be >= 0"),
        ("arm,reward,propensity\n0,nan,0.5\n", "rewards must be finite"),
        ("arm,reward,propensity\n", "no rows"),
        ("", "empty file"),
    ],
)
def test_bad_logs_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(LogError, match=message):
        load_log(_write(tmp_path, text))


def test_n_actions_too_small_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "arm,reward,propensity\n0,1,0.5\n3,0,0.5\n")
    with pytest.raises(LogError, match="n_actions=2 but the log has action 3"):
        load_log(path, n_actions=2)


def test_bad_targets_are_refused() -> None:
    log = _log(16, UNIFORM, n=100)
    with pytest.raises(ValueError, match="shape"):
        ips(log, np.ones(K + 1) / (K + 1))
    with pytest.raises(ValueError, match="sum to 1"):
        ips(log, np.ones(K))
    with pytest.raises(ValueError, match="non-negative"):
        snips(log, np.array([1.5, -0.5, 0.0, 0.0, 0.0]))
    never_logged = Log(np.zeros(3, np.int64), np.ones(3), np.full(3, 0.2), n_actions=K)
    with pytest.raises(ValueError, match="probability 0 to every logged action"):
        snips(never_logged, fixed_arm_probabilities(K, 4))
    with pytest.raises(ValueError, match="never agreed"):
        replay(
            Log(np.zeros(3, np.int64), np.ones(3), np.full(3, 0.2), n_actions=K),
            StaticPolicy(fixed_arm_probabilities(K, 4)),
        )


# ---------------------------------------------------------------------- Open Bandit Dataset


@pytest.mark.parametrize(("campaign", "items"), [("men", 34), ("women", 46)])
def test_obd_logs_load(campaign: str, items: int) -> None:
    """The sample ships inside the package: the logs load from the installed archive."""
    random_log = load_obd_log(f"random_{campaign}")
    bts_log = load_obd_log(f"bts_{campaign}")
    for log in (random_log, bts_log):
        assert log.n == 10_000
        assert log.n_actions == items
        assert log.positions is not None
        assert set(log.positions.tolist()) == {1, 2, 3}
        assert np.all((log.propensities > 0.0) & (log.propensities <= 1.0))
        assert set(log.rewards.tolist()) <= {0.0, 1.0}
        assert log.timestamps is not None
        assert np.all(np.diff(log.timestamps) >= 0.0)
    for position in (1, 2, 3):
        at_slot = select_position(random_log, position)
        np.testing.assert_allclose(at_slot.propensities, 1.0 / items, rtol=1e-12)
        assert at_slot.positions is not None
        assert set(at_slot.positions.tolist()) == {position}
    # The Thompson logger is not uniform, and replay says so.
    assert bts_log.propensities.std() > 0.01
    with pytest.raises(LogError, match="uniform"):
        replay(select_position(bts_log, 1))


@pytest.mark.parametrize("campaign", ["men", "women"])
def test_evaluate_obd(campaign: str) -> None:
    results = evaluate_obd(campaign=campaign, position=1, seed=0)
    assert set(results) == {
        "random_on_policy",
        "bts_on_policy",
        "uniform_ips",
        "bts_ips",
        "bts_snips",
        "thompson_static_ips",
        "thompson_replay",
    }
    for name, estimate in results.items():
        values = (estimate.value, estimate.stderr, estimate.ci_low, estimate.ci_high)
        assert all(math.isfinite(value) for value in values), name
        assert estimate.ci_low <= estimate.value <= estimate.ci_high, name
    # IPS of the uniform policy on a uniform log is the logged mean, exactly.
    assert results["uniform_ips"].value == pytest.approx(results["random_on_policy"].value)
    # The BTS value estimated off-policy from the random log against the BTS log's own click
    # rate: two independent estimates, so compare their difference with its standard error
    # sqrt(se1^2 + se2^2). Observed at position 1: men z ~ -2.0 (the off-policy 95% CI alone
    # does not reach the on-policy rate), women z ~ -0.1.
    on_policy = results["bts_on_policy"]
    for name in ("bts_ips", "bts_snips"):
        estimate = results[name]
        z = (estimate.value - on_policy.value) / math.hypot(estimate.stderr, on_policy.stderr)
        assert abs(z) < 3.0, (name, z)
    assert results["thompson_replay"].covers(on_policy.value)
    assert results["thompson_replay"].effective_n > 0


def test_evaluate_obd_names_a_missing_campaign(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"'random_kids'.*holds bts_men, bts_women"):
        evaluate_obd(campaign="kids")
    with pytest.raises(FileNotFoundError, match=r"random_kids\.csv is missing"):
        evaluate_obd(tmp_path, campaign="kids")


def test_a_directory_laid_out_as_the_sample_is_read_from_disk(tmp_path: Path) -> None:
    """--data-dir: the full dataset (or any copy laid out the same way) instead of the sample."""
    with obd_sample_archive().open("rb") as raw, tarfile.open(fileobj=raw, mode="r:gz") as tar:
        tar.extractall(tmp_path, members=[tar.getmember(f"{name}_men.csv")
                                          for name in ("random", "bts")], filter="data")
    (tmp_path / "bts_men.csv").write_text(
        (tmp_path / "bts_men.csv").read_text().replace(",0.045525,", ",oops,", 1))
    assert load_obd_log("random_men", tmp_path).n == 10_000
    with pytest.raises(LogError, match=r"bts_men.csv, line 2: could not convert.*'oops'"):
        load_obd_log("bts_men", tmp_path)
