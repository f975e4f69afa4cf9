"""What a simulation run writes: summary.json, regret.csv, metrics.csv and plots (a contextual
run: summary.json, regret.csv and regret.png).

Pure functions from ``SimulationResult`` to files; matplotlib draws with the Agg backend, so it
works on machines without a display.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from simulations.contextual import ContextualResult
from simulations.engine import SimulationResult
from simulations.environments import Environment, lai_robbins_constant


def _mean_and_stderr(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over replications (axis 0) and its standard error."""
    reps = values.shape[0]
    mean = values.mean(axis=0)
    if reps < 2:
        return mean, np.zeros_like(mean)
    return mean, values.std(axis=0, ddof=1) / math.sqrt(reps)


def lai_robbins_applies(environment: Environment) -> bool:
    """The bound is for stationary Bernoulli problems with a unique best arm."""
    means = np.asarray(environment.means)
    return (environment.reward == "bernoulli" and not environment.changes
            and environment.drift_sd == 0 and environment.churn == 0
            and int(np.count_nonzero(means == means.max())) == 1)


def summary(results: Sequence[SimulationResult], environment: Environment,
            settings: dict[str, Any]) -> dict[str, Any]:
    policies = {}
    for result in results:
        pseudo, pseudo_err = _mean_and_stderr(result.pseudo_regret[:, -1:])
        regret, regret_err = _mean_and_stderr(result.regret[:, -1:])
        best, best_err = _mean_and_stderr(result.best_arm_rate[:, -1:])
        policies[result.policy] = {
            "final_mean_regret": float(pseudo[0]),
            "final_regret_stderr": float(pseudo_err[0]),
            "final_mean_realised_regret": float(regret[0]),
            "final_realised_regret_stderr": float(regret_err[0]),
            "final_best_arm_rate": float(best[0]),
            "final_best_arm_rate_stderr": float(best_err[0]),
            "pulls_per_arm": [float(p) for p in result.pulls.mean(axis=0)],
            "seconds": result.seconds,
            "pulls_per_second": float(result.pulls.sum() / max(result.seconds, 1e-9)),
        }
    document: dict[str, Any] = {"settings": settings, "policies": policies}
    if lai_robbins_applies(environment):
        constant = lai_robbins_constant(np.asarray(environment.means))
        document["lai_robbins"] = {
            "constant": constant,
            "meaning": "asymptotic slope: every consistent policy has lim inf R(T) / log T >= "
                       "constant; not a bound on the regret at any finite T",
            "per_decade": constant * math.log(10),
            "last_decade": {result.policy: _last_decade(result) for result in results},
        }
    return document


def _last_decade(result: SimulationResult) -> float | None:
    """Mean regret added from T/10 to T (log-interpolated between checkpoints): what the
    asymptotic slope bounds from below, per decade of t, as T grows."""
    t = result.checkpoints.astype(float)
    horizon = t[-1]
    if horizon / 10 < t[0]:
        return None
    mean, _ = _mean_and_stderr(result.pseudo_regret)
    return float(mean[-1] - np.interp(math.log(horizon / 10), np.log(t), mean))


def _write_regret_csv(path: Path, rows: Sequence[tuple[str, int, float, float]]) -> None:
    """``regret.csv``: ``policy,t,mean_regret,stderr``, one row per policy and checkpoint."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["policy", "t", "mean_regret", "stderr"])
        writer.writerows([policy, t, f"{m:.6g}", f"{s:.6g}"] for policy, t, m, s in rows)


def write_outputs(directory: Path, results: Sequence[SimulationResult],
                  environment: Environment, settings: dict[str, Any]) -> dict[str, Any]:
    directory.mkdir(parents=True, exist_ok=True)
    document = summary(results, environment, settings)
    (directory / "summary.json").write_text(json.dumps(document, indent=2) + "\n")
    rows = []
    for result in results:
        mean, stderr = _mean_and_stderr(result.pseudo_regret)
        rows += [(result.policy, t, m, s) for t, m, s in zip(
            result.checkpoints.tolist(), mean.tolist(), stderr.tolist(), strict=True)]
    _write_regret_csv(directory / "regret.csv", rows)
    with (directory / "metrics.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["policy", "t", "pseudo_regret", "pseudo_regret_stderr", "regret",
                         "regret_stderr", "best_arm_rate", "best_arm_rate_stderr"])
        for result in results:
            columns = [_mean_and_stderr(values) for values in
                       (result.pseudo_regret, result.regret, result.best_arm_rate)]
            for i, t in enumerate(result.checkpoints.tolist()):
                writer.writerow([result.policy, t, *(f"{c[j][i]:.6g}" for c in columns
                                                     for j in (0, 1))])
    plot_regret(directory / "regret.png", results, environment)
    plot_allocation(directory / "allocation.png", results)
    return document


def plot_regret(path: Path, results: Sequence[SimulationResult],
                environment: Environment) -> None:
    figure, axes = plt.subplots(figsize=(8, 5))
    for result in results:
        mean, stderr = _mean_and_stderr(result.pseudo_regret)
        t = result.checkpoints
        (line,) = axes.plot(t, mean, label=result.policy)
        axes.fill_between(t, mean - 1.96 * stderr, mean + 1.96 * stderr, alpha=0.2,
                          color=line.get_color(), linewidth=0)
    if results and lai_robbins_applies(environment):
        _draw_lai_robbins_slope(axes, results, environment)
    axes.set_xscale("log")
    axes.set_xlabel("t (pulls)")
    axes.set_ylabel("mean cumulative regret")
    axes.set_title("Regret (shaded: 95% interval of the mean over replications)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _draw_lai_robbins_slope(axes: Any, results: Sequence[SimulationResult],
                            environment: Environment) -> None:
    """The Lai-Robbins constant as what it is, an asymptotic slope in log t: a line of slope C
    per unit of log t from the best policy's curve at T/10 to T. A policy's curve flatter than
    it for ever would contradict the theorem; at finite t any curve may lie above or below."""
    best = min(results, key=lambda result: float(result.pseudo_regret[:, -1].mean()))
    t = best.checkpoints.astype(float)
    start = t[-1] / 10
    if start < t[0]:
        return
    mean, _ = _mean_and_stderr(best.pseudo_regret)
    anchor = float(np.interp(math.log(start), np.log(t), mean))
    constant = lai_robbins_constant(np.asarray(environment.means))
    span = np.geomspace(start, t[-1], 20)
    axes.plot(span, anchor + constant * np.log(span / start), "k--",
              label=f"Lai-Robbins asymptotic slope, {constant:.3g}·log t "
                    f"(from {best.policy} at T/10)")


def plot_allocation(path: Path, results: Sequence[SimulationResult]) -> None:
    """Mean share of each arm over time, one panel per policy."""
    count = len(results)
    figure, axes_list = plt.subplots(count, 1, figsize=(8, 2.6 * count), squeeze=False,
                                     sharex=True)
    for axes, result in zip(axes_list[:, 0], results, strict=True):
        shares = result.shares.mean(axis=0)  # (C, K)
        arms = shares.shape[1]
        if arms <= 10:
            axes.stackplot(result.checkpoints, shares.T,
                           labels=[f"arm {k}" for k in range(arms)])
            axes.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small")
        else:  # too many arms for a legend: the top arm by final share, the rest summed
            order = np.argsort(shares[-1])[::-1]
            axes.stackplot(result.checkpoints, shares[:, order[0]],
                           shares[:, order[1:]].sum(axis=1),
                           labels=[f"arm {order[0]}", "all others"])
            axes.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small")
        axes.set_xscale("log")
        axes.set_ylim(0, 1)
        axes.set_ylabel("share")
        axes.set_title(result.policy, fontsize="medium")
    axes_list[-1, 0].set_xlabel("t (pulls)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def sweep_table(results: Sequence[SimulationResult],
                grid: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for result, point in zip(results, grid, strict=True):
        mean, stderr = _mean_and_stderr(result.pseudo_regret[:, -1:])
        best, _ = _mean_and_stderr(result.best_arm_rate[:, -1:])
        rows.append({**point, "final_mean_regret": float(mean[0]),
                     "stderr": float(stderr[0]), "best_arm_rate": float(best[0])})
    return rows


def write_sweep(directory: Path, rows: Sequence[dict[str, Any]], names: Sequence[str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "sweep.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    figure, axes = plt.subplots(figsize=(7, 5))
    if len(names) == 2:
        xs = sorted({_key(row[names[0]]) for row in rows}, key=_order)
        ys = sorted({_key(row[names[1]]) for row in rows}, key=_order)
        grid = np.full((len(ys), len(xs)), np.nan)
        for row in rows:
            grid[ys.index(_key(row[names[1]])), xs.index(_key(row[names[0]]))] = \
                row["final_mean_regret"]
        image = axes.imshow(grid, cmap="viridis_r", aspect="auto", origin="lower")
        axes.set_xticks(range(len(xs)), xs)
        axes.set_yticks(range(len(ys)), ys)
        axes.set_xlabel(names[0])
        axes.set_ylabel(names[1])
        for (y, x), value in np.ndenumerate(grid):
            axes.text(x, y, f"{value:.3g}", ha="center", va="center", color="white")
        figure.colorbar(image, label="final mean regret (lower is better)")
    else:
        labels = [", ".join(f"{n}={_key(row[n])}" for n in names) for row in rows]
        axes.barh(labels, [row["final_mean_regret"] for row in rows],
                  xerr=[1.96 * row["stderr"] for row in rows])
        axes.set_xlabel("final mean regret (95% interval)")
    axes.set_title("Sweep: final regret per setting")
    figure.tight_layout()
    figure.savefig(directory / "sweep.png", dpi=110)
    plt.close(figure)


def _key(value: Any) -> str:
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _order(text: str) -> tuple[int, float | str]:
    try:
        return (0, float(text))
    except ValueError:
        return (1, text)


def write_contextual(directory: Path, results: Sequence[ContextualResult],
                     settings: dict[str, Any]) -> dict[str, Any]:
    """summary.json, regret.csv (mean cumulative regret per round and its standard error,
    every 1% of the horizon) and regret.png of a contextual run."""
    directory.mkdir(parents=True, exist_ok=True)
    policies = {}
    for result in results:
        final, final_stderr = result.final()
        policies[result.policy] = {"final_mean_regret": final,
                                   "final_regret_stderr": final_stderr,
                                   "seconds": result.seconds}
    document = {"settings": settings, "policies": policies}
    (directory / "summary.json").write_text(json.dumps(document, indent=2) + "\n")
    rows = []
    for result in results:
        mean, stderr = _mean_and_stderr(result.cumulative)
        rows += [(result.policy, t, float(mean[t - 1]), float(stderr[t - 1]))
                 for t in _contextual_steps(mean.shape[0])]
    _write_regret_csv(directory / "regret.csv", rows)
    plot_contextual_regret(directory / "regret.png", results, settings)
    return document


def _contextual_steps(horizon: int) -> list[int]:
    return sorted({max(1, round(horizon * i / 100)) for i in range(1, 101)})


def plot_contextual_regret(path: Path, results: Sequence[ContextualResult],
                           settings: dict[str, Any]) -> None:
    """Mean cumulative regret against the round, with the 95% interval of the mean."""
    figure, axes = plt.subplots(figsize=(8, 5))
    for result in results:
        mean, stderr = _mean_and_stderr(result.cumulative)
        t = np.arange(1, mean.shape[0] + 1)
        (line,) = axes.plot(t, mean, label=result.policy)
        axes.fill_between(t, mean - 1.96 * stderr, mean + 1.96 * stderr, alpha=0.2,
                          color=line.get_color(), linewidth=0)
    axes.set_xlabel("round")
    axes.set_ylabel("mean cumulative regret")
    feedback = f"delay {settings['delay']}, batch {settings['batch']}"
    axes.set_title(f"{settings['world']} world, K={settings['arms']}, {settings['reps']} "
                   f"replications, {feedback}\n(shaded: 95% interval of the mean)",
                   fontsize="medium")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
