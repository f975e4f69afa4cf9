"""Contextual simulations: the worlds, the policies' regret, delayed and batched feedback, the
``bandit simulate contextual`` command and the contextual evaluation on the OBD sample.

Tolerances. Every regret comparison is paired: the policies meet the same streams, so what
varies little is the ratio of two policies' regrets on one stream (the regret of either alone
moves a lot with the stream's coefficients). Per-seed ratios measured with these settings
(seed 11 onwards, 6 to 8 seeds): obp-logistic at 5,000 rounds, contextual / context-free
Thompson 0.50 (sd 0.16 over seeds), contextual / uniform 0.31 (sd 0.03); segments at 2,000
rounds, contextual / context-free 0.35 (sd 0.10), per-segment / context-free 0.43 (sd 0.04);
delay or batch of 100 at 4,000 rounds, contextual / uniform 0.36 (sd 0.02); the Gaussian
linear world at 2,000 rounds, contextual / uniform 0.23 (sd 0.09), LinUCB / uniform 0.16 (sd
0.09). With n seeds the ratio's standard error is about sd / sqrt(n), and each bar below sits
at least 5 of them away (6 to 15), so a correct policy fails with probability below 3e-7
(normal tail); a policy that ignores the context gets the context-free ratio of 1 and fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bandit.ops.cli import main
from bandit.policy.layout import IntArray
from simulations.contextual import (
    ContextualResult,
    parse_contextual_policy,
    run_stream,
    simulate_contextual,
)
from simulations.contextual_worlds import ContextualWorld
from simulations.logs import select_position
from simulations.obd import load_obd_log
from simulations.obd_contextual import evaluate_contextual_obd
from simulations.replay import logged_mean, snips
from simulations.targets import uniform_probabilities

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(world: ContextualWorld, names: list[str], horizon: int, reps: int, *,
        delay: int = 0, batch: int = 1) -> dict[str, float]:
    results = simulate_contextual([parse_contextual_policy(n) for n in names], world,
                                  horizon=horizon, reps=reps, seed=11, delay=delay, batch=batch)
    return {result.policy: result.final()[0] for result in results}


def test_the_obp_world_is_obps_documented_example() -> None:
    # obp's SyntheticBanditDataset docstring: n_actions=10, dim_context=5,
    # logistic_reward_function, random_state=12345; its first context and expected rewards.
    stream = ContextualWorld("obp-logistic").stream(3, 12345)
    assert stream.contexts[0] == pytest.approx(
        [-0.20470766, 0.47894334, -0.51943872, -0.5557303, 1.96578057], abs=1e-8)
    assert stream.expected[0, :3] == pytest.approx([0.80210203, 0.73828559, 0.83199558],
                                                   abs=1e-8)
    assert stream.expected[0, -3:] == pytest.approx([0.81190503, 0.70617705, 0.68985306],
                                                    abs=1e-8)
    # The same seed, the same stream; the potential outcomes are Bernoulli(mu).
    again = ContextualWorld("obp-logistic").stream(3, 12345)
    assert np.array_equal(stream.rewards, again.rewards)
    assert set(np.unique(stream.rewards)) <= {0.0, 1.0}


def test_contextual_thompson_learns_the_obp_world() -> None:
    regret = run(ContextualWorld("obp-logistic"),
                 ["thompson", "context-free-thompson", "uniform"], 5000, 4)
    assert regret["thompson"] < regret["context-free-thompson"]
    assert regret["thompson"] <= 0.5 * regret["uniform"]


def test_where_the_best_arm_differs_by_segment_the_segment_policies_win() -> None:
    regret = run(ContextualWorld("segments"),
                 ["thompson", "segment-thompson", "context-free-thompson"], 2000, 4)
    assert regret["thompson"] < 0.7 * regret["context-free-thompson"]
    assert regret["segment-thompson"] < 0.7 * regret["context-free-thompson"]


@pytest.mark.parametrize(("delay", "batch"), [(100, 1), (0, 100)])
def test_delayed_and_batched_feedback_still_learn(delay: int, batch: int) -> None:
    # Without feedback the policy stays at its prior: uniform's regret. Delays and batches of
    # 100 rounds cost at most a few hundred rounds of it out of 4,000 (uniform: ~0.18 a round).
    regret = run(ContextualWorld("obp-logistic"), ["thompson", "uniform"], 4000, 3,
                 delay=delay, batch=batch)
    assert regret["thompson"] <= 0.5 * regret["uniform"]


def test_feedback_arrives_after_the_delay_and_in_batches() -> None:
    stream = ContextualWorld("linear").stream(10, 0)
    handed: list[tuple[int, int, list[int]]] = []

    def learn(start: int, stop: int, arms: IntArray) -> None:
        handed.append((start, stop, arms.tolist()))

    arms, regret = run_stream(lambda t: t % 3, learn, stream, delay=2, batch=3)
    # Updates after rounds 2, 5, 8 (every 3rd); by then rounds up to t - 2 have arrived.
    assert handed == [(0, 1, [0]), (1, 4, [1, 2, 0]), (4, 7, [1, 2, 0])]
    assert arms.tolist() == [t % 3 for t in range(10)]
    assert regret == pytest.approx(stream.best - stream.expected[np.arange(10), arms])
    assert np.all(regret >= 0.0)


def test_gaussian_rewards_and_the_linear_baselines_run() -> None:
    world = ContextualWorld("linear", "gaussian", n_arms=4, dim=3, noise_sd=0.5)
    stream = world.stream(2000, 1)
    assert np.std(stream.rewards - stream.expected) == pytest.approx(0.5, rel=0.05)
    regret = run(world, ["thompson", "linucb", "epsilon-greedy", "context-free-thompson",
                         "uniform"], 2000, 2)
    assert all(np.isfinite(value) and value >= 0.0 for value in regret.values())
    assert regret["thompson"] < regret["uniform"]
    assert regret["linucb"] < regret["uniform"]


def test_policy_specs_are_checked() -> None:
    assert parse_contextual_policy("linucb:alpha=0.5").settings["alpha"] == 0.5
    with pytest.raises(ValueError, match="unknown contextual policy"):
        parse_contextual_policy("lints")
    with pytest.raises(ValueError, match="precision must be > 0"):
        parse_contextual_policy("thompson:precision=0")
    with pytest.raises(ValueError, match="unknown setting 'gamma'"):
        parse_contextual_policy("thompson:gamma=1")
    with pytest.raises(ValueError, match="needs a world with segments"):
        parse_contextual_policy("segment-thompson").build(
            ContextualWorld("linear"), ContextualWorld("linear").model())
    with pytest.raises(ValueError, match="Bernoulli rewards only"):
        ContextualWorld("obp-logistic", "gaussian")


def test_the_result_reports_mean_and_standard_error() -> None:
    result = ContextualResult("p", np.array([[1.0, 2.0], [3.0, 4.0]]), 0.0)
    assert result.final() == pytest.approx((5.0, 2.0))  # totals 3 and 7: sd 2.83 / sqrt 2
    assert result.cumulative.tolist() == [[1.0, 3.0], [3.0, 7.0]]


def test_the_command_writes_its_plot_and_prints_its_table(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["simulate", "contextual", "--no-progress", "--world", "segments",
                 "--policy", "thompson", "--policy", "segment-thompson", "--policy", "uniform",
                 "--horizon", "300", "--reps", "2", "--delay", "5", "--batch", "10",
                 "--out", str(out)]) == 0
    assert (out / "regret.png").read_bytes().startswith(PNG_SIGNATURE)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["delay"] == 5 and summary["settings"]["batch"] == 10
    assert set(summary["policies"]) == {"thompson", "segment-thompson", "uniform"}
    rows = (out / "regret.csv").read_text().splitlines()
    assert rows[0] == "policy,t,mean_regret,stderr" and rows[-1].startswith("uniform,300,")
    printed = capsys.readouterr().out
    for label in ("thompson", "segment-thompson", "uniform", "/ uniform"):
        assert label in printed
    assert main(["simulate", "contextual", "--no-progress", "--world", "linear",
                 "--policy", "segment-thompson", "--out", str(out)]) == 2
    assert "needs a world with segments" in capsys.readouterr().err


def test_the_contextual_obd_evaluation_adds_up(capsys: pytest.CaptureFixture[str]) -> None:
    result = evaluate_contextual_obd(campaign="men", position=1, train_share=0.5)
    estimates = result.estimates
    assert result.dimension <= 64 and result.train_rows == 5000
    # The random log's logger is uniform: IPS of uniform weighs every row by exactly 1, and
    # SNIPS of the logging policy (weights all equal) is the observed mean, on any rows.
    assert estimates["uniform_ips"].value == pytest.approx(
        estimates["random_on_policy"].value, abs=1e-15)
    mean = estimates["random_on_policy"].value
    assert mean == pytest.approx(result.test_clicks / result.test_rows, abs=1e-15)
    for name in ("contextual_thompson", "thompson"):
        ips, sn = estimates[f"{name}_ips"], estimates[f"{name}_snips"]
        assert 0.0 <= ips.value <= 1.0 and 0.0 <= sn.value <= 1.0
        assert ips.ci_low < ips.value < ips.ci_high
        assert 0 < ips.effective_n <= result.test_rows
    # bts's own click rate at the slot is its log's mean.
    assert 0.0 < estimates["bts_on_policy"].value < 0.05
    assert main(["simulate", "replay", "--contextual", "--position", "1"]) == 0
    printed = capsys.readouterr().out
    assert "contextual_thompson_snips" in printed and "compare intervals" in printed


def test_snips_of_the_logging_policy_is_the_observed_mean() -> None:
    log = select_position(load_obd_log("random_women"), 2)
    assert snips(log, uniform_probabilities(log.n_actions)).value == pytest.approx(
        logged_mean(log).value, abs=1e-15)
