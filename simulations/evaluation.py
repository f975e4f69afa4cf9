"""Evaluate policies on an experiment's own decision log (``bandit simulate replay --log``).

The log (:mod:`simulations.decision_log`) is cut in time at ``train_share`` of its rows: the
rows before the cut are the *training* slice, those after it the *evaluation* slice. Every
target policy is then a static allocation, fixed at the cut, and its value is estimated on
the evaluation slice (at one ``position`` for a slate log) by every estimator of
:mod:`simulations.ope`, with a cross-fitted reward model (:mod:`simulations.reward_model`)
fitted on the evaluation slice:

- ``fixed:ARM``: always that arm; ``uniform``: every arm alike (neither needs training);
- ``thompson`` (``thompson:epsilon=0.1,min_share=0.02,...``, the PATCH body's exploration
  settings, checked by the service's own validation): the service's Thompson allocation with
  those settings, from the posterior of the training slice's rewards (forgetting to the cut
  with a ``half_life_s``), computed by the service's allocation code;
- ``contextual`` (same settings): the service's contextual Thompson sampling, its posterior
  learnt on the training slice's ``features`` and rewards, evaluated per row: pi(a | x_i) is
  the allocate endpoint's probability for the row's own features.

The value estimated is the expected reward per decision (at that position) had the target
served the evaluation slice's traffic: the same users, contexts and times, a policy frozen at
the cut. Beside the estimates, the logger's own value (the slice's mean reward).

**The advisor beside the log.** For every ``thompson`` target on a context-free log, the
tuning advisor's forecast of the same quantity (:func:`advisor_forecast`): from the training
slice's posterior, the advisor's simulation (:func:`bandit.forecast.forecast.forecast`) plays
the service's policy with the proposed settings over as many decisions as the evaluation
slice holds, with the log's traffic rate, reward delay and the service's refresh, in plausible
worlds drawn from that posterior, and reports the expected reward per decision. The two
answer one question from two sides: the estimators *measure* a frozen policy on rewards that
were observed, with a frequentist interval; the forecast *predicts* a policy that keeps
learning, from the posterior alone, its range the spread over the worlds the posterior still
allows. They agree when the posterior is right and the arms stay as they were; they part when
the arms drift, when the training slice is small (the forecast's range is then wide), or when
learning after the cut matters (the forecast keeps learning, the estimates do not).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from bandit.forecast import forecast as fc
from bandit.policy.layout import FloatArray, IntArray
from bandit.serving import advisor
from simulations.decision_log import DecisionLog, logged_experiment
from simulations.logs import Log, LogError, take_rows
from simulations.ope import DEFAULT_LAMBDA, DEFAULT_TAU, ESTIMATORS, Estimate, estimate_all
from simulations.replay import logged_mean
from simulations.reward_model import DEFAULT_FOLDS, fit_reward_model
from simulations.targets import (
    ServicePolicy,
    arm_statistics,
    contextual_posterior,
    contextual_probabilities,
    default_model,
    fixed_arm_probabilities,
    service_allocation,
    service_settings,
    uniform_probabilities,
)

__all__ = [
    "DEFAULT_TARGETS",
    "Evaluation",
    "Forecast",
    "TargetResult",
    "TargetSpec",
    "advisor_forecast",
    "evaluate_log",
    "parse_target",
    "write_evaluation",
]

TargetKind = Literal["fixed", "uniform", "thompson", "contextual"]
TARGET_KINDS: tuple[TargetKind, ...] = ("fixed", "uniform", "thompson", "contextual")
#: Targets evaluated when none is named (``contextual`` only on a log with features).
DEFAULT_TARGETS = ("uniform", "thompson", "thompson:epsilon=0.1", "contextual")
#: Plausible futures of the advisor's forecast, as the advise endpoint's default.
DEFAULT_FORECAST_REPS = advisor.DEFAULT_REPS
#: The service's default cache refresh interval (``bandit.settings``): posterior updates.
DEFAULT_REFRESH_S = 0.2


@dataclass(frozen=True)
class TargetSpec:
    """A target policy as the command line names it (see the module notes)."""

    kind: TargetKind
    text: str
    arm: str | None = None
    exploration: Mapping[str, object] = field(default_factory=dict)


def parse_target(text: str) -> TargetSpec:
    """``fixed:ARM``, ``uniform``, ``thompson[:key=value,...]``, ``contextual[:...]``.

    Settings are the service's exploration names (``half_life_s`` in seconds, ``none`` for
    null, ``control=ARM@SHARE``); the service's own validation checks them later, against the
    log's arms.
    """
    name, _, rest = text.strip().partition(":")
    if name not in TARGET_KINDS:
        raise ValueError(f"--target {text!r}: unknown target {name!r}; one of "
                         f"fixed:ARM, uniform, thompson[:settings], contextual[:settings]")
    if name == "fixed":
        if not rest:
            raise ValueError(f"--target {text!r}: fixed needs an arm, e.g. fixed:control")
        return TargetSpec("fixed", text, arm=rest)
    if name == "uniform":
        if rest:
            raise ValueError(f"--target {text!r}: uniform takes no settings")
        return TargetSpec("uniform", text)
    exploration: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--target {text!r}: expected key=value, got {item!r}")
        if key in exploration:
            raise ValueError(f"--target {text!r}: {key} given twice")
        exploration[key] = _setting_value(text, key, raw.strip())
    return TargetSpec(cast(TargetKind, name), text, exploration=exploration)


def _setting_value(text: str, key: str, raw: str) -> object:
    if raw.lower() in ("none", "null"):
        return None
    if key == "control":
        arm, sep, share = raw.rpartition("@")
        if not sep or not arm:
            raise ValueError(f"--target {text!r}: control=ARM@SHARE, got {raw!r}")
        return {"arm": arm, "share": _number(text, key, share)}
    return _number(text, key, raw)


def _number(text: str, key: str, raw: str) -> int | float:
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"--target {text!r}: {key} must be a number, got {raw!r}") from None


@dataclass(frozen=True)
class Forecast:
    """The advisor's forecast of a target's expected reward per decision (module notes).

    ``value`` is the mean over ``reps`` plausible futures, ``ci_low``/``ci_high`` its 95%
    Monte Carlo interval, ``range80`` the 10% and 90% quantiles over the futures (the
    posterior's uncertainty about the worlds, which more reps do not shrink).
    """

    value: float
    ci_low: float
    ci_high: float
    range80: tuple[float, float]
    decisions: int
    reps: int
    update_every: int
    delay_decisions: float
    notes: tuple[str, ...]


@dataclass(frozen=True)
class TargetResult:
    """One target's estimates, its allocation (context-free targets) and the forecast."""

    description: str
    estimates: dict[str, Estimate]
    allocation: list[float] | None
    forecast: Forecast | None


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate_log` found, and on which rows."""

    source: str
    experiment: str | None
    reward: str
    reward_source: str
    arms: tuple[str, ...]
    position: int
    split_time: float
    train_rows: int
    test_rows: int
    folds: int
    seed: int
    tau: float
    lambda_: float
    logged: Estimate
    targets: dict[str, TargetResult]
    notes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """The ``evaluation.json`` document."""
        return {
            "source": self.source, "experiment": self.experiment, "reward": self.reward,
            "reward_source": self.reward_source, "arms": list(self.arms),
            "position": self.position, "split_time": self.split_time,
            "train_rows": self.train_rows, "test_rows": self.test_rows,
            "reward_model": {"folds": self.folds, "seed": self.seed,
                             "kind": "logistic" if self.reward == "bernoulli" else "ridge"},
            "switch_dr_tau": self.tau, "dros_lambda": self.lambda_,
            "logged": _plain(self.logged),
            "targets": {label: {"description": result.description,
                                "estimates": {name: _plain(e)
                                              for name, e in result.estimates.items()},
                                "allocation": result.allocation,
                                "forecast": None if result.forecast is None
                                else _plain(result.forecast)}
                        for label, result in self.targets.items()},
            "notes": list(self.notes),
        }


def _plain(value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in value.__dataclass_fields__:
        item = getattr(value, key)
        out[key] = list(item) if isinstance(item, tuple) else item
    return out


def evaluate_log(decisions: DecisionLog, targets: Sequence[str] | None = None, *,
                 train_share: float = 0.5, position: int | None = None,
                 folds: int = DEFAULT_FOLDS, seed: int = 0, tau: float = DEFAULT_TAU,
                 lambda_: float = DEFAULT_LAMBDA, forecast_reps: int = DEFAULT_FORECAST_REPS,
                 refresh_interval_s: float = DEFAULT_REFRESH_S) -> Evaluation:
    """Split, learn, estimate every target and forecast the Thompson ones (module notes).

    ValueError (or :class:`~simulations.logs.LogError`) names a target, setting or option the
    log cannot serve.
    """
    if not 0.0 < train_share < 1.0:
        raise ValueError(f"--train-share must be in (0, 1), got {train_share}")
    log = decisions.log
    contextual = log.features is not None
    specs = [parse_target(text) for text in targets or
             [t for t in DEFAULT_TARGETS if contextual or t != "contextual"]]
    if len({spec.text for spec in specs}) < len(specs):
        raise ValueError("a --target is given twice")
    notes = list(decisions.notes)
    position = _position(decisions, position, notes)
    train_index, test_index, split_time = _split(log, train_share, position)
    train, test = take_rows(log, train_index), take_rows(log, test_index)
    delays = decisions.reward_delays[test_index]
    if test.n < 2:
        raise ValueError(f"only {test.n} row(s) after the cut at position {position}: lower "
                         "--train-share")
    if not 1 <= folds <= test.n:
        raise ValueError(f"--folds must be from 1 to the evaluation rows ({test.n})")
    model = fit_reward_model(test, "logistic" if decisions.reward == "bernoulli" else "ridge",
                             folds=folds, seed=seed)
    results = {}
    for spec in specs:
        probabilities, description, allocation, forecast = _target(
            spec, decisions, train, test, split_time, _traffic(test, delays), forecast_reps,
            seed, refresh_interval_s, notes)
        try:
            estimates = estimate_all(test, probabilities, model, tau=tau, lambda_=lambda_)
        except ValueError as error:  # this target only: the others are still estimated
            notes.append(f"{spec.text}: no estimate: {error}")
            continue
        results[spec.text] = TargetResult(description=description, estimates=estimates,
                                          allocation=allocation, forecast=forecast)
    if not results:
        raise ValueError("no target could be estimated: " + "; ".join(notes[-len(specs):]))
    for label, result in results.items():
        weak = [name for name, e in result.estimates.items() if not e.normal_ok]
        if weak:
            notes.append(f"{label}: {', '.join(weak)} rest on few weighted rows or rewards "
                         "(eff. n < 30 or < 5 non-zero terms): their normal intervals are not "
                         "to be trusted")
    return Evaluation(
        source=decisions.source, experiment=decisions.experiment, reward=decisions.reward,
        reward_source=decisions.reward_source, arms=decisions.arms, position=position,
        split_time=split_time, train_rows=train.n, test_rows=test.n, folds=folds, seed=seed,
        tau=tau, lambda_=lambda_, logged=logged_mean(test), targets=results,
        notes=tuple(notes))


def _position(decisions: DecisionLog, position: int | None, notes: list[str]) -> int:
    present = decisions.positions
    if position is None:
        if len(present) > 1:
            notes.append(f"a slate log (positions {', '.join(map(str, present))}): evaluated "
                         "at position 0; pass --position for another")
        return 0 if 0 in present else present[0]
    if position not in present:
        raise LogError(f"{decisions.source}: no rows at --position {position}; positions "
                       f"present: {', '.join(map(str, present))}")
    return position


def _split(log: Log, train_share: float, position: int) -> tuple[IntArray, IntArray, float]:
    """Rows (indices) of the training slice (every position) strictly before the cut, and of
    the evaluation slice at ``position`` from the cut on; the rows of one slate share a time
    and stay together."""
    assert log.timestamps is not None and log.positions is not None
    times = np.sort(log.timestamps)
    cut = min(max(round(train_share * log.n), 1), log.n - 1)
    split_time = float(times[cut])
    before = log.timestamps < split_time
    if not before.any():
        raise ValueError("no row before the cut: every decision has the same time; raise "
                         "--train-share")
    after = ~before & (log.positions == position)
    return np.flatnonzero(before), np.flatnonzero(after), split_time


#: A target resolved on a log: (probabilities, description, context-free allocation, forecast).
_Resolved = tuple[Any, str, list[float] | None, Forecast | None]


def _target(spec: TargetSpec, decisions: DecisionLog, train: Log, test: Log,
            split_time: float, traffic: dict[str, float | None], reps: int, seed: int,
            refresh_interval_s: float, notes: list[str]) -> _Resolved:
    """(probabilities, description, context-free allocation, forecast) of one target."""
    arms, k = decisions.arms, len(decisions.arms)
    if spec.kind == "fixed":
        assert spec.arm is not None
        if spec.arm not in arms:
            raise ValueError(f"--target {spec.text}: arm {spec.arm!r} is not in the log "
                             f"{decisions.source}; its arms are {', '.join(arms)}")
        allocation = fixed_arm_probabilities(k, arms.index(spec.arm))
        return allocation, f"always arm {spec.arm!r}", allocation.tolist(), None
    if spec.kind == "uniform":
        allocation = uniform_probabilities(k)
        return allocation, f"uniform over the {k} arms", allocation.tolist(), None
    try:
        policy = service_settings(arms, decisions.reward, spec.exploration,
                                  logged_experiment(decisions.metadata))
    except ValueError as error:
        raise ValueError(f"--target {spec.text}: {error}") from None
    settings = ", ".join(f"{key}={value}" for key, value in spec.exploration.items()) or (
        "the experiment's settings" if logged_experiment(decisions.metadata) is not None
        else "default settings")
    if spec.kind == "thompson":
        stats, counts = arm_statistics(train, policy.family, half_life_s=policy.half_life_s,
                                       at=split_time)
        allocation = service_allocation(policy, stats, counts)
        forecast = None
        if test.features is None:
            forecast = advisor_forecast(policy, stats, counts, decisions=test.n,
                                        **traffic, reps=reps, seed=seed,
                                        refresh_interval_s=refresh_interval_s)
        return (allocation, f"the service's Thompson allocation ({settings}) from the "
                f"posterior of the {train.n:,} training rows", allocation.tolist(), forecast)
    if test.features is None:
        raise ValueError(f"--target {spec.text}: the log has no features column (not a "
                         "contextual experiment's log)")
    model = decisions.model
    if model is None:
        model = default_model(test.features.shape[1], decisions.reward)
        notes.append(f"{spec.text}: no model in the log's metadata (a JSON-lines export): the "
                     "contextual posterior uses the service's default prior for every column")
    posterior = contextual_posterior(model, train, policy.settings,
                                     half_life_s=policy.half_life_s, at=split_time)
    return (contextual_probabilities(posterior, test.features),
            f"the service's contextual Thompson sampling ({settings}), posterior learnt on "
            f"the {train.n:,} training rows, pi(a | x) per row", None, None)


def _traffic(test: Log, delays: FloatArray) -> dict[str, float | None]:
    """The evaluation slice's traffic rate (decisions per second) and mean reward delay."""
    assert test.timestamps is not None
    span = float(test.timestamps.max() - test.timestamps.min())
    observed = delays[np.isfinite(delays)]
    return {"rate": (test.n - 1) / span if span > 0.0 else None,
            "delay_s": float(observed.mean()) if observed.size else None}


def advisor_forecast(policy: ServicePolicy, stats: FloatArray, counts: FloatArray, *,
                     decisions: int,
                     rate: float | None, delay_s: float | None, reps: int, seed: int,
                     refresh_interval_s: float = DEFAULT_REFRESH_S) -> Forecast:
    """The tuning advisor's forecast of the expected reward per decision over the next
    ``decisions`` under ``policy``, from the posterior ``stats`` (module notes).

    Built as the advise endpoint builds it (:mod:`bandit.serving.advisor`): the same
    scenario, posterior updates every ``rate * refresh_interval_s`` decisions (coarser when
    the probability path needs it), the mean reward delay in decisions, the advisor's bound
    on the work. The forecast reports regret; the reward per decision of future r is its
    truth's best mean minus its regret per decision, the truth redrawn from the forecast's own
    seed sequence (the forecast draws truth r from child 0 of child r of ``seed``).
    """
    notes: list[str] = []
    n_arms = stats.shape[1]
    if rate is None:
        rate = 1.0
        notes.append("the evaluation slice spans no time: 1 decision per second assumed")
    if delay_s is None:
        delay_s = 0.0
        notes.append("no reward_timestamp: reward delay assumed 0")
    half_life = policy.half_life_s
    scenario = fc.Scenario(settings=policy.settings.as_array(),
                           active=np.array([arm not in policy.experiment.paused
                                            for arm in policy.experiment.arms]),
                           half_life=math.inf if half_life is None else half_life * rate)
    quadrature = int(scenario.needs_quadrature)
    horizon = max(min(decisions, advisor.MAX_DECISIONS), advisor.MIN_DECISIONS)
    while horizon > advisor.MIN_DECISIONS and \
            advisor.estimated_seconds(horizon, reps, n_arms, quadrature) > advisor.MAX_SECONDS:
        horizon = max(horizon // 2, advisor.MIN_DECISIONS)
    if horizon < decisions:
        notes.append(f"forecast over {horizon:,} decisions (the evaluation slice has "
                     f"{decisions:,}): the advisor's bound on a forecast's work")
    update_every = max(1, round(rate * refresh_interval_s))
    if quadrature:
        update_every = max(update_every, math.ceil(horizon / advisor.MAX_UPDATES))
    problem = fc.Problem(family=policy.family, prior=policy.prior, stats=stats, counts=counts,
                         horizon=horizon, batch=update_every, delay=delay_s * rate,
                         checkpoints=fc.linear_checkpoints(horizon), threshold=0.95,
                         max_loss=0.0)
    [outcome] = fc.forecast(problem, [scenario], reps=reps, seed=seed, threads=1)
    values = np.empty(reps)
    for r, child in enumerate(np.random.SeedSequence(seed).spawn(reps)):
        truth_seed = child.spawn(3)[0]
        means, _ = fc.draw_truths(policy.family, stats, policy.prior,
                                  np.random.default_rng(truth_seed))
        values[r] = means.max() - outcome.regret[r, -1] / horizon
    mean, low, high = fc.mean_interval(values)
    return Forecast(value=mean, ci_low=low, ci_high=high,
                    range80=(float(np.quantile(values, 0.1)), float(np.quantile(values, 0.9))),
                    decisions=horizon, reps=reps, update_every=update_every,
                    delay_decisions=delay_s * rate, notes=tuple(notes))


# ------------------------------------------------------------------------------------ outputs


def write_evaluation(out: Path, evaluation: Evaluation, text: str) -> list[Path]:
    """``evaluation.json`` (``text``, the JSON document) and ``evaluation.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    document = out / "evaluation.json"
    document.write_text(text + "\n")
    plot = out / "evaluation.png"
    _plot(evaluation, plot)
    return [document, plot]


def _plot(evaluation: Evaluation, path: Path) -> None:
    """Each target's estimates with their intervals, estimators side by side; the advisor's
    forecast (mean and 80% range) as a hollow marker; the logger's value as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(evaluation.targets)
    names = [*ESTIMATORS, "advisor"]
    width = 0.8 / len(names)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.6 * len(labels) + 2.0), 4.5))
    colours = plt.get_cmap("tab10")
    for j, name in enumerate(names):
        xs, ys, lows, highs = [], [], [], []
        for i, label in enumerate(labels):
            result = evaluation.targets[label]
            x = i - 0.4 + width * (j + 0.5)
            if name == "advisor":
                if result.forecast is not None:
                    xs.append(x)
                    ys.append(result.forecast.value)
                    lows.append(result.forecast.range80[0])
                    highs.append(result.forecast.range80[1])
            elif name in result.estimates:
                estimate = result.estimates[name]
                xs.append(x)
                ys.append(estimate.value)
                lows.append(estimate.ci_low)
                highs.append(estimate.ci_high)
        if not xs:
            continue
        y = np.array(ys)
        errors = np.vstack([y - np.array(lows), np.array(highs) - y])
        axes.errorbar(xs, y, yerr=errors, fmt="o" if name != "advisor" else "D",
                      mfc="none" if name == "advisor" else colours(j), color=colours(j),
                      capsize=3, label=name if name != "advisor" else "advisor (80% range)")
    axes.axhline(evaluation.logged.value, color="grey", linestyle="--", linewidth=1,
                 label="logger (mean reward)")
    axes.set_xticks(range(len(labels)))
    axes.set_xticklabels(labels, rotation=15, ha="right", fontsize=8)
    axes.set_ylabel("expected reward per decision")
    axes.set_title(f"{evaluation.experiment or Path(evaluation.source).name}: "
                   f"{evaluation.test_rows:,} evaluation rows, position {evaluation.position}; "
                   "95% intervals", fontsize=9)
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
