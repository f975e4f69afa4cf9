"""`bandit simulate` end to end: files, plots, sweeps, scenarios, errors."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from bandit.ops.cli import main
from simulations import report
from simulations.engine import simulate as simulation
from simulations.environments import Environment, lai_robbins_constant
from simulations.policies import PolicySpec

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def simulate(*arguments: str) -> int:
    return main(["simulate", "--no-progress", *arguments])


def test_compares_policies_and_writes_every_output(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert simulate("--means", "0.5,0.48,0.48", "--horizon", "3000", "--reps", "8",
                    "--policy", "thompson", "--policy", "ucb1", "--seed", "1",
                    "--out", str(out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["policies"]) == {"thompson", "ucb1"}
    for row in summary["policies"].values():
        assert row["final_mean_regret"] > 0 and row["final_regret_stderr"] >= 0
        assert len(row["pulls_per_arm"]) == 3
        assert sum(row["pulls_per_arm"]) == pytest.approx(3000)
        assert row["seconds"] > 0
    assert summary["lai_robbins"]["constant"] > 0
    with (out / "regret.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["policy", "t", "mean_regret", "stderr"]
    checkpoints = [int(row[1]) for row in rows[1:] if row[0] == "thompson"]
    assert checkpoints == sorted(checkpoints) and checkpoints[-1] == 3000
    for picture in ("regret.png", "allocation.png"):
        assert (out / picture).read_bytes().startswith(PNG_SIGNATURE)
    printed = capsys.readouterr().out
    assert "thompson" in printed and "Lai-Robbins asymptotic slope" in printed


def test_lai_robbins_is_an_asymptotic_slope_never_a_finite_time_bound(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The run a user reported: Thompson's regret (~150) far under C log T (575 at T=100,000),
    # which the old output called a "lower bound". Here a shorter run of the same problem.
    out = tmp_path / "run"
    means = [0.5, 0.48, 0.48]
    assert simulate("--means", ",".join(map(str, means)), "--horizon", "20000", "--reps", "8",
                    "--policy", "thompson", "--seed", "1", "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert "lower bound" not in printed
    assert "not a bound on regret at a finite T" in printed
    summary = json.loads((out / "summary.json").read_text())
    lai_robbins = summary["lai_robbins"]
    constant = lai_robbins_constant(means)
    assert "bound_at_horizon" not in lai_robbins
    assert lai_robbins["per_decade"] == pytest.approx(constant * math.log(10))
    added = lai_robbins["last_decade"]["thompson"]
    assert f"{added:.2f}" in printed
    # The drawn line: slope C per unit of log t, from the best curve at T/10, not from t=1.
    figure, axes = plt.subplots()
    result = simulation(PolicySpec("thompson"), Environment.bernoulli(means), horizon=20000,
                        reps=4, seed=1)
    report._draw_lai_robbins_slope(axes, [result], Environment.bernoulli(means))
    [line] = axes.get_lines()
    x, y = (np.asarray(values, float) for values in line.get_data())
    plt.close(figure)
    assert x[0] == pytest.approx(2000) and x[-1] == pytest.approx(20000)
    np.testing.assert_allclose(np.diff(y) / np.diff(np.log(x)), constant, rtol=1e-9)


def test_same_seed_same_numbers(tmp_path: Path) -> None:
    documents = []
    for name in ("a", "b"):
        assert simulate("--means", "0.3,0.2", "--horizon", "500", "--reps", "4", "--seed", "7",
                        "--threads", "1" if name == "a" else "2",
                        "--out", str(tmp_path / name)) == 0
        documents.append(json.loads((tmp_path / name / "summary.json").read_text()))
    first, second = (d["policies"]["thompson"] for d in documents)
    assert first["final_mean_regret"] == second["final_mean_regret"]
    assert first["pulls_per_arm"] == second["pulls_per_arm"]


def test_scenarios_are_listed_and_run(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert simulate("--list") == 0
    listing = capsys.readouterr().out
    for name in ("chapelle-li-k10-eps0.1", "chapelle-li-k100-eps0.02", "chapelle-li-delayed",
                 "garivier-cappe-2011", "besson-2020-problem1", "besson-2020-problem2"):
        assert name in listing
    assert simulate("--scenario", "besson-2020-problem1", "--horizon", "2000", "--reps", "2",
                    "--policy", "thompson:half_life=500", "--out", str(tmp_path)) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "lai_robbins" not in summary  # not a stationary problem: no bound drawn
    assert summary["settings"]["scenario"] == "besson-2020-problem1"


def test_sweep_writes_a_table_and_a_plot(tmp_path: Path) -> None:
    assert simulate("--means", "0.5,0.4", "--horizon", "500", "--reps", "2",
                    "--policy", "thompson", "--sweep", "epsilon=0,0.2",
                    "--sweep", "temperature=1,2", "--out", str(tmp_path)) == 0
    with (tmp_path / "sweep.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    assert {(r["epsilon"], r["temperature"]) for r in rows} == {
        ("0.0", "1.0"), ("0.0", "2.0"), ("0.2", "1.0"), ("0.2", "2.0")}
    assert (tmp_path / "sweep.png").read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [(["--horizon", "10"], "exactly one of --means and --scenario"),
     (["--means", "0.5,x"], "is not a list of numbers"),
     (["--scenario", "nope"], "unknown scenario"),
     (["--means", "0.5,0.4", "--policy", "nonsense"], "nonsense"),
     (["--means", "0.5,0.4", "--reps", "0"], "must be positive")],
)
def test_bad_arguments_exit_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    assert simulate(*arguments, "--out", str(tmp_path)) == 2
    assert message in capsys.readouterr().err


def test_progress_bar_and_module_entry_point(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bandit", "simulate", "--means", "0.5,0.4", "--horizon", "200",
         "--reps", "3", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert "3/3" in result.stderr  # the progress bar's final state


def test_replay_of_the_shipped_open_bandit_dataset_sample(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "replay", "--campaign", "women", "--out", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "bts_ips" in table and "95% interval" in table
    # Every row is explained under the table, by its name.
    legend = table[table.index("eff. n: log rows"):].splitlines()[1:]
    estimates = json.loads((tmp_path / "replay.json").read_text())
    assert [line.split()[0] for line in legend] == list(estimates)
    for estimate in estimates.values():
        assert estimate["ci_low"] <= estimate["value"] <= estimate["ci_high"]


def test_replay_names_the_dataset_and_its_licence(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["simulate", "replay", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "Open Bandit Dataset sample by ZOZO, Inc." in help_text
    assert "CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/)" in help_text


def test_replay_of_a_missing_or_empty_data_dir_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "replay", "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err == (
        f"bandit simulate replay: --data-dir {tmp_path / 'nowhere'} is not a directory\n")
    assert main(["simulate", "replay", "--data-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"bandit simulate replay: no OBD log 'random_men': {tmp_path / 'random_men.csv'} "
        "is missing\n")
