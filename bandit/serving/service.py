"""What the service does, apart from HTTP: create and change experiments, decide, learn.

Handlers parse and answer; this class holds the logic between them and the store: the
experiments' life (create, change, archive, list), their statistics and the tuning advisor
here, decisions in ``bandit.serving.decisions`` and rewards in ``bandit.serving.rewards``.
Decisions come from the process's cached snapshots (``bandit.serving.cache``); rewards go to
Redis in one script call per experiment per batch.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import orjson

from bandit.errors import Conflict, InvalidValue, NotFound, stale
from bandit.inputs import (
    DEFAULT_LIST_PAGE,
    MAX_LIST_PAGE,
    parse_allocate,
)
from bandit.model import (
    ANONYMOUS,
    METADATA_FIELDS,
    Experiment,
    archived_message,
    check_id,
    parse_new_experiment,
)
from bandit.patches import audit_entry, diff, parse_patch, patch_version
from bandit.policy import PosteriorSummary
from bandit.serving import advisor, health, overview
from bandit.serving.cache import (
    READ_CHUNK,
    ExperimentCache,
    Snapshot,
    build_snapshot,
    guarded_summary,
    observed,
    summaries_of,
    summary_of,
)
from bandit.serving.changes import ChangeFeed
from bandit.serving.decisions import Decider
from bandit.serving.history import MAX_LIMIT as MAX_HISTORY
from bandit.serving.layers import Layers
from bandit.serving.rewards import Rewards
from bandit.settings import Settings
from bandit.store.codec import HistoryRings
from bandit.store.redis_store import RedisStore

logger = logging.getLogger(__name__)


#: Experiments whose serving-health sums a process keeps (least recently asked dropped).
MAX_HEALTH_TRACKERS = 10_000
#: The P(best) a winner call needs unless the stats request says otherwise.
DEFAULT_THRESHOLD = 0.95
#: Experiments of a list page summarised at once (their history reads overlap).
SUMMARY_CHUNK = 50
#: The list reuses an experiment's lifts for this long while its posteriors move (the stats
#: recompute them on every change): a page of a thousand busy experiments would otherwise cost
#: 20 million posterior draws per refresh.
LIST_LIFT_MAX_AGE_S = 30.0


class BanditService:
    def __init__(self, store: RedisStore, settings: Settings, *, seed: int | None = None) -> None:
        self.store = store
        self.settings = settings
        #: Run ``feed.run()`` beside ``cache.run()``: without it the cache polls everything.
        self.feed = ChangeFeed(store, timeout_s=settings.redis_timeout_s)
        self.cache = ExperimentCache(store, settings.refresh_interval_s, feed=self.feed)
        self.decisions = Decider(store, self.cache, settings,
                                 secrets.randbits(63) if seed is None else seed)
        self.rewards = Rewards(store, settings, self.decisions)
        self.layers = Layers(store, self.cache, self.decisions)
        self.cache.watchers.append(self.layers.directory.on_refresh)
        self._health: OrderedDict[str, health.HealthTracker] = OrderedDict()
        #: Beside each health tracker, fed the same samples: decisions in the last hour.
        self._traffic: dict[str, overview.TrafficWindow] = {}
        #: Each experiment's arm lifts, with the snapshot they are of (recomputed when it
        #: changes: thousands of posterior draws per arm).
        self._lifts: OrderedDict[str, tuple[Snapshot, float, dict[str, Any]]] = OrderedDict()
        #: Each contextual experiment's coefficient report, with the snapshot it is of.
        self._models: OrderedDict[str, tuple[Snapshot, dict[str, Any]]] = OrderedDict()
        # One forecast at a time per process: it is CPU work beside the decisions.
        self._advising = asyncio.Lock()

    # -- experiments -------------------------------------------------------------------------

    async def create_experiment(self, body: object, *, actor: str = ANONYMOUS) -> dict[str, Any]:
        experiment = parse_new_experiment(body, time.time())
        try:
            await self.store.create(experiment, audit_entry(
                experiment.version, actor, "create", _initial_settings(experiment), None))
        except Conflict as conflict:
            existing = await self.store.read(experiment.id)
            if existing is not None and existing.experiment.archived:
                raise Conflict(f"{conflict.message}, archived: an archived experiment keeps "
                               f"its id (POST /v1/experiments/{experiment.id}/unarchive serves "
                               "it again)") from None
            raise
        return experiment.to_json()

    async def history(self, experiment_id: str, since: str | None,
                      limit: str | None) -> dict[str, Any]:
        check_id(experiment_id, "experiment id")
        since_value = _query_number(since, "since", 0.0, math.inf, 0.0)
        limit_value = int(_query_number(limit, "limit", 1, MAX_HISTORY, MAX_HISTORY, whole=True))
        samples = await self.store.history(experiment_id, since_value, limit_value)
        if samples is None:
            raise NotFound(f"experiment {experiment_id!r} does not exist")
        rings = HistoryRings.of(self.settings)
        return {"experiment": experiment_id, "interval_s": rings.interval_s,
                "coarse_interval_s": rings.coarse_interval_s,
                "fine_window_s": self.settings.history_fine_window_s if rings.fine_samples
                else 0.0, "samples": samples}

    async def log_entries(self, experiment_id: str, since: str | None,
                          until: str | None) -> tuple[Experiment, AsyncIterator[bytes]]:
        """The experiment and its decision log's entries stored from ``since`` to ``until``
        (POSIX seconds; the oldest and the newest by default), each one JSON line
        ``{"kind": "d" | "r", "records": lines}`` (``bandit.serving.decision_log``)."""
        check_id(experiment_id, "experiment id")
        since_value = _query_number(since, "since", 0.0, 1e11, 0.0)
        until_value = _query_number(until, "until", 0.0, 1e11, 1e11)
        if until_value < since_value:
            raise InvalidValue(f"until: {until} is before since ({since})")
        experiment = await self._read(experiment_id)
        entries = self.store.read_log(experiment_id, math.floor(since_value * 1000),
                                      None if until is None else math.ceil(until_value * 1000))

        async def lines() -> AsyncIterator[bytes]:
            async for kind, records in entries:
                yield orjson.dumps({"kind": kind, "records": records}) + b"\n"

        return experiment, lines()

    async def audit(self, experiment_id: str) -> dict[str, Any]:
        check_id(experiment_id, "experiment id")
        entries = await self.store.audit(experiment_id)
        if entries is None:
            raise NotFound(f"experiment {experiment_id!r} does not exist")
        return {"experiment": experiment_id, "entries": entries}

    async def list_experiments(self, after: str | None = None, limit: str | None = None,
                               summary: str | None = None) -> dict[str, Any]:
        """One page of experiments in id order, and the id to ask for the next page after;
        with ``summary=true`` each at a glance (``_summarise``)."""
        if after is not None:
            check_id(after, "after")
        size = int(_query_number(limit, "limit", 1, MAX_LIST_PAGE, DEFAULT_LIST_PAGE,
                                 whole=True))
        summarise = _query_flag(summary, "summary")
        ids = await self.store.list_ids(after, size)
        states = []
        for start in range(0, len(ids), READ_CHUNK):  # a turn of the loop each
            states += await self.store.read_many(ids[start:start + READ_CHUNK])
        page: dict[str, Any] = {
            "experiments": [
                _list_entry(s.experiment) for s in states if s is not None],
            "next": ids[-1] if len(ids) == size else None,
        }
        if summarise:
            await self._summarise(page["experiments"])
        return page

    async def _summarise(self, entries: list[dict[str, Any]]) -> None:
        """Add each entry's ``summary``: what its stats would say, computed by the same code
        (the winner call with the default rule, the health report), its leader's lift and the
        decisions served in the last hour."""
        ids = [entry["id"] for entry in entries]
        await self.cache.load_many(ids)
        for start in range(0, len(entries), SUMMARY_CHUNK):
            chunk = entries[start:start + SUMMARY_CHUNK]
            snapshots = await asyncio.gather(*(self.cache.get(e["id"]) for e in chunk))
            summaries = await summaries_of(snapshots)
            served = await self.store.served([e["id"] for e in chunk])
            trackers = await asyncio.gather(*(self._health_of(s) for s in snapshots))
            lifts = await asyncio.gather(*(
                self._lifts_of(snapshot, summary, max_age_s=LIST_LIFT_MAX_AGE_S)
                for snapshot, summary in zip(snapshots, summaries, strict=True)))
            now = time.time()
            for entry, snapshot, summary, counts, tracker, (_, arm_lifts) in zip(
                    chunk, snapshots, summaries, served, trackers, lifts, strict=True):
                guarded = await guarded_summary(snapshot)
                winner = health.winner(summary, snapshot.experiment.arms, DEFAULT_THRESHOLD,
                                       health.default_max_loss(summary),
                                       active=len(snapshot.experiment.active_arms),
                                       contextual=snapshot.contextual is not None,
                                       guarded=guarded, observed=observed(snapshot))
                traffic = self._traffic[snapshot.experiment.id].last_hour(
                    now, snapshot.experiment.created_at, sum(counts.values()))
                entry["summary"] = overview.list_summary(
                    snapshot, summary, winner, self._health_report(tracker), arm_lifts, traffic,
                    guarded)

    async def show(self, experiment_id: str) -> dict[str, Any]:
        return (await self._read(experiment_id)).to_json()

    async def patch(self, experiment_id: str, body: object, *,
                    actor: str = ANONYMOUS) -> dict[str, Any]:
        """Apply a change (audited, version + 1); one that changes nothing leaves the version
        alone and answers ``changed: false``, so no one else's pending edit turns stale."""
        current = await self._read(experiment_id)
        if current.archived:
            raise NotFound(archived_message(experiment_id))
        # A stale version first: a change based on an old version may be invalid only because
        # of what changed since ("arms.add: ['d'] already exist"), and 409 says to reload.
        # (The store's script checks again atomically; this gives the common case its message.)
        based_on = patch_version(body)
        if based_on != current.version:
            raise stale(f"experiment {experiment_id!r}", current.version, based_on)
        patch = parse_patch(body, current, time.time())
        if patch.changes:
            await self.store.update(patch.experiment, patch.version, audit_entry(
                patch.experiment.version, actor, "update", patch.changes, patch.reason))
            self.cache.forget(experiment_id)
        return {**patch.experiment.to_json(), "changes": patch.changes,
                "changed": bool(patch.changes)}

    async def archive(self, experiment_id: str, *, actor: str = ANONYMOUS) -> dict[str, Any]:
        """Stop serving (audited); archiving an archived experiment changes nothing."""
        return await self._set_archived(experiment_id, True, actor)

    async def unarchive(self, experiment_id: str, *, actor: str = ANONYMOUS) -> dict[str, Any]:
        """Serve an archived experiment again, from the posteriors it had (audited)."""
        return await self._set_archived(experiment_id, False, actor)

    async def _set_archived(self, experiment_id: str, archived: bool,
                            actor: str) -> dict[str, Any]:
        current = await self._read(experiment_id)
        if current.archived == archived:
            return {**current.to_json(), "changed": False}
        changed = replace(current, archived=archived, version=current.version + 1,
                          updated_at=time.time())
        await self.store.update(changed, current.version, audit_entry(
            changed.version, actor, "archive" if archived else "unarchive",
            diff(current, changed), None))
        self.cache.forget(experiment_id)
        return {**changed.to_json(), "changed": True}

    async def _read(self, experiment_id: str) -> Experiment:
        check_id(experiment_id, "experiment id")
        state = await self.store.read(experiment_id)
        if state is None:
            raise NotFound(f"experiment {experiment_id!r} does not exist")
        return state.experiment

    # -- decisions and rewards (bandit.serving.decisions, bandit.serving.rewards) ------------

    async def snapshot(self, experiment_id: str) -> Snapshot:
        snapshot: Snapshot = await self.decisions.snapshot(experiment_id)
        return snapshot

    async def allocate(self, experiment_id: str, body: object) -> dict[str, Any]:
        """Decisions for an allocate request's body (see ``Decider.allocate``)."""
        answer: dict[str, Any] = await self.decisions.allocate(experiment_id,
                                                                parse_allocate(body))
        return answer

    async def apply_events(self, body: object) -> dict[str, Any]:
        return await self.rewards.apply_events(body)

    async def flush_served(self) -> None:
        await self.decisions.flush_served()

    # -- statistics --------------------------------------------------------------------------

    async def stats(self, experiment_id: str, threshold: str | None = None,
                    max_loss: str | None = None) -> dict[str, Any]:
        check_id(experiment_id, "experiment id")
        threshold_value = _query_number(threshold, "threshold", 0.5, 1.0, DEFAULT_THRESHOLD)
        snapshot = await self.cache.get(experiment_id)
        summary = await summary_of(snapshot)
        max_loss_value = _query_number(max_loss, "max_loss", 0.0, math.inf,
                                       health.default_max_loss(summary))
        contextual = snapshot.contextual is not None
        traffic = None
        if contextual:  # the served counts with the draws and segments, in one round trip
            [traffic] = await self.store.traffic([experiment_id])
            served = traffic.served
        else:
            [served] = await self.store.served([experiment_id])
        shares = overview.served_shares(snapshot, traffic)
        tracker = await self._health_of(snapshot)
        control, lifts = await self._lifts_of(snapshot, summary)
        experiment = snapshot.experiment
        arms = []
        for i, arm in enumerate(experiment.arms):
            arms.append({
                "arm": arm,
                "state": "paused" if arm in experiment.paused else "active",
                "n": snapshot.counts[i].item(),
                "served": served.get(i, 0),
                "mean": overview.finite(summary.mean[i]),
                "ci95": [overview.finite(summary.ci_low[i]), overview.finite(summary.ci_high[i])],
                "p_best": overview.finite(summary.p_best[i]),
                "expected_loss": overview.finite(summary.expected_loss[i]),
                "share": shares[i],
                "lift": lifts[i],
            })
        guarded = await guarded_summary(snapshot)
        if guarded is not None:
            overview.add_guardrails(arms, snapshot, guarded)
        return {
            "experiment": experiment.id, "version": experiment.version,
            "reward": experiment.reward, "arms": arms, "control": control,
            "winner": health.winner(summary, experiment.arms, threshold_value, max_loss_value,
                                    active=len(experiment.active_arms),
                                    contextual=snapshot.contextual is not None,
                                    guarded=guarded, observed=observed(snapshot)),
            "guardrails": None if guarded is None else overview.guardrail_report(snapshot,
                                                                                 guarded),
            "call_rule": {"threshold": threshold_value, "max_loss": max_loss_value},
            "health": self._health_report(tracker),
            "model": await self._model_of(snapshot) if contextual else None,
            "segments": (overview.segment_report(snapshot, traffic)
                         if traffic is not None else None),
            "log": await self._log_of(experiment_id),
        }

    async def _log_of(self, experiment_id: str) -> dict[str, Any]:
        """The decision log's size, retention and losses (``bandit.serving.decision_log``)."""
        stats = await self.store.log_stats(experiment_id)
        return {"enabled": self.settings.decision_log, "records": stats.records,
                "oldest": stats.oldest, "trimmed": stats.trimmed, "dropped": stats.dropped,
                "max_age_s": stats.max_age_s, "max_records": stats.max_records}

    async def _model_of(self, snapshot: Snapshot) -> dict[str, Any]:
        """A contextual experiment's ``model`` report (``overview.model_report``), computed
        once per snapshot.

        The snapshot's posteriors are tempered as its decisions need them; the report is of
        the untempered ones (as the arms' means and intervals are): with a temperature other
        than 1 they are rebuilt from a fresh read of the statistics.
        """
        experiment = snapshot.experiment
        cached = self._models.pop(experiment.id, None)
        if cached is None or cached[0] is not snapshot:
            of, posterior = snapshot, snapshot.contextual
            if experiment.exploration.temperature != 1.0:
                state = await self.store.read(experiment.id)
                if state is not None and state.rows is not None:
                    untempered = replace(state.experiment, exploration=replace(
                        state.experiment.exploration, temperature=1.0))
                    of = await asyncio.to_thread(build_snapshot,
                                                 replace(state, experiment=untempered))
                    posterior = of.contextual
            assert posterior is not None
            report = await asyncio.to_thread(overview.model_report, of, posterior)
            cached = (snapshot, report)
        self._models[experiment.id] = cached
        if len(self._models) > MAX_HEALTH_TRACKERS:
            self._models.popitem(last=False)
        return cached[1]

    def _health_report(self, tracker: health.HealthTracker) -> dict[str, Any]:
        """The stats' ``health``; the list's flags are read from it."""
        return {"sample_ratio": tracker.sample_ratio(),
                "rewards": tracker.reward_flow(self.settings.history_interval_s)}

    async def _lifts_of(self, snapshot: Snapshot, summary: PosteriorSummary, *,
                        max_age_s: float = 0.0,
                        ) -> tuple[dict[str, Any] | None, list[dict[str, Any] | None]]:
        """The control (arm and how it was chosen) and every arm's lift: computed once per
        snapshot, or reused for ``max_age_s`` if the experiment's arms are the same."""
        experiment = snapshot.experiment
        cached = self._lifts.pop(experiment.id, None)
        now = time.monotonic()
        if cached is None or not (cached[0] is snapshot or (
                now - cached[1] < max_age_s and cached[0].experiment.arms == experiment.arms
                and cached[0].experiment.exploration == experiment.exploration
                and cached[0].experiment.control == experiment.control)):
            control, lifts = await asyncio.to_thread(overview.arm_lifts, snapshot, summary)
            cached = (snapshot, now, {"control": None if control is None else {
                "arm": experiment.arms[control.index], "chosen_by": control.source},
                "lifts": lifts})
        self._lifts[experiment.id] = cached
        if len(self._lifts) > MAX_HEALTH_TRACKERS:
            self._lifts.popitem(last=False)
        return cached[2]["control"], cached[2]["lifts"]

    async def _health_of(self, snapshot: Snapshot) -> health.HealthTracker:
        """The experiment's health tracker, fed the history samples it has not seen yet.

        The first call reads the whole history; later ones only what arrived since (samples
        are at least about one interval apart, which bounds how many there can be).
        """
        experiment_id = snapshot.experiment.id
        tracker = self._health.pop(experiment_id, None) or health.HealthTracker()
        self._health[experiment_id] = tracker
        traffic = self._traffic.setdefault(experiment_id, overview.TrafficWindow())
        if len(self._health) > MAX_HEALTH_TRACKERS:
            dropped, _ = self._health.popitem(last=False)
            self._traffic.pop(dropped, None)
        limit = MAX_HISTORY
        if tracker.last is not None:
            interval = HistoryRings.of(self.settings).interval_s
            limit = min(MAX_HISTORY, 2 + math.ceil(
                max(snapshot.server_time - tracker.last_t, 0.0) / (0.9 * interval)))
        samples = await self.store.history(experiment_id, tracker.last_t, limit) or []
        tracker.add(samples)
        traffic.add(samples)
        return tracker


    async def advise(self, experiment_id: str, body: object) -> dict[str, Any]:
        """Forecast the current settings against a proposed change (see bandit.serving.advisor)."""
        check_id(experiment_id, "experiment id")
        # Read fresh: a forecast is worth a round trip, and must not start from a stale cache.
        snapshot = await self.cache.load(experiment_id)
        if snapshot.experiment.archived:
            raise NotFound(archived_message(experiment_id))
        if snapshot.experiment.policy == "fixed":
            raise InvalidValue(f"experiment {experiment_id!r} is a fixed A/B test: its "
                               "allocation is its weights, and the advisor forecasts a "
                               "bandit's exploration settings")
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


def _list_entry(experiment: Experiment) -> dict[str, Any]:
    return {"id": experiment.id, "reward": experiment.reward, "arms": len(experiment.arms),
            "version": experiment.version,
            "status": "archived" if experiment.archived else "active",
            "owner": experiment.owner, "tags": list(experiment.tags),
            "created_at": experiment.created_at, "updated_at": experiment.updated_at}


def _query_flag(raw: str | None, name: str) -> bool:
    if raw is None or raw == "false":
        return False
    if raw == "true":
        return True
    raise InvalidValue(f"{name}: expected true or false, got {raw!r}")


def _initial_settings(experiment: Experiment) -> dict[str, dict[str, Any]]:
    """What a create entry of the audit log records: a contextual experiment's model (whose
    prior is the model's) in place of the context-free prior."""
    document = experiment.to_json()
    return {key: {"old": None, "new": document[key]}
            for key in ("arms", "reward", "model" if experiment.model else "prior",
                        "exploration", "attribution_window_s", "policy", "weights",
                        "targeting", "guardrails", "control", *METADATA_FIELDS)}



