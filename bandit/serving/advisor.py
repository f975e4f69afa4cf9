"""The tuning advisor: what a settings change would do over the next N decisions.

``POST /v1/experiments/{id}/advise`` takes a proposal in the PATCH body's format (validated by
the same code, so a proposal the advisor accepts is one PATCH accepts) and forecasts, from the
live posteriors, the current settings against the proposed ones with
:func:`bandit.forecast.forecast.forecast`: expected regret, share trajectories and time to a winner
call, with intervals.

The service's traffic and feedback enter the forecast as measured from the experiment's
history (or as given in the request):

- traffic rate: decisions served per second over the last hour of history samples;
- reward delay: by Little's law on the cumulative curves, the time since the served count was
  equal to today's observation count (valid when every decision eventually gets one reward
  event, which the coverage check looks at);
- posterior updates: every ``rate * refresh_interval_s`` decisions, as each process's cache
  refreshes (coarser when a scenario needs the probability path, to bound the work).

An experiment with guardrails also gets a forecast of its guardrail violations
(:mod:`bandit.forecast.guardrails`): per scenario, the decisions sent to arms that break a
guardrail in each drawn world, under the service's guarded allocation with its hard gate
(recomputed at most ``MAX_RECOMPUTATIONS`` times per future). Its regret, shares and winner call
are still forecast by the primary's simulation, which allocates by P(best) alone; the answer
says so in its notes. An experiment without guardrails is forecast exactly as before.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from bandit import policy
from bandit.errors import InvalidValue
from bandit.forecast import forecast as fc
from bandit.forecast import guardrails as gf
from bandit.model import Experiment, integer, mapping, number
from bandit.patches import parse_patch
from bandit.serving.cache import Snapshot, family_of, policy_settings, prior_array

#: Guarded allocations a guardrail forecast computes per future and scenario, at most.
MAX_GUARD_RECOMPUTATIONS = gf.MAX_RECOMPUTATIONS

#: Decisions per forecast, at most; the default horizon when the request names none.
MAX_DECISIONS = 1_000_000
DEFAULT_HORIZON_S = 3600.0
MIN_DECISIONS = 10
DEFAULT_REPS = 100
MIN_REPS = 10
MAX_REPS = 2000
#: Bound on a forecast's estimated single-thread run time (see :func:`estimated_seconds`).
MAX_SECONDS = 10.0
#: Posterior updates per replication on the probability path (one quadrature each).
MAX_UPDATES = 100
#: History window the traffic rate and delay are measured over.
RATE_WINDOW_S = 3600.0
#: Traffic rates a request may give (decisions per second); the lower bound keeps a forecast's
#: horizon in seconds (decisions / rate) finite.
MIN_TRAFFIC_PER_S = 1e-6
MAX_TRAFFIC_PER_S = 1e7
#: Reward coverage (observations per decision served) within which Little's law is trusted.
COVERAGE_RANGE = (0.8, 1.25)

_FIELDS = {"exploration", "arms", "decisions", "traffic_per_s", "reward_delay_s", "reps",
           "seed", "threshold", "max_loss"}


@dataclass(frozen=True)
class Request:
    proposed: Experiment
    changes: dict[str, Any]
    decisions: int | None
    traffic_per_s: float | None
    reward_delay_s: float | None
    reps: int
    seed: int
    threshold: float
    max_loss: float | None


def parse_request(body: object, current: Experiment) -> Request:
    """Check an advise body; the proposal goes through PATCH's own parser."""
    if current.model is not None:
        raise InvalidValue(
            f"advise: not supported yet for contextual experiments ({current.id!r} has a "
            "model): a forecast simulates context-free posteriors, and there are no recorded "
            "contexts to replay yet")
    empty: dict[str, Any] = {}
    data = mapping(empty if body is None else body, "body", _FIELDS)
    patch: dict[str, Any] = {"version": current.version}
    patch.update({key: data[key] for key in ("exploration", "arms") if key in data})
    proposal = parse_patch(patch, current, current.updated_at)
    decisions = data.get("decisions")
    if decisions is not None:
        decisions = integer(decisions, "decisions", low=MIN_DECISIONS, high=MAX_DECISIONS)
    traffic = data.get("traffic_per_s")
    if traffic is not None:
        traffic = number(traffic, "traffic_per_s", low=MIN_TRAFFIC_PER_S, high=MAX_TRAFFIC_PER_S)
    delay = data.get("reward_delay_s")
    if delay is not None:
        delay = number(delay, "reward_delay_s", low=0.0, high=30 * 86400.0)
    max_loss = data.get("max_loss")
    if max_loss is not None:
        max_loss = number(max_loss, "max_loss", low=0.0)
    return Request(
        proposed=proposal.experiment, changes=proposal.changes, decisions=decisions,
        traffic_per_s=traffic, reward_delay_s=delay,
        reps=integer(data.get("reps", DEFAULT_REPS), "reps", low=MIN_REPS, high=MAX_REPS),
        seed=integer(data.get("seed", secrets.randbits(31)), "seed", low=0, high=2**63 - 1),
        threshold=number(data.get("threshold", 0.95), "threshold", low=0.5, high=1.0),
        max_loss=max_loss,
    )


@dataclass(frozen=True)
class Traffic:
    """What the history says about the experiment's traffic and feedback."""

    rate: float | None  # decisions per second
    delay_s: float | None  # mean reward delay
    coverage: float | None  # observations per decision served, over the window
    notes: tuple[str, ...]


def measure_traffic(samples: list[dict[str, Any]], now: float, served_now: float,
                    observed_now: float) -> Traffic:
    """Traffic rate, reward delay and coverage from history samples plus the current counts."""
    points = [(float(s["t"]), float(sum(s["served"])), float(sum(s["n"]))) for s in samples
              if s["t"] >= now - RATE_WINDOW_S]
    points.append((now, served_now, observed_now))
    notes: list[str] = []
    (t0, served0, observed0) = points[0]
    elapsed, decisions = now - t0, served_now - served0
    if elapsed <= 0 or decisions <= 0:
        return Traffic(None, None, None, ("no decisions served in the history window",))
    rate = decisions / elapsed
    coverage = (observed_now - observed0) / decisions
    delay: float | None = None
    if not COVERAGE_RANGE[0] <= coverage <= COVERAGE_RANGE[1]:
        notes.append(f"rewards arrived for {coverage:.0%} of the decisions served: the delay "
                     "cannot be measured from the counts (pass reward_delay_s)")
    elif observed_now >= served_now:
        delay = 0.0
    else:
        # The time at which the served count equalled today's observation count.
        times = np.array([p[0] for p in points])
        served = np.array([p[1] for p in points])
        if observed_now < served[0]:
            notes.append("rewards lag the decisions by more than the history window")
        else:
            delay = now - float(np.interp(observed_now, served, times))
    return Traffic(rate, delay, coverage, tuple(notes))


@dataclass(frozen=True)
class Plan:
    """A forecast ready to run: the simulated problem, both scenarios, and what was assumed."""

    experiment: Experiment
    arms: tuple[str, ...]
    problem: fc.Problem
    current: fc.Scenario
    proposed: fc.Scenario
    reps: int
    seed: int
    rate: float
    assumptions: dict[str, Any]
    changes: dict[str, Any]
    #: With guardrails: the violations' forecast (None: the experiment has none).
    guards: GuardPlan | None = None


@dataclass(frozen=True)
class GuardPlan:
    problem: gf.GuardProblem
    current: gf.GuardScenario
    proposed: gf.GuardScenario
    #: The guardrails as configured, and the control they are judged against.
    metrics: list[dict[str, Any]]
    control: str | None


@dataclass(frozen=True)
class Results:
    """What :func:`run` computed: the primary's outcomes, and the guardrails' (if any) with
    which arms were infeasible in each drawn world."""

    outcomes: list[fc.Outcome]
    guards: list[gf.GuardOutcome] | None = None
    worlds: np.ndarray[Any, np.dtype[np.bool_]] | None = None


def plan(snapshot: Snapshot, request: Request, samples: list[dict[str, Any]],
         served: dict[int, int], max_loss: float, refresh_interval_s: float) -> Plan:
    """Everything the forecast needs, from the live snapshot, the history and the request;
    ``max_loss`` is the winner call's loss bound (the request's, or the stats default)."""
    current = snapshot.experiment
    traffic = measure_traffic(samples, snapshot.server_time, float(sum(served.values())),
                              float(snapshot.counts.sum()))
    notes = list(traffic.notes)
    rate = request.traffic_per_s or traffic.rate
    if rate is None:
        raise InvalidValue("traffic_per_s: no decisions were served in the last hour of this "
                           "experiment's history; give the traffic you expect (decisions/s)")
    delay_s = request.reward_delay_s
    if delay_s is None:
        delay_s = traffic.delay_s
        if delay_s is None:
            delay_s = 0.0
            notes.append("reward delay assumed 0")
    # Arms that neither scenario can serve change nothing: leave them out. (Both keep at
    # least one active arm: model.check_consistent refuses anything else.)
    proposed = request.proposed
    arms = tuple(arm for arm in proposed.arms
                 if _servable(current, arm) or _servable(proposed, arm))
    scenarios = (_scenario(current, arms, rate), _scenario(proposed, arms, rate))
    quadrature = sum(s.needs_quadrature for s in scenarios)
    update_every = service_every = max(1, round(rate * refresh_interval_s))
    guarded = _guard_cost(current, len(arms), service_every)
    decisions = _horizon(request, rate, len(arms), quadrature, notes, guarded)
    if quadrature:
        coarse = math.ceil(decisions / MAX_UPDATES)
        if coarse > update_every:
            notes.append(f"posteriors are updated every {coarse} decisions in the forecast "
                         f"(the service updates about every {update_every}): floors, caps and "
                         "paused arms need a full recomputation per update")
            update_every = coarse
    stats = np.zeros((3, len(arms)))
    counts = np.zeros(len(arms))
    for i, arm in enumerate(arms):
        index = current.arm_indices.get(arm)
        if index is not None:
            stats[:, i] = snapshot.stats[:, index]
            counts[i] = snapshot.counts[index]
    problem = fc.Problem(
        family=family_of(current), prior=prior_array(current), stats=stats, counts=counts,
        horizon=decisions, batch=update_every, delay=delay_s * rate,
        checkpoints=fc.linear_checkpoints(decisions), threshold=request.threshold,
        max_loss=max_loss)
    guards = None
    if current.guardrails:
        guards = _guard_plan(snapshot, proposed, arms, stats, counts, decisions,
                             service_every, delay_s * rate)
        every = guards.problem.every
        notes.append("regret, shares and the winner call are forecast by P(best) alone; the "
                     "guardrails' forecast simulates the guarded allocation (P(best feasible) "
                     f"and the gate), recomputed every {every} decisions"
                     + (f" (the service recomputes about every {service_every}: at most "
                        f"{gf.MAX_RECOMPUTATIONS} recomputations per future bound the work)"
                        if every > service_every else "")
                     + ", with one observation of every metric per decision"
                     + ("; forgetting is not simulated there"
                        if current.exploration.half_life_s is not None
                        or proposed.exploration.half_life_s is not None else ""))
    assumptions = {
        "decisions": decisions, "traffic_per_s": rate,
        "traffic_source": "given" if request.traffic_per_s else "measured",
        "reward_delay_s": delay_s,
        "delay_source": "given" if request.reward_delay_s is not None
        else "measured" if traffic.delay_s is not None else "assumed",
        "reward_coverage": traffic.coverage, "horizon_s": decisions / rate,
        "update_every": update_every, "reps": request.reps, "seed": request.seed,
        "threshold": problem.threshold, "max_loss": problem.max_loss, "notes": notes,
    }
    return Plan(experiment=current, arms=arms, problem=problem, current=scenarios[0],
                proposed=scenarios[1], reps=request.reps, seed=request.seed, rate=rate,
                assumptions=assumptions, changes=request.changes, guards=guards)


@dataclass(frozen=True)
class GuardCost:
    """What the guardrails' forecast costs: a guarded allocation's seconds, and the metrics
    simulated per decision (the primary and each guardrail)."""

    per_recomputation: float
    metrics: int
    update_every: int


def _guard_cost(experiment: Experiment, n_arms: int, update_every: int) -> GuardCost | None:
    if not experiment.guardrails:
        return None
    relative = any(g.relative for g in experiment.guardrails)
    return GuardCost(gf.seconds_per_recomputation(n_arms, relative),
                     1 + len(experiment.guardrails), update_every)


def estimated_seconds(decisions: int, reps: int, n_arms: int, quadrature: int,
                      guarded: GuardCost | None = None) -> float:
    """Single-thread run time of a forecast, from ``benchmarks/bench_advisor.py``'s figures.

    Per future and scenario: simulated decisions (about 15 million arm-decisions per second),
    winner-call looks (one best-arm quadrature each, about 0.2 ms + 15 us per arm), and for
    the ``quadrature`` scenarios that need it, one quadrature per posterior update. With
    guardrails (``guarded``), per future and scenario also the guardrails' forecast: at most
    ``MAX_RECOMPUTATIONS`` guarded allocations, and about 0.1 us per decision and metric.
    """
    per_quadrature = 2e-4 + 1.5e-5 * n_arms
    looks = 2 + fc.CHECKPOINTS // fc.CALL_STRIDE  # now, every third checkpoint, the last
    simulate = 2 * decisions * n_arms / 15e6
    seconds = reps * (simulate + (2 * looks + quadrature * MAX_UPDATES) * per_quadrature)
    if guarded is not None:
        every = gf.recompute_every(max(decisions, 1), guarded.update_every)
        recomputations = math.ceil(max(decisions, 1) / every)
        seconds += reps * 2 * (recomputations * guarded.per_recomputation
                               + decisions * guarded.metrics * 1e-7)
    return seconds


def _horizon(request: Request, rate: float, n_arms: int, quadrature: int,
             notes: list[str], guarded: GuardCost | None = None) -> int:
    """Decisions to forecast, within the run-time bound."""
    def cost(decisions: int) -> float:
        return estimated_seconds(decisions, request.reps, n_arms, quadrature, guarded)

    if request.decisions is not None:
        if cost(request.decisions) > MAX_SECONDS:
            raise InvalidValue(
                f"decisions: {request.decisions:,} decisions x {request.reps} reps x {n_arms} "
                f"arms would take about {cost(request.decisions):.0f} s to forecast (at most "
                f"{MAX_SECONDS:g} s); {_what_fits(request.decisions, request.reps, cost)}")
        return request.decisions
    decisions = max(MIN_DECISIONS, round(rate * DEFAULT_HORIZON_S))
    if cost(decisions) > MAX_SECONDS:
        fixed = cost(0)
        if fixed > MAX_SECONDS:
            raise InvalidValue(f"reps: {request.reps} futures x {n_arms} arms would take about "
                               f"{fixed:.0f} s to forecast (at most {MAX_SECONDS:g} s); "
                               f"{_what_fits(None, request.reps, cost)}")
        limit = int((MAX_SECONDS - fixed) / (cost(1_000_000) - fixed) * 1_000_000)
        notes.append(f"horizon shortened from an hour of traffic ({decisions} decisions) to "
                     f"{limit} to bound the work; pass decisions and reps to choose")
        decisions = max(MIN_DECISIONS, limit)
    return decisions


def _what_fits(decisions: int | None, reps: int, cost: Callable[[int], float]) -> str:
    """The largest ``decisions`` (at these reps) and ``reps`` (at these decisions) that fit
    the run-time bound: the cost is affine in decisions and proportional to reps."""
    fixed, slope = cost(0), cost(1) - cost(0)
    options = []
    if decisions is not None and fixed < MAX_SECONDS and slope > 0:
        most = int((MAX_SECONDS - fixed) / slope)
        if most >= MIN_DECISIONS:
            options.append(f"decisions {most:,} or fewer (at {reps} reps)")
    fitting_reps = int(reps * MAX_SECONDS / cost(decisions or 0))
    if fitting_reps >= MIN_REPS:
        at = f" (at {decisions:,} decisions)" if decisions is not None else ""
        options.append(f"reps {fitting_reps} or fewer{at}")
    if not options:
        return "ask for fewer decisions and reps"
    return "it fits with " + ", or ".join(options)


def _servable(experiment: Experiment, arm: str) -> bool:
    return arm in experiment.arm_indices and arm not in experiment.paused


def _scenario(experiment: Experiment, arms: tuple[str, ...], rate: float) -> fc.Scenario:
    """An experiment's settings over the simulated arms (which may include arms it lacks)."""
    settings = _policy_settings(experiment, arms)
    active = np.array([_servable(experiment, arm) for arm in arms])
    half_life_s = experiment.exploration.half_life_s
    return fc.Scenario(settings=settings.as_array(), active=active,
                       half_life=math.inf if half_life_s is None else half_life_s * rate)


def _policy_settings(experiment: Experiment, arms: tuple[str, ...]) -> policy.PolicySettings:
    """An experiment's kernel settings over the simulated arms (its control share's arm
    remapped; a control arm left out of the simulation is paused: the kernel ignores it)."""
    settings = policy_settings(experiment)
    if settings.control_index is not None:
        control = experiment.arms[settings.control_index]
        settings = replace(settings, control_index=arms.index(control) if control in arms
                           else None)
    return settings


def _guard_plan(snapshot: Snapshot, proposed: Experiment, arms: tuple[str, ...],
                stats: np.ndarray[Any, np.dtype[np.float64]],
                counts: np.ndarray[Any, np.dtype[np.float64]], decisions: int,
                update_every: int, delay: float) -> GuardPlan:
    """The guardrails' forecast from the snapshot's guardrail statistics (``snapshot.guards``)
    over the simulated arms (an arm new in the proposal starts from the priors)."""
    current = snapshot.experiment
    index = [current.arm_indices.get(arm) for arm in arms]

    def over_arms(values: np.ndarray[Any, np.dtype[np.float64]]) -> np.ndarray[
            Any, np.dtype[np.float64]]:
        out = np.zeros((*values.shape[:-1], len(arms)))
        for i, k in enumerate(index):
            if k is not None:
                out[..., i] = values[..., k]
        return out

    metrics = tuple(policy.Guard(g.family, over_arms(g.stats), over_arms(g.counts),
                                   np.asarray(g.prior, dtype=np.float64), g.higher, g.threshold,
                                   g.relative) for g in snapshot.guards)
    held_now = (snapshot.guarded.held if snapshot.guarded is not None
                else np.isin(np.arange(len(current.arms)), list(snapshot.held_stored)))
    held = np.array([k is not None and bool(held_now[k]) for k in index])

    def control_of(experiment: Experiment) -> int | None:
        control = experiment.control_arm
        return arms.index(control) if control is not None and control in arms else None

    def scenario(experiment: Experiment) -> gf.GuardScenario:
        return gf.GuardScenario(
            settings=_policy_settings(experiment, arms),
            active=np.array([_servable(experiment, arm) for arm in arms]),
            control=control_of(experiment),
            gate_min_samples=experiment.exploration.gate_min_samples, held=held)

    problem = gf.GuardProblem(
        family=family_of(current), prior=prior_array(current), stats=stats, counts=counts,
        metrics=metrics, control=control_of(current), horizon=decisions,
        every=gf.recompute_every(decisions, update_every), delay=delay)
    return GuardPlan(problem=problem, current=scenario(current), proposed=scenario(proposed),
                     metrics=[g.to_json() for g in current.guardrails],
                     control=current.control_arm)


def run(plan: Plan, threads: int) -> Results:
    outcomes = fc.forecast(plan.problem, [plan.current, plan.proposed], reps=plan.reps,
                           seed=plan.seed, threads=threads)
    if plan.guards is None:
        return Results(outcomes)
    guards, worlds = gf.forecast_guardrails(
        plan.guards.problem, [plan.guards.current, plan.guards.proposed], reps=plan.reps,
        seed=plan.seed, threads=threads)
    return Results(outcomes, guards, worlds)


def report(plan: Plan, results: Results) -> dict[str, Any]:
    """The advise endpoint's answer (see the OpenAPI document)."""
    current, proposed = results.outcomes
    difference = proposed.regret[:, -1] - current.regret[:, -1]
    mean, low, high = fc.mean_interval(difference)
    checkpoints = plan.problem.checkpoints
    return {
        "experiment": plan.experiment.id,
        "version": plan.experiment.version,
        "changes": plan.changes,
        "assumptions": plan.assumptions,
        "checkpoints": {"decisions": checkpoints.tolist(),
                        "seconds": [round(c / plan.rate, 3) for c in checkpoints.tolist()]},
        "arms": list(plan.arms),
        "current": _scenario_report(plan, current),
        "proposed": _scenario_report(plan, proposed),
        "difference": {"regret": {"mean": mean, "ci95": [low, high]},
                       "p_proposed_better": float(np.mean(difference < 0))},
        **({} if plan.guards is None else {"guardrails": _guard_report(plan, results)}),
    }


def _guard_report(plan: Plan, results: Results) -> dict[str, Any]:
    """The guardrails' forecast: per scenario the decisions sent to truly infeasible arms
    (count and share of the horizon) and to arms the gate held; which arms were infeasible
    in how many worlds; the paired difference."""
    guards = plan.guards
    assert guards is not None and results.guards is not None and results.worlds is not None
    horizon = plan.problem.horizon
    current, proposed = results.guards

    def band(values: np.ndarray[Any, np.dtype[np.float64]]) -> dict[str, Any]:
        mean, low, high = fc.mean_interval(values)
        return {"mean": mean, "ci95": [low, high],
                "range80": [float(np.quantile(values, 0.1)), float(np.quantile(values, 0.9))]}

    def scenario(outcome: gf.GuardOutcome) -> dict[str, Any]:
        shares = outcome.pulls.mean(axis=0) / horizon
        return {"regret": band(outcome.regret),
                "infeasible_decisions": band(outcome.infeasible),
                "infeasible_share": band(outcome.infeasible / horizon),
                "held_share": band(outcome.held / horizon),
                "shares": {arm: round(float(shares[i]), 6) for i, arm in enumerate(plan.arms)}}

    difference = (proposed.infeasible - current.infeasible) / horizon
    mean, low, high = fc.mean_interval(difference)
    worlds = results.worlds
    return {
        "metrics": guards.metrics,
        "control": guards.control,
        "recompute_every": guards.problem.every,
        "recomputations": math.ceil(horizon / guards.problem.every),
        "p_infeasible": {arm: float(worlds[:, i].mean()) for i, arm in enumerate(plan.arms)},
        "p_any_infeasible": float(worlds.any(axis=1).mean()),
        "current": scenario(current),
        "proposed": scenario(proposed),
        "difference": {"infeasible_share": {"mean": mean, "ci95": [low, high]},
                       "regret": _paired(proposed.regret - current.regret),
                       "p_proposed_safer": float(np.mean(difference < 0))},
    }


def _paired(difference: np.ndarray[Any, np.dtype[np.float64]]) -> dict[str, Any]:
    mean, low, high = fc.mean_interval(difference)
    return {"mean": mean, "ci95": [low, high]}


def _scenario_report(plan: Plan, outcome: fc.Outcome) -> dict[str, Any]:
    final = outcome.regret[:, -1]
    mean, low, high = fc.mean_interval(final)
    best_mean, best_low, best_high = fc.mean_interval(outcome.best_arm_rate)
    shares = {
        arm: {"mean": _rounded(outcome.shares[:, :, i].mean(axis=0)),
              "low": _rounded(np.quantile(outcome.shares[:, :, i], 0.1, axis=0)),
              "high": _rounded(np.quantile(outcome.shares[:, :, i], 0.9, axis=0))}
        for i, arm in enumerate(plan.arms)
    }
    return {
        "regret": {"mean": mean, "ci95": [low, high],
                   "range80": [float(np.quantile(final, 0.1)), float(np.quantile(final, 0.9))]},
        "regret_curve": {"mean": _rounded(outcome.regret.mean(axis=0)),
                         "low": _rounded(np.quantile(outcome.regret, 0.1, axis=0)),
                         "high": _rounded(np.quantile(outcome.regret, 0.9, axis=0))},
        "shares": shares,
        "best_arm_rate": {"mean": best_mean, "ci95": [best_low, best_high]},
        "winner_call": _call_report(plan, outcome),
    }


def _call_report(plan: Plan, outcome: fc.Outcome) -> dict[str, Any]:
    called = outcome.call_checkpoint >= 0
    n_called = int(called.sum())
    low, high = fc.wilson_interval(n_called, plan.reps)
    report: dict[str, Any] = {"probability": n_called / plan.reps, "ci95": [low, high],
                              "correct": None, "decisions": None, "seconds": None}
    if n_called:
        at = fc.call_times(plan.problem)[outcome.call_checkpoint[called]].astype(np.float64)
        median, p10, p90 = (float(np.quantile(at, q)) for q in (0.5, 0.1, 0.9))
        report["correct"] = float(outcome.call_correct[called].mean())
        report["decisions"] = {"median": median, "range80": [p10, p90]}
        report["seconds"] = {"median": median / plan.rate,
                             "range80": [p10 / plan.rate, p90 / plan.rate]}
    return report


def _rounded(values: np.ndarray[Any, np.dtype[np.float64]]) -> list[float]:
    return [round(v, 6) for v in values.tolist()]
