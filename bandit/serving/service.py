"""What the service does, apart from HTTP: create and change experiments, decide, learn.

Handlers parse and answer; this module holds the logic between them and the store. Decisions
come from the process's cached snapshots (``bandit.serving.cache``); rewards go to Redis in
one script call per experiment per batch.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import secrets
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from bandit import policy
from bandit.api.auth import ANONYMOUS
from bandit.errors import Conflict, InvalidValue, NotFound, StoreUnavailable
from bandit.inputs import (
    DEFAULT_LIST_PAGE,
    MAX_EVENT_EXPERIMENTS,
    MAX_LIST_PAGE,
    AllocateRequest,
    RewardEvent,
    parse_allocate,
    parse_event,
    parse_event_batch,
)
from bandit.model import Experiment, check_id, diff, parse_new_experiment, parse_patch
from bandit.serving import advisor, health
from bandit.serving.cache import READ_CHUNK, ExperimentCache, Snapshot, summary_of
from bandit.serving.changes import ChangeFeed, cancelling
from bandit.serving.history import MAX_LIMIT as MAX_HISTORY
from bandit.settings import Settings
from bandit.store.redis_store import APPLIED, DUPLICATE, UNKNOWN_DECISION, EncodedEvent, RedisStore
from bandit.tokens import EXPIRED, FORGED, DecisionSigner

logger = logging.getLogger(__name__)

#: A large request gives the event loop back every this many events (a few milliseconds of
#: work), so that no request holds the other requests of the process for long (a batch of
#: 10,000 events held them for 170 ms in benchmarks/bench_loop.py).
YIELD_EVERY = 2000

#: Experiments whose serving-health sums a process keeps (least recently asked dropped).
MAX_HEALTH_TRACKERS = 10_000

#: Single decisions asked of one snapshot in one second after which the next are drawn ahead.
AHEAD_AFTER = 8
#: Most single decisions drawn ahead at once.
AHEAD_MAX = 1024
#: Experiments with decisions drawn ahead that a process keeps (each holds a snapshot until
#: that experiment's next decision): past this, all are dropped and drawn afresh when asked.
AHEAD_EXPERIMENTS = 1000

_STATUS_ERRORS = {
    UNKNOWN_DECISION: "decision_id: unknown, or its attribution window has passed",
    3: "arm: differs from the arm of the decision",
    4: "decision_id: this decision already has a reward for this arm (another event id)",
}


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


class BanditService:
    def __init__(self, store: RedisStore, settings: Settings, *, seed: int | None = None) -> None:
        self.store = store
        self.settings = settings
        #: Run ``feed.run()`` beside ``cache.run()``: without it the cache polls everything.
        self.feed = ChangeFeed(store, timeout_s=settings.redis_timeout_s)
        self.cache = ExperimentCache(store, settings.refresh_interval_s, feed=self.feed)
        seed = secrets.randbits(63) if seed is None else seed
        self._random = random.Random(seed)
        self._rng = np.random.default_rng(seed)
        # Decision ids: a random per-process number and the signer's counter make them unique
        # across processes without coordination; the signer (its key is in Redis) loads once.
        self._process = secrets.randbits(40)
        self._signer: DecisionSigner | None = None
        self._served: defaultdict[str, defaultdict[int, int]] = defaultdict(
            lambda: defaultdict(int)
        )
        #: Experiments this process served decisions since the history sampler last asked.
        self._served_recently: set[str] = set()
        self._health: OrderedDict[str, health.HealthTracker] = OrderedDict()
        self._ahead: dict[str, dict[str, _DrawnAhead]] = {"d": {}, "p": {}}
        # One forecast at a time per process: it is CPU work beside the decisions.
        self._advising = asyncio.Lock()
        self._sticky: OrderedDict[tuple[str, str], tuple[list[int], float, list[float]]] = (
            OrderedDict()
        )

    # -- experiments -------------------------------------------------------------------------

    async def create_experiment(self, body: object, *, actor: str = ANONYMOUS) -> dict[str, Any]:
        experiment = parse_new_experiment(body, time.time())
        await self.store.create(experiment, _audit_entry(
            experiment, actor, "create", _initial_settings(experiment), None))
        return experiment.to_json()

    async def history(self, experiment_id: str, since: str | None,
                      limit: str | None) -> dict[str, Any]:
        check_id(experiment_id, "experiment id")
        since_value = _query_number(since, "since", 0.0, math.inf, 0.0)
        limit_value = int(_query_number(limit, "limit", 1, MAX_HISTORY, MAX_HISTORY, whole=True))
        samples = await self.store.history(experiment_id, since_value, limit_value)
        if samples is None:
            raise NotFound(f"experiment {experiment_id!r} does not exist")
        return {"experiment": experiment_id,
                "interval_s": self.settings.history_interval_s, "samples": samples}

    async def audit(self, experiment_id: str) -> dict[str, Any]:
        check_id(experiment_id, "experiment id")
        entries = await self.store.audit(experiment_id)
        if entries is None:
            raise NotFound(f"experiment {experiment_id!r} does not exist")
        return {"experiment": experiment_id, "entries": entries}

    async def list_experiments(self, after: str | None = None,
                               limit: str | None = None) -> dict[str, Any]:
        """One page of experiments in id order, and the id to ask for the next page after."""
        if after is not None:
            check_id(after, "after")
        size = int(_query_number(limit, "limit", 1, MAX_LIST_PAGE, DEFAULT_LIST_PAGE,
                                 whole=True))
        ids = await self.store.list_ids(after, size)
        states = []
        for start in range(0, len(ids), READ_CHUNK):  # a turn of the loop each
            states += await self.store.read_many(ids[start:start + READ_CHUNK])
        return {
            "experiments": [
                {"id": s.experiment.id, "reward": s.experiment.reward,
                 "arms": len(s.experiment.arms), "version": s.experiment.version,
                 "status": "archived" if s.experiment.archived else "active"}
                for s in states if s is not None],
            "next": ids[-1] if len(ids) == size else None,
        }

    async def show(self, experiment_id: str) -> dict[str, Any]:
        return (await self._read(experiment_id)).to_json()

    async def patch(self, experiment_id: str, body: object, *,
                    actor: str = ANONYMOUS) -> dict[str, Any]:
        current = await self._read(experiment_id)
        if current.archived:
            raise InvalidValue(f"experiment {experiment_id!r} is archived")
        patch = parse_patch(body, current, time.time())
        if patch.version != current.version:
            # The script checks again atomically; this gives the common case a clear message.
            raise Conflict(
                f"experiment {experiment_id!r} is at version {current.version}, not "
                f"{patch.version}: reload it and apply your change again"
            )
        await self.store.update(patch.experiment, patch.version, _audit_entry(
            patch.experiment, actor, "update", patch.changes, patch.reason))
        self.cache.forget(experiment_id)
        result = patch.experiment.to_json()
        result["changes"] = patch.changes
        return result

    async def archive(self, experiment_id: str, *, actor: str = ANONYMOUS) -> dict[str, Any]:
        current = await self._read(experiment_id)
        if current.archived:
            return current.to_json()
        archived = replace(current, archived=True, version=current.version + 1,
                           updated_at=time.time())
        await self.store.update(archived, current.version, _audit_entry(
            archived, actor, "archive", diff(current, archived), None))
        self.cache.forget(experiment_id)
        return archived.to_json()

    async def _read(self, experiment_id: str) -> Experiment:
        check_id(experiment_id, "experiment id")
        state = await self.store.read(experiment_id)
        if state is None:
            raise NotFound(f"experiment {experiment_id!r} does not exist")
        return state.experiment

    # -- decisions ---------------------------------------------------------------------------

    async def snapshot(self, experiment_id: str) -> Snapshot:
        return self._usable(self.cache.peek(experiment_id)
                            or await self.cache.get(experiment_id), experiment_id)

    def _usable(self, snapshot: Snapshot, experiment_id: str) -> Snapshot:
        """``snapshot``, unless it may not serve decisions (too old, or archived)."""
        if self.cache.age > self.settings.max_stale_s:
            raise StoreUnavailable(
                f"Redis has been unreachable for {self.cache.age:.0f} s, over max_stale_s "
                f"({self.settings.max_stale_s:g} s): the last known posteriors are too old")
        if snapshot.experiment.archived:
            raise NotFound(f"experiment {experiment_id!r} is archived")
        return snapshot

    async def signer(self) -> DecisionSigner:
        if self._signer is None:
            key = await self.store.signing_key()
            # Checked again after the wait: concurrent first requests must share one signer,
            # or each would count decisions from 1 and issue the same ids twice.
            if self._signer is None:
                self._signer = DecisionSigner(key, self._process)
        return self._signer

    def allocate_cached(self, experiment_id: str, body: object) -> dict[str, Any] | None:
        """``allocate`` without an await where none is needed (the hot path): decisions that
        are neither sticky nor provisional, for an experiment in the cache. None otherwise:
        then call ``allocate``."""
        snapshot, signer = self.cache.peek(experiment_id), self._signer
        if snapshot is None or signer is None:
            return None
        request = parse_allocate(body)
        if request.sticky or request.provisional:
            return None
        snapshot = self._usable(snapshot, experiment_id)
        self._check_request(snapshot, request)
        return {"decisions": self._fresh_decisions(snapshot, request, signer),
                "version": snapshot.experiment.version}

    async def allocate(self, experiment_id: str, body: object) -> dict[str, Any]:
        request = parse_allocate(body)
        snapshot = await self.snapshot(experiment_id)
        signer = self._signer or await self.signer()
        self._check_request(snapshot, request)
        if request.sticky:
            decisions, snapshot = await self._sticky_decisions(snapshot, request, signer)
        else:
            decisions = self._fresh_decisions(snapshot, request, signer)
        if request.provisional:
            await self.store.record_provisional(
                experiment_id, [d["decision_id"] for d in decisions],
                [snapshot.experiment.arm_index(d["arm"]) or 0 for d in decisions],
                snapshot.experiment.attribution_window_s,
            )
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

    def _fresh_decisions(self, snapshot: Snapshot, request: AllocateRequest,
                         signer: DecisionSigner) -> list[dict[str, Any]]:
        """Decisions drawn now (not sticky)."""
        if request.k is None:
            return self._decisions(snapshot, request.n, "p" if request.provisional else "d",
                                   signer)
        return self._slates(snapshot, request.n, request.k, signer)

    def _decisions(self, snapshot: Snapshot, n: int, kind: str,
                   signer: DecisionSigner) -> list[dict[str, Any]]:
        arms, probabilities = snapshot.arms, snapshot.probability_list
        experiment_id = snapshot.experiment.id
        served = self._served[experiment_id]
        issued = int(time.time())
        if n == 1:
            index, decision_id = self._one(snapshot, kind, issued, signer)
            served[index] += 1
            return [{"decision_id": decision_id, "arm": arms[index],
                     "propensity": probabilities[index]}]
        chosen = policy.sample_arms(snapshot.cumulative, n, self._rng)
        for index, times in enumerate(np.bincount(chosen, minlength=len(arms)).tolist()):
            if times:
                served[index] += times
        ids = signer.sign(experiment_id, kind, issued, chosen)
        return [
            {"decision_id": decision_id, "arm": arms[index], "propensity": probabilities[index]}
            for decision_id, index in zip(ids, chosen.tolist(), strict=True)
        ]

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

    def _slates(self, snapshot: Snapshot, n: int, k: int,
                signer: DecisionSigner) -> list[dict[str, Any]]:
        arms_chosen, slate_propensity, position_propensity = policy.sample_slates(
            snapshot.probabilities, n, k, self._rng
        )
        served = self._served[snapshot.experiment.id]
        for index in arms_chosen.ravel().tolist():
            served[index] += 1
        arms = snapshot.arms
        ids = signer.sign_slates(snapshot.experiment.id, int(time.time()), arms_chosen)
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
    ) -> tuple[list[dict[str, Any]], Snapshot]:
        """The unit's decisions, and the snapshot they were made from (a newer one when the
        unit's stored assignment names an arm this process has not seen yet)."""
        assert request.unit is not None
        experiment = snapshot.experiment
        field = request.unit if request.k is None else f"{request.unit}\x1fk={request.k}"
        key = (experiment.id, field)
        assignment = self._sticky.get(key)
        if assignment is None:
            # Only a candidate: another process may have assigned the unit first. What is
            # served (and counted) is decided below, from the stored assignment.
            stored = await self.store.sticky_assignment(experiment.id, field,
                                                        self._propose(snapshot, request.k))
            assignment = _decode_assignment(stored)
            self._sticky[key] = assignment
            if len(self._sticky) > self.settings.sticky_cache_size:
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
                snapshot.probability_list[i] == 0.0 for i in indices):
            # The unit's arm is paused (or outside the current serving set): it gets a fresh,
            # unstored decision now and its own arm again once that arm is resumed.
            return (self._decisions(snapshot, request.n, kind, signer) if request.k is None
                    else self._slates(snapshot, request.n, request.k, signer)), snapshot
        arms = experiment.arms
        served = self._served[experiment.id]
        decisions: list[dict[str, Any]] = []
        issued = int(time.time())
        ids = (signer.sign(experiment.id, kind, issued, [indices[0]] * request.n)
               if request.k is None
               else signer.sign_slates(experiment.id, issued,
                                       np.tile(np.array(indices, dtype=np.int64), (request.n, 1))))
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

    def _propose(self, snapshot: Snapshot, k: int | None) -> str:
        """A first assignment for a sticky unit, encoded as ``indices|propensity|positions``."""
        if k is None:
            index = policy.sample_one(snapshot.cumulative_list, self._random.random())
            return f"{index}|{snapshot.probability_list[index]!r}|"
        arms_chosen, slate_propensity, position_propensity = policy.sample_slates(
            snapshot.probabilities, 1, k, self._rng)
        indices = ",".join(str(i) for i in arms_chosen[0].tolist())
        positions = ",".join(repr(p) for p in position_propensity[0].tolist())
        return f"{indices}|{slate_propensity.tolist()[0]!r}|{positions}"

    async def flush_served(self) -> None:
        """Add this process's served-decision counts to Redis (best effort, periodic)."""
        if not self._served:
            return
        pending, self._served = self._served, defaultdict(lambda: defaultdict(int))
        self._served_recently.update(pending)
        unsent = {k: dict(v) for k, v in pending.items()}
        try:
            await self.store.add_served(unsent)
        except StoreUnavailable:
            for experiment_id, per_arm in unsent.items():  # kept for the next flush
                for index, times in per_arm.items():
                    self._served[experiment_id][index] += times
            raise

    def take_served_recently(self) -> set[str]:
        """The experiments served decisions since the last call (for the history sampler)."""
        taken, self._served_recently = self._served_recently, set()
        return taken

    async def run_served_flusher(self) -> None:
        while not cancelling():
            await asyncio.sleep(self.settings.served_flush_interval_s)
            try:
                await self.flush_served()
            except StoreUnavailable as error:
                logger.warning("could not flush served counts: %s", error)

    # -- rewards -----------------------------------------------------------------------------

    async def apply_events(self, body: object) -> dict[str, Any]:
        raw_events = parse_event_batch(body)
        rejected: list[dict[str, Any]] = []
        grouped: defaultdict[str, list[RewardEvent]] = defaultdict(list)
        valid_ids: set[str] = set()
        for index, raw in enumerate(raw_events):
            if index % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)  # let other requests in (see YIELD_EVERY)
            try:
                event = parse_event(index, raw, valid_ids)
            except InvalidValue as error:
                rejected.append({"index": index, "error": error.message})
                continue
            grouped[event.experiment].append(event)
        if len(grouped) > MAX_EVENT_EXPERIMENTS:
            raise InvalidValue(f"events: name at most {MAX_EVENT_EXPERIMENTS} distinct "
                                  f"experiments per batch, got {len(grouped)}; split the batch")
        # The experiments not cached yet, in one round trip (not one each, in turn).
        await self.cache.load_many(list(grouped))
        batches: dict[str, list[EncodedEvent]] = {}
        positions: dict[str, list[int]] = {}
        since_yield = 0
        for experiment_id, events in grouped.items():
            since_yield += len(events) + YIELD_EVERY // 100  # an experiment weighs 20 events
            if since_yield >= YIELD_EVERY:
                await asyncio.sleep(0)
                since_yield = 0
            encoded, indices, errors = await self._encode_events(experiment_id, events)
            rejected.extend(errors)
            if encoded:
                batches[experiment_id] = encoded
                positions[experiment_id] = indices
        accepted = duplicates = 0
        if batches:
            results = await self.store.apply_events(batches, self.settings.dedup_window_s)
            for experiment_id, statuses in results.items():
                indices = positions[experiment_id]
                if statuses is None:
                    rejected.extend({"index": i, "error": f"experiment {experiment_id!r} is "
                                     "archived"} for i in indices)
                    continue
                for index, status in zip(indices, statuses, strict=True):
                    if status == APPLIED:
                        accepted += 1
                    elif status == DUPLICATE:
                        duplicates += 1
                    else:
                        rejected.append({"index": index, "error": _STATUS_ERRORS[status]})
        rejected.sort(key=lambda item: int(item["index"]))
        return {"accepted": accepted, "duplicates": duplicates, "rejected": rejected}

    async def _encode_events(
        self, experiment_id: str, events: list[RewardEvent]
    ) -> tuple[list[EncodedEvent], list[int], list[dict[str, Any]]]:
        try:
            snapshot = await self.snapshot(experiment_id)
        except NotFound as error:
            return [], [], [{"index": e.position, "error": error.message} for e in events]
        if any(snapshot.experiment.arm_index(e.arm) is None for e in events):
            # An arm added by another process may not have reached this cache yet; the fresh
            # read may also find the experiment archived meanwhile.
            self.cache.forget(experiment_id)
            try:
                snapshot = await self.snapshot(experiment_id)
            except NotFound as error:
                return [], [], [{"index": e.position, "error": error.message} for e in events]
        experiment = snapshot.experiment
        bernoulli = experiment.reward == "bernoulli"
        encoded: list[EncodedEvent] = []
        indices: list[int] = []
        errors: list[dict[str, Any]] = []
        arm_indices = experiment.arm_indices
        require = self.settings.require_decision_ids
        for index, event_id, _, arm, reward, decision_id, ts in events:
            arm_index = arm_indices.get(arm)
            if arm_index is not None and (not bernoulli or 0.0 <= reward <= 1.0) and (
                    decision_id is None or decision_id[0] != "p" or bernoulli) and (
                    decision_id is not None or not require):
                encoded.append(EncodedEvent(event_id, arm_index, reward, ts, decision_id))
                indices.append(index)
            elif decision_id is None and require:
                errors.append({"index": index, "error": "decision_id: required (this service "
                               "only counts rewards for decisions it served)"})
            elif arm_index is None:
                errors.append({"index": index, "error": f"arm: {arm!r} is not an arm of "
                               f"experiment {experiment_id!r}"})
            elif bernoulli:
                errors.append({"index": index, "error": f"reward: {reward!r} is outside [0, 1] "
                               "for a bernoulli experiment"})
            else:
                errors.append({"index": index, "error": "decision_id: provisional decisions "
                               "exist only for bernoulli experiments"})
        signed = [i for i, event in enumerate(encoded) if event.decision_id is not None]
        if signed:
            signer = self._signer or await self.signer()
            statuses = signer.verify(
                experiment_id, [encoded[i].decision_id or "" for i in signed],
                [encoded[i].arm_index for i in signed], time.time(),
                self.settings.dedup_window_s)
            refused = {i: status for i, status in zip(signed, statuses, strict=True) if status}
            if refused:
                for i, status in refused.items():
                    errors.append({"index": indices[i], "error": _token_error(
                        status, experiment_id, experiment.arms[encoded[i].arm_index],
                        self.settings.dedup_window_s)})
                encoded = [e for i, e in enumerate(encoded) if i not in refused]
                indices = [e for i, e in enumerate(indices) if i not in refused]
        return encoded, indices, errors

    # -- statistics --------------------------------------------------------------------------

    async def stats(self, experiment_id: str, threshold: str | None = None,
                    max_loss: str | None = None) -> dict[str, Any]:
        check_id(experiment_id, "experiment id")
        threshold_value = _query_number(threshold, "threshold", 0.5, 1.0, 0.95)
        snapshot = await self.cache.get(experiment_id)
        summary = await summary_of(snapshot)
        max_loss_value = _query_number(max_loss, "max_loss", 0.0, math.inf,
                                       health.default_max_loss(summary))
        [served] = await self.store.served([experiment_id])
        tracker = await self._health_of(snapshot)
        experiment = snapshot.experiment
        arms = []
        for i, arm in enumerate(experiment.arms):
            arms.append({
                "arm": arm,
                "state": "paused" if arm in experiment.paused else "active",
                "n": snapshot.counts[i].item(),
                "served": served.get(i, 0),
                "mean": _finite(summary.mean[i]),
                "ci95": [_finite(summary.ci_low[i]), _finite(summary.ci_high[i])],
                "p_best": _finite(summary.p_best[i]),
                "expected_loss": _finite(summary.expected_loss[i]),
                "share": snapshot.probability_list[i],
            })
        return {
            "experiment": experiment.id, "version": experiment.version,
            "reward": experiment.reward, "arms": arms,
            "winner": health.winner(summary, experiment.arms, threshold_value, max_loss_value),
            "call_rule": {"threshold": threshold_value, "max_loss": max_loss_value},
            "health": {"sample_ratio": tracker.sample_ratio(),
                       "rewards": tracker.reward_flow(self.settings.history_interval_s)},
        }

    async def _health_of(self, snapshot: Snapshot) -> health.HealthTracker:
        """The experiment's health tracker, fed the history samples it has not seen yet.

        The first call reads the whole history; later ones only what arrived since (samples
        are at least about one interval apart, which bounds how many there can be).
        """
        experiment_id = snapshot.experiment.id
        tracker = self._health.pop(experiment_id, None) or health.HealthTracker()
        self._health[experiment_id] = tracker
        if len(self._health) > MAX_HEALTH_TRACKERS:
            self._health.popitem(last=False)
        limit = MAX_HISTORY
        if tracker.last is not None:
            interval = self.settings.history_interval_s
            limit = min(MAX_HISTORY, 2 + math.ceil(
                max(snapshot.server_time - tracker.last_t, 0.0) / (0.9 * interval)))
        tracker.add(await self.store.history(experiment_id, tracker.last_t, limit) or [])
        return tracker


    async def advise(self, experiment_id: str, body: object) -> dict[str, Any]:
        """Forecast the current settings against a proposed change (see bandit.serving.advisor)."""
        check_id(experiment_id, "experiment id")
        # Read fresh: a forecast is worth a round trip, and must not start from a stale cache.
        snapshot = await self.cache.load(experiment_id)
        if snapshot.experiment.archived:
            raise NotFound(f"experiment {experiment_id!r} is archived")
        request = advisor.parse_request(body, snapshot.experiment)
        samples = await self.store.history(
            experiment_id, snapshot.server_time - advisor.RATE_WINDOW_S, MAX_HISTORY) or []
        [served] = await self.store.served([experiment_id])
        max_loss = request.max_loss
        if max_loss is None:  # the stats endpoint's default: 1% of the best posterior mean
            max_loss = health.default_max_loss(await summary_of(snapshot))
        plan = advisor.plan(snapshot, request, samples, served, max_loss,
                            self.settings.refresh_interval_s)
        async with self._advising:
            outcomes = await asyncio.to_thread(advisor.run, plan, self.settings.advisor_threads)
        return advisor.report(plan, outcomes)


def _query_number(raw: str | None, name: str, low: float, high: float,
                  default: float, *, whole: bool = False) -> float:
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidValue(f"{name}: {raw!r} is not a number") from None
    if not math.isfinite(value):  # "inf" parses, and would be answered as null
        raise InvalidValue(f"{name}: must be a finite number, got {raw}")
    if whole and not value.is_integer():
        raise InvalidValue(f"{name}: expected a whole number, got {raw}")
    if not low <= value <= high:
        raise InvalidValue(f"{name}: must be between {low:g} and {high:g}, got {raw}")
    return value


def _initial_settings(experiment: Experiment) -> dict[str, dict[str, Any]]:
    document = experiment.to_json()
    return {key: {"old": None, "new": document[key]}
            for key in ("arms", "reward", "prior", "exploration", "attribution_window_s")}


def _audit_entry(experiment: Experiment, actor: str, action: str, changes: dict[str, Any],
                 reason: str | None) -> dict[str, Any]:
    # The actor is the API key's name ("anonymous" when the service runs without keys).
    return {"version": experiment.version, "at": time.time(), "actor": actor,
            "action": action, "changes": changes, "reason": reason}


def _token_error(status: int, experiment_id: str, arm: str, window_s: float) -> str:
    if status == EXPIRED:
        return (f"decision_id: served more than the dedup window ({window_s:g} s) ago, so a "
                "reward for it could not be told from a replay; raise --dedup-window for "
                "longer reward delays")
    assert status == FORGED
    return (f"decision_id: not a decision this service served for experiment "
            f"{experiment_id!r} and arm {arm!r}")


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _decode_assignment(value: str) -> tuple[list[int], float, list[float]]:
    indices, propensity, positions = value.split("|")
    return ([int(i) for i in indices.split(",")], float(propensity),
            [float(p) for p in positions.split(",")] if positions else [])
