"""Decisions of one service process: drawn from cached snapshots, signed, counted.

A decision costs no Redis round trip unless it is sticky (the unit's assignment is stored the
first time) or provisional (counted as a failure at once). Each is signed (``bandit.tokens``)
so that a reward can only name a decision really served; the counts of decisions served, and
the sample-ratio test's sums of their draws (``DrawTally``), are flushed to Redis every second.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from bandit import policy
from bandit.assignment import arm_point, arm_points
from bandit.errors import InvalidValue, NotFound, StoreUnavailable
from bandit.features import feature_hash
from bandit.inputs import AllocateRequest
from bandit.model import archived_message
from bandit.policy.layout import FloatArray
from bandit.serving.cache import MAX_CHOICES, ExperimentCache, Snapshot
from bandit.serving.changes import cancelling
from bandit.serving.decision_log import DecisionLog
from bandit.settings import Settings
from bandit.store.codec import Draws
from bandit.store.redis_store import RedisStore
from bandit.tokens import DecisionSigner

logger = logging.getLogger(__name__)

#: Single decisions asked of one snapshot in one second after which the next are drawn ahead.
AHEAD_AFTER = 8
#: Most single decisions drawn ahead at once.
AHEAD_MAX = 1024
#: Experiments with decisions drawn ahead that a process keeps (each holds a snapshot until
#: that experiment's next decision): past this, all are dropped and drawn afresh when asked.
AHEAD_EXPERIMENTS = 1000


@dataclass
class _DrawnAhead:
    """Single decisions drawn from one snapshot in one second before they were asked for.

    Each is an independent draw from the snapshot's probabilities, exactly as a draw made on
    request would be, and is counted as served only when served; those never asked for are
    dropped with the snapshot (their counters are never used again). Drawing and signing a
    run of them is one numba call each, where one at a time costs a Python draw and a numba
    call per decision: about a tenth of an allocate request under load.
    """

    snapshot: Snapshot
    issued: int
    #: Single decisions asked of the snapshot in the second before, when it served this one.
    before: int = 0
    asked: int = 0
    used: int = 0
    arms: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Choice:
    """What one request's decisions are drawn from: a snapshot's allocation, or for a
    contextual experiment the allocation for the request's context (and that context's hash,
    signed into every decision id, and its segments: ``feature=value`` per categorical
    feature)."""

    probabilities: FloatArray
    cumulative_list: list[float]
    probability_list: list[float]
    context: int = 0
    segments: tuple[str, ...] = ()

    @classmethod
    def of(cls, snapshot: Snapshot, context: dict[str, Any] | None) -> Choice:
        posterior = snapshot.contextual
        if posterior is None:
            return cls(snapshot.probabilities, snapshot.cumulative_list,
                       snapshot.probability_list)
        model = posterior.model
        x = model.encode(context)
        key = x.tobytes()
        choice: Choice | None = snapshot.choices.get(key)
        if choice is None:
            probabilities, cumulative = posterior.allocation(x)
            choice = cls(probabilities, cumulative.tolist(), probabilities.tolist(),
                         feature_hash(x), model.segments(context) if model.has_segments else ())
            if len(snapshot.choices) >= MAX_CHOICES:
                snapshot.choices.clear()
            snapshot.choices[key] = choice
        return choice


class DrawTally:
    """The fresh draws of one experiment this process served since its last flush, summed for
    the sample-ratio test (``bandit.serving.health``).

    A fresh draw is a random choice of an arm from a snapshot's allocation probabilities: a
    single decision, each decision of a batch, the first position of a slate (a draw from the
    shares themselves, with its position propensity; the later positions are draws among the
    arms left, which a per-arm test cannot judge against the shares), and a sticky unit's first
    assignment (its later decisions repeat that one draw, so they are not counted again).

    The expected count of an arm is the sum of its propensity over every draw, whichever arm
    the draw chose. Within one snapshot the propensities are fixed, so the tally counts the
    draws per snapshot and adds count x propensities when the snapshot changes: exact, and one
    addition per decision. ``variance`` sums ``p(1-p)``, the exact variance of the count, which
    the test needs because the propensities change from draw to draw.
    """

    def __init__(self) -> None:
        self.observed: defaultdict[int, int] = defaultdict(int)
        self.expected = np.zeros(0)
        self.variance = np.zeros(0)
        self._probabilities: FloatArray | None = None
        self._pending = 0

    def add(self, probabilities: FloatArray, index: int, times: int = 1) -> None:
        """``times`` draws from ``probabilities`` (a snapshot's, never changed) chose ``index``."""
        if probabilities is not self._probabilities:
            self._fold(probabilities)
        self._pending += times
        self.observed[index] += times

    def add_chosen(self, probabilities: FloatArray, chosen: list[int]) -> None:
        """One draw from ``probabilities`` for each index in ``chosen``."""
        if probabilities is not self._probabilities:
            self._fold(probabilities)
        self._pending += len(chosen)
        observed = self.observed
        for index in chosen:
            observed[index] += 1

    def sums(self) -> dict[int, Draws]:
        """Per arm index: draws that chose it, expected draws, their variance."""
        self._fold(None)
        return {index: Draws(self.observed.get(index, 0), float(expected),
                             float(self.variance[index]))
                for index, expected in enumerate(self.expected.tolist())
                if expected > 0 or index in self.observed}

    def restore(self, sums: dict[int, Draws]) -> None:
        """Take back the sums of a flush that did not reach Redis."""
        self._fold(self._probabilities)
        self._grow(max(sums, default=-1) + 1)
        for index, (observed, expected, variance) in sums.items():
            if observed:
                self.observed[index] += int(observed)
            self.expected[index] += expected
            self.variance[index] += variance

    def _grow(self, arms: int) -> None:
        """Room for ``arms`` arms (arms are added to experiments, never removed)."""
        grow = arms - self.expected.shape[0]
        if grow > 0:
            self.expected = np.concatenate([self.expected, np.zeros(grow)])
            self.variance = np.concatenate([self.variance, np.zeros(grow)])

    def _fold(self, probabilities: FloatArray | None) -> None:
        """Add the draws of the snapshot drawn from so far, and draw from ``probabilities``."""
        before, self._probabilities = self._probabilities, probabilities
        if before is None or not self._pending:
            self._pending = 0
            return
        arms = before.shape[0]
        self._grow(arms)
        self.expected[:arms] += self._pending * before
        self.variance[:arms] += self._pending * before * (1.0 - before)
        self._pending = 0


class Decider:
    """The decisions of one service process, and the counts of what it served."""

    def __init__(self, store: RedisStore, cache: ExperimentCache, settings: Settings,
                 seed: int) -> None:
        self._store = store
        #: Every decision served, for the experiment's decision log.
        self.log = DecisionLog(store, settings)
        self._settings = settings
        self.cache = cache
        self._random = random.Random(seed)
        self._rng = np.random.default_rng(seed)
        # Decision ids: a random per-process number and the signer's counter make them unique
        # across processes without coordination; the signer (its key is in Redis) loads once.
        self._process = secrets.randbits(40)
        self._signer: DecisionSigner | None = None
        self._served: defaultdict[str, defaultdict[int, int]] = defaultdict(
            lambda: defaultdict(int)
        )
        self._draws: defaultdict[str, DrawTally] = defaultdict(DrawTally)
        #: Contextual decisions served per experiment, segment (``feature=value``) and arm.
        self._segments: defaultdict[str, defaultdict[tuple[str, int], int]] = defaultdict(
            lambda: defaultdict(int))
        #: Experiments this process served decisions since the history sampler last asked.
        self._served_recently: set[str] = set()
        self._ahead: dict[str, dict[str, _DrawnAhead]] = {"d": {}, "p": {}}
        self._sticky: OrderedDict[tuple[str, str], tuple[list[int], float, list[float]]] = (
            OrderedDict()
        )
        #: Units of fixed experiments already counted in the sample-ratio draws, in the
        #: order first seen.
        self._hashed_seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    async def snapshot(self, experiment_id: str) -> Snapshot:
        return self.usable(self.cache.peek(experiment_id)
                            or await self.cache.get(experiment_id), experiment_id)

    def check_fresh(self) -> None:
        """Raise StoreUnavailable when the cached posteriors are too old to serve."""
        if self.cache.age > self._settings.max_stale_s:
            raise StoreUnavailable(
                f"Redis has been unreachable for {self.cache.age:.0f} s, over max_stale_s "
                f"({self._settings.max_stale_s:g} s): the last known posteriors are too old")

    def usable(self, snapshot: Snapshot, experiment_id: str) -> Snapshot:
        """``snapshot``, unless it may not serve decisions (too old, or archived)."""
        self.check_fresh()
        if snapshot.experiment.archived:
            raise NotFound(archived_message(experiment_id))
        return snapshot

    async def signer(self) -> DecisionSigner:
        if self._signer is None:
            key = await self._store.signing_key()
            # Checked again after the wait: concurrent first requests must share one signer,
            # or each would count decisions from 1 and issue the same ids twice.
            if self._signer is None:
                self._signer = DecisionSigner(key, self._process)
        return self._signer

    def allocate_cached(self, experiment_id: str,
                        request: AllocateRequest) -> dict[str, Any] | None:
        """``allocate`` without an await where none is needed (the hot path): decisions that
        are neither sticky nor provisional, for an experiment in the cache. None otherwise:
        then call ``allocate``."""
        snapshot, signer = self.cache.peek(experiment_id), self._signer
        if snapshot is None or signer is None:
            return None
        hashed = _hashed(snapshot, request)
        if (request.sticky and not hashed) or request.provisional or (
                snapshot.contextual is not None and snapshot.contextual.heavy):
            return None
        snapshot = self.usable(snapshot, experiment_id)
        self._check_request(snapshot, request)
        decisions = (self._by_unit_hash(snapshot, request, signer) if hashed
                     else self._fresh_decisions(snapshot, request, signer))
        self.log.record(snapshot, request, decisions)
        return {"decisions": decisions, "version": snapshot.experiment.version}

    async def allocate(self, experiment_id: str, request: AllocateRequest) -> dict[str, Any]:
        snapshot = await self.snapshot(experiment_id)
        signer = self._signer or await self.signer()
        self._check_request(snapshot, request)
        choice = None
        if snapshot.contextual is not None and snapshot.contextual.heavy:
            # Milliseconds of numba for a large model: in a worker thread (the kernels release
            # the GIL), so that the other requests of the process are answered meanwhile.
            choice = await asyncio.to_thread(Choice.of, snapshot, request.context)
        if _hashed(snapshot, request):
            decisions = self._by_unit_hash(snapshot, request, signer)
        elif request.sticky:
            decisions, snapshot = await self._sticky_decisions(snapshot, request, signer,
                                                               choice)
        else:
            decisions = self._fresh_decisions(snapshot, request, signer, choice)
        if request.provisional:
            await self._store.record_provisional(
                experiment_id, [d["decision_id"] for d in decisions],
                [snapshot.experiment.arm_index(d["arm"]) or 0 for d in decisions],
                snapshot.experiment.attribution_window_s,
            )
        self.log.record(snapshot, request, decisions)
        return {"decisions": decisions, "version": snapshot.experiment.version}

    @staticmethod
    def _check_request(snapshot: Snapshot, request: AllocateRequest) -> None:
        if request.k is not None and request.k > snapshot.servable:
            raise InvalidValue(
                f"k: {request.k} is more than the {snapshot.servable} arms that can be served"
            )
        if request.provisional and (snapshot.experiment.reward != "bernoulli"
                                    or request.k is not None):
            raise InvalidValue("provisional: only for single-arm decisions of bernoulli "
                               "experiments")
        if request.provisional and snapshot.contextual is not None:
            raise InvalidValue("provisional: not for contextual experiments (a provisional "
                               "failure would need the model's features before the reward)")

    def _fresh_decisions(self, snapshot: Snapshot, request: AllocateRequest,
                         signer: DecisionSigner,
                         choice: Choice | None = None) -> list[dict[str, Any]]:
        """Decisions drawn now (not sticky); ``choice``: the context's, if computed already."""
        if choice is None and snapshot.contextual is not None:
            choice = Choice.of(snapshot, request.context)
        if request.k is None:
            return self._decisions(snapshot, request.n, "p" if request.provisional else "d",
                                   signer, choice)
        return self._slates(snapshot, request.n, request.k, signer, choice)

    def _count_segments(self, experiment_id: str, choice: Choice | None,
                        indices: list[int]) -> None:
        if choice is None or not choice.segments:
            return
        tally = self._segments[experiment_id]
        for segment in choice.segments:
            for index in indices:
                tally[segment, index] += 1

    def _decisions(self, snapshot: Snapshot, n: int, kind: str, signer: DecisionSigner,
                   choice: Choice | None = None) -> list[dict[str, Any]]:
        arms = snapshot.arms
        experiment_id = snapshot.experiment.id
        served = self._served[experiment_id]
        issued = int(time.time())
        draws = self._draws[experiment_id]
        if choice is not None:  # contextual: drawn from this context's allocation
            probabilities = choice.probability_list
            if n == 1:
                index = policy.sample_one(choice.cumulative_list, self._random.random())
                decision_id = signer.sign_one(experiment_id, kind, issued, index,
                                              choice.context)
                chosen_list = [index]
                ids = [decision_id]
            else:
                chosen = policy.sample_arms(np.asarray(choice.cumulative_list), n, self._rng)
                chosen_list = chosen.tolist()
                ids = signer.sign(experiment_id, kind, issued, chosen, choice.context)
            for index in chosen_list:
                served[index] += 1
            draws.add_chosen(choice.probabilities, chosen_list)
            self._count_segments(experiment_id, choice, chosen_list)
            return [{"decision_id": decision_id, "arm": arms[index],
                     "propensity": probabilities[index]}
                    for decision_id, index in zip(ids, chosen_list, strict=True)]
        probabilities = snapshot.probability_list
        if n == 1:
            index, decision_id = self._one(snapshot, kind, issued, signer)
            served[index] += 1
            draws.add(snapshot.probabilities, index)
            return [{"decision_id": decision_id, "arm": arms[index],
                     "propensity": probabilities[index]}]
        chosen = policy.sample_arms(snapshot.cumulative, n, self._rng)
        for index, times in enumerate(np.bincount(chosen, minlength=len(arms)).tolist()):
            if times:
                served[index] += times
                draws.add(snapshot.probabilities, index, times)
        ids = signer.sign(experiment_id, kind, issued, chosen)
        return [
            {"decision_id": decision_id, "arm": arms[index], "propensity": probabilities[index]}
            for decision_id, index in zip(ids, chosen.tolist(), strict=True)
        ]

    def for_units(self, snapshot: Snapshot, units: list[str],
                  signer: DecisionSigner) -> list[dict[str, Any]]:
        """One fresh decision for each unit of a context-free snapshot (a batch assign), drawn
        at once and logged with its unit."""
        decisions = self._decisions(snapshot, len(units), "d", signer)
        self.log.record_units(snapshot, units, decisions)
        return decisions

    def for_unit(self, snapshot: Snapshot, unit: str, signer: DecisionSigner,
                 now: float) -> dict[str, Any]:
        """``for_units`` or ``by_hash`` (by the experiment's policy) for one unit of a
        context-free snapshot, without lists: the single-unit assign's path (``now``: the
        request's time, read once for all its layers)."""
        experiment = snapshot.experiment
        issued = int(now)
        if experiment.weights is not None:
            index = self._unit_arm(snapshot, unit)
            decision = {"decision_id": signer.sign_one(experiment.id, "d", issued, index),
                        "arm": experiment.arms[index],
                        "propensity": snapshot.probability_list[index], "sticky": True}
        else:
            index, decision_id = self._one(snapshot, "d", issued, signer)
            self._draws[experiment.id].add(snapshot.probabilities, index)
            decision = {"decision_id": decision_id, "arm": experiment.arms[index],
                        "propensity": snapshot.probability_list[index]}
        self._served[experiment.id][index] += 1
        self.log.record_unit(snapshot, unit, decision, now)
        return decision

    def by_hash(self, snapshot: Snapshot, units: list[str],
                signer: DecisionSigner) -> list[dict[str, Any]]:
        """A fixed experiment's decisions for ``units``: each unit's arm is where its
        ``arm_point`` falls in the weights (the same arm every time, with no stored state; the
        propensity is the arm's weight share, the chance of a unit's point falling there).
        Counted as served; in the sample-ratio test's draws once per unit (``_unit_arm``)."""
        experiment = snapshot.experiment
        probabilities = snapshot.probability_list
        indices = [self._unit_arm(snapshot, unit, point)
                   for unit, point in zip(units, arm_points(experiment.id, units), strict=True)]
        served = self._served[experiment.id]
        for index in indices:
            served[index] += 1
        ids = signer.sign(experiment.id, "d", int(time.time()), indices)
        arms = experiment.arms
        decisions = [{"decision_id": decision_id, "arm": arms[index],
                      "propensity": probabilities[index], "sticky": True}
                     for decision_id, index in zip(ids, indices, strict=True)]
        self.log.record_units(snapshot, units, decisions)
        return decisions

    def _by_unit_hash(self, snapshot: Snapshot, request: AllocateRequest,
                      signer: DecisionSigner) -> list[dict[str, Any]]:
        """A fixed experiment's decisions for a request naming a unit: the unit's arm by hash
        (as ``POST /v1/assign`` gives it), ``n`` times, whether the request asked for sticky
        or not: a unit of an A/B test has one arm."""
        assert request.unit is not None
        experiment = snapshot.experiment
        index = self._unit_arm(snapshot, request.unit)
        self._served[experiment.id][index] += request.n
        ids = signer.sign(experiment.id, "p" if request.provisional else "d", int(time.time()),
                          [index] * request.n)
        arm, propensity = experiment.arms[index], snapshot.probability_list[index]
        return [{"decision_id": decision_id, "arm": arm, "propensity": propensity,
                 "sticky": True} for decision_id in ids]

    def _unit_arm(self, snapshot: Snapshot, unit: str, point: float | None = None) -> int:
        """A fixed experiment's arm for ``unit``: where its ``arm_point`` (given when computed
        already) falls in the weights. The unit counts as one draw of the sample-ratio test the
        first time this process assigns it (a unit seen again is the same draw, as a sticky
        unit's later decisions are). Remembered per process, the last ``sticky_cache_size``
        units first seen: a unit may count once in each process that serves it, and again once
        forgotten."""
        index = policy.sample_one(snapshot.cumulative_list, arm_point(
            snapshot.experiment.id, unit) if point is None else point)
        key = (snapshot.experiment.id, unit)
        seen = self._hashed_seen
        if key in seen:
            return index
        seen[key] = None
        if len(seen) > self._settings.sticky_cache_size:
            seen.popitem(last=False)  # the oldest first seen
        self._draws[snapshot.experiment.id].add(snapshot.probabilities, index)
        return index

    def _one(self, snapshot: Snapshot, kind: str, issued: int,
             signer: DecisionSigner) -> tuple[int, str]:
        """One decision's arm index and id: drawn now, or drawn ahead once the experiment is
        busy (see ``_DrawnAhead``)."""
        experiment_id = snapshot.experiment.id
        runs = self._ahead[kind]
        ahead = runs.get(experiment_id)
        if ahead is None or ahead.snapshot is not snapshot or ahead.issued != issued:
            if len(runs) >= AHEAD_EXPERIMENTS:
                runs.clear()
            before = 0 if ahead is None or ahead.issued < issued - 1 else ahead.asked
            ahead = runs[experiment_id] = _DrawnAhead(snapshot, issued, before)
        ahead.asked += 1
        used = ahead.used
        if used < len(ahead.arms):
            ahead.used = used + 1
            return ahead.arms[used], ahead.ids[used]
        if ahead.asked > AHEAD_AFTER or ahead.before > AHEAD_AFTER:
            size = min(AHEAD_MAX, max(AHEAD_AFTER, 2 * len(ahead.arms), ahead.before))
            chosen = policy.sample_arms(snapshot.cumulative, size, self._rng)
            ahead.ids = signer.sign(experiment_id, kind, issued, chosen)
            ahead.arms = chosen.tolist()
            ahead.used = 1
            return ahead.arms[0], ahead.ids[0]
        index = policy.sample_one(snapshot.cumulative_list, self._random.random())
        return index, signer.sign_one(experiment_id, kind, issued, index)

    def _slates(self, snapshot: Snapshot, n: int, k: int, signer: DecisionSigner,
                choice: Choice | None = None) -> list[dict[str, Any]]:
        probabilities = snapshot.probabilities if choice is None else slate_shares(
            choice.probabilities, snapshot.active, k)
        arms_chosen, slate_propensity, position_propensity = policy.sample_slates(
            probabilities, n, k, self._rng
        )
        served = self._served[snapshot.experiment.id]
        for index in arms_chosen.ravel().tolist():
            served[index] += 1
        # Position 1 is a draw from the shares, with its position propensity (DrawTally).
        self._draws[snapshot.experiment.id].add_chosen(probabilities,
                                                       arms_chosen[:, 0].tolist())
        self._count_segments(snapshot.experiment.id, choice, arms_chosen[:, 0].tolist())
        arms = snapshot.arms
        ids = signer.sign_slates(snapshot.experiment.id, int(time.time()), arms_chosen,
                                 0 if choice is None else choice.context)
        return [
            {"decision_id": decision_id, "arms": [arms[i] for i in slate],
             "propensity": propensity, "position_propensities": positions}
            for decision_id, slate, propensity, positions in zip(
                ids, arms_chosen.tolist(), slate_propensity.tolist(),
                position_propensity.tolist(), strict=True,
            )
        ]

    async def _sticky_decisions(
        self, snapshot: Snapshot, request: AllocateRequest, signer: DecisionSigner,
        choice: Choice | None = None,
    ) -> tuple[list[dict[str, Any]], Snapshot]:
        """The unit's decisions, and the snapshot they were made from (a newer one when the
        unit's stored assignment names an arm this process has not seen yet)."""
        assert request.unit is not None
        experiment = snapshot.experiment
        field = request.unit if request.k is None else f"{request.unit}\x1fk={request.k}"
        key = (experiment.id, field)
        assignment = self._sticky.get(key)
        if choice is None and snapshot.contextual is not None:
            choice = Choice.of(snapshot, request.context)
        if assignment is None:
            # Only a candidate: another process may have assigned the unit first. What is
            # served (and counted) is decided below, from the stored assignment.
            shares = snapshot.probabilities if choice is None else choice.probabilities
            proposed = self._propose(snapshot, request.k, choice)
            stored, created = await self._store.sticky_assignment(experiment.id, field,
                                                                  proposed)
            assignment = _decode_assignment(stored)
            if created:  # the unit's one draw, made here, from this snapshot (DrawTally)
                self._draws[experiment.id].add(shares, assignment[0][0])
            self._sticky[key] = assignment
            if len(self._sticky) > self._settings.sticky_cache_size:
                self._sticky.popitem(last=False)
        else:
            self._sticky.move_to_end(key)
        indices, propensity, positions = assignment
        if max(indices) >= len(snapshot.arms):
            # Assigned by a process that knows an arm added since this cache was refreshed.
            snapshot = await self.cache.load(experiment.id)
            experiment = snapshot.experiment
        kind = "p" if request.provisional else "d"
        if max(indices) >= len(snapshot.arms) or any(
                not _servable(snapshot, i) for i in indices):
            # The unit's arm is paused, held by the guardrails' gate (or outside the current
            # serving set): it gets a fresh, unstored decision now and its own arm again once
            # that arm is resumed or released.
            if snapshot.contextual is not None:  # the snapshot may have been reloaded above
                choice = Choice.of(snapshot, request.context)
            return (self._decisions(snapshot, request.n, kind, signer, choice)
                    if request.k is None
                    else self._slates(snapshot, request.n, request.k, signer, choice)), snapshot
        arms = experiment.arms
        served = self._served[experiment.id]
        decisions: list[dict[str, Any]] = []
        issued = int(time.time())
        context = 0 if choice is None else choice.context
        ids = (signer.sign(experiment.id, kind, issued, [indices[0]] * request.n, context)
               if request.k is None
               else signer.sign_slates(experiment.id, issued,
                                       np.tile(np.array(indices, dtype=np.int64), (request.n, 1)),
                                       context))
        self._count_segments(experiment.id, choice, [indices[0]] * request.n)
        for decision_id in ids:
            decision: dict[str, Any] = {
                "decision_id": decision_id, "propensity": propensity, "sticky": True,
            }
            if request.k is None:
                decision["arm"] = arms[indices[0]]
            else:
                decision["arms"] = [arms[i] for i in indices]
                decision["position_propensities"] = positions
            for i in indices:
                served[i] += 1
            decisions.append(decision)
        return decisions, snapshot

    def _propose(self, snapshot: Snapshot, k: int | None, choice: Choice | None) -> str:
        """A first assignment for a sticky unit, encoded as ``indices|propensity|positions``
        (a contextual unit's is drawn for the context of its first request)."""
        cumulative_list = snapshot.cumulative_list if choice is None else choice.cumulative_list
        probability_list = (snapshot.probability_list if choice is None
                            else choice.probability_list)
        if k is None:
            index = policy.sample_one(cumulative_list, self._random.random())
            return f"{index}|{probability_list[index]!r}|"
        shares = snapshot.probabilities if choice is None else slate_shares(
            choice.probabilities, snapshot.active, k)
        arms_chosen, slate_propensity, position_propensity = policy.sample_slates(
            shares, 1, k, self._rng)
        indices = ",".join(str(i) for i in arms_chosen[0].tolist())
        positions = ",".join(repr(p) for p in position_propensity[0].tolist())
        return f"{indices}|{slate_propensity.tolist()[0]!r}|{positions}"

    async def flush_served(self) -> None:
        """Add this process's served-decision counts and draws to Redis (best effort,
        periodic)."""
        if not self._served and not self._draws:
            return
        pending, self._served = self._served, defaultdict(lambda: defaultdict(int))
        tallies, self._draws = self._draws, defaultdict(DrawTally)
        segments, self._segments = self._segments, defaultdict(lambda: defaultdict(int))
        self._served_recently.update(pending)
        unsent = {k: dict(v) for k, v in pending.items()}
        draws = {k: v.sums() for k, v in tallies.items()}
        try:
            await self._store.add_served(unsent)
            await self._store.add_draws(draws)
            await self._store.add_segments({k: dict(v) for k, v in segments.items()})
            segments = defaultdict(lambda: defaultdict(int))
        except StoreUnavailable:
            for experiment_id, counts in segments.items():  # kept for the next flush
                for key, times in counts.items():
                    self._segments[experiment_id][key] += times
            for experiment_id, per_arm in unsent.items():  # kept for the next flush
                for index, times in per_arm.items():
                    self._served[experiment_id][index] += times
            for experiment_id, sums in draws.items():
                self._draws[experiment_id].restore(sums)
            raise

    def take_served_recently(self) -> set[str]:
        """The experiments served decisions since the last call (for the history sampler)."""
        taken, self._served_recently = self._served_recently, set()
        return taken

    async def run_served_flusher(self) -> None:
        while not cancelling():
            await asyncio.sleep(self._settings.served_flush_interval_s)
            try:
                await self.flush_served()
            except StoreUnavailable as error:
                logger.warning("could not flush served counts: %s", error)


def _hashed(snapshot: Snapshot, request: AllocateRequest) -> bool:
    """Whether a request's decisions are its unit's arm by hash: a fixed experiment's single
    arms for a named unit (slates are drawn, or stored for a sticky unit, as for a bandit)."""
    return (snapshot.experiment.weights is not None and request.unit is not None
            and request.k is None)


def _servable(snapshot: Snapshot, index: int) -> bool:
    """Whether a sticky unit's arm may be served to it now (a contextual arm: whenever it is
    active). Not an arm the guardrails' gate holds: its units get fresh decisions, as a paused
    arm's do, and their own arm again once the gate releases it."""
    if snapshot.guarded is not None and snapshot.guarded.held[index]:
        return False
    if snapshot.contextual is not None:
        return bool(snapshot.active[index])
    return snapshot.probability_list[index] > 0.0


#: Share moved to the zero-probability active arms when a contextual slate needs more arms
#: than its context's allocation gives any chance to (their chance of being best is < 1e-15).
SLATE_FILL = 1e-9


def slate_shares(probabilities: FloatArray, active: npt.NDArray[np.bool_], k: int) -> FloatArray:
    """``probabilities``, unless fewer than ``k`` arms have a positive one: then a sliver
    (``SLATE_FILL``) spread over the zero-probability active arms, so that a ranked slate of
    k arms exists; the propensities returned are those of the vector actually sampled."""
    positive = probabilities > 0.0
    if int(np.count_nonzero(positive)) >= k:
        return probabilities
    empty = active & ~positive
    out = probabilities * (1.0 - SLATE_FILL)
    out[empty] += SLATE_FILL / int(np.count_nonzero(empty))
    return out


def _decode_assignment(value: str) -> tuple[list[int], float, list[float]]:
    indices, propensity, positions = value.split("|")
    return ([int(i) for i in indices.split(",")], float(propensity),
            [float(p) for p in positions.split(",")] if positions else [])
