"""Reward events: checked one by one, verified against the decisions they name, applied to
Redis in one script call per experiment (dedup and increments in the same atomic step). A small
request for one experiment shares its call with the other requests of that experiment that
arrived meanwhile (``bandit.serving.groups``)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from bandit.errors import InvalidValue, NotFound
from bandit.features import feature_hash
from bandit.inputs import MAX_EVENT_EXPERIMENTS, RewardEvent, parse_event, parse_event_batch
from bandit.model import GUARD_SEPARATOR, PRIMARY, Experiment, Guardrail
from bandit.serving.cache import Snapshot
from bandit.serving.decisions import Decider
from bandit.serving.groups import GROUP_REQUEST_EVENTS, ContextualEvents, GroupCommit, weigh
from bandit.settings import Settings
from bandit.store.codec import EncodedEvent
from bandit.store.redis_store import (
    APPLIED,
    DUPLICATE,
    REWARDED,
    UNKNOWN_DECISION,
    WRONG_ARM,
    RedisStore,
)
from bandit.tokens import EXPIRED, FORGED

#: A large request gives the event loop back every this many events (a few milliseconds of
#: work), so that no request holds the other requests of the process for long (a batch of
#: 10,000 events held them for 170 ms in benchmarks/bench_loop.py).
YIELD_EVERY = 2000
#: Contexts encoded between two turns of the event loop (a 64-feature context takes about
#: 20 us: 250 of them about 5 ms).
CONTEXTS_PER_TURN = 250

_STATUS_ERRORS = {
    UNKNOWN_DECISION: "decision_id: unknown, or its attribution window has passed",
    WRONG_ARM: "arm: differs from the arm of the decision",
    REWARDED: "decision_id: this decision already has a reward for this arm (another event id)",
}


class Rewards:
    """Reward events of one process: each checked on its own, the good ones applied."""

    def __init__(self, store: RedisStore, settings: Settings, decisions: Decider) -> None:
        self._store = store
        self._settings = settings
        self._decisions = decisions
        self.groups = GroupCommit(store, settings.dedup_window_s)

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
        if len(grouped) > 1:
            # The experiments not cached yet, in one round trip (not one each, in turn); one
            # alone is read, if need be, when its snapshot is asked for.
            await self._decisions.cache.load_many(list(grouped))
        batches: dict[str, list[EncodedEvent]] = {}
        positions: dict[str, list[int]] = {}
        contextual: dict[str, _ContextualBatch] = {}
        since_yield = 0
        for experiment_id, events in grouped.items():
            since_yield += len(events) + YIELD_EVERY // 100  # an experiment weighs 20 events
            if since_yield >= YIELD_EVERY:
                await asyncio.sleep(0)
                since_yield = 0
            encoded, indices, errors, batch = await self._encode_events(experiment_id, events)
            rejected.extend(errors)
            if batch is not None and batch.events:
                contextual[experiment_id] = batch
            if encoded:  # a context-free experiment's, or guardrail metrics' of a contextual one
                batches[experiment_id] = encoded
                positions[experiment_id] = indices
        accepted = duplicates = 0
        outcomes: list[tuple[str, list[int], list[int] | None]] = []
        total = sum(map(len, positions.values())) + sum(len(b.events)
                                                        for b in contextual.values())
        if len(batches) + len(contextual) == 1 and total <= GROUP_REQUEST_EVENTS:
            # A small request for one experiment (a click beacon): in a group commit.
            for experiment_id, batch in contextual.items():
                outcomes.append((experiment_id, batch.indices, await self.groups.apply(
                    experiment_id, batch.events,
                    ContextualEvents(batch.features, batch.half_life_s))))
            for experiment_id, plain in batches.items():
                outcomes.append((experiment_id, positions[experiment_id],
                                 await self.groups.apply(experiment_id, plain)))
        else:
            # Larger or wider requests: on their own at once, as they come.
            for experiment_id, batch in contextual.items():
                outcomes.append((experiment_id, batch.indices,
                                 await self._apply_contextual(experiment_id, batch)))
            if batches:
                applied = await self._store.apply_events(batches,
                                                         self._settings.dedup_window_s)
                outcomes += [(experiment_id, positions[experiment_id], statuses)
                             for experiment_id, statuses in applied.items()]
        if outcomes:
            for experiment_id, indices, statuses in outcomes:
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

    async def _reread(self, experiment_id: str) -> Snapshot:
        self._decisions.cache.forget(experiment_id)
        snapshot: Snapshot = await self._decisions.snapshot(experiment_id)
        return snapshot

    async def _apply_contextual(self, experiment_id: str,
                                batch: _ContextualBatch) -> list[int] | None:
        """Apply a contextual experiment's events with their feature rows. With forgetting,
        an event with a time ``ts`` weighs 2^((ts - now) / h) (never more than 1), and the
        script decays the sums from this clock's now to its own."""
        weighed_at = time.time()
        weights = weigh(batch.events, batch.half_life_s, weighed_at)
        return await self._store.apply_contextual(experiment_id, batch.events, batch.features,
                                                  weights, weighed_at,
                                                  self._settings.dedup_window_s)

    async def _encode_events(
        self, experiment_id: str, events: list[RewardEvent]
    ) -> tuple[list[EncodedEvent], list[int], list[dict[str, Any]], _ContextualBatch | None]:
        # A rejected reward is dropped by its sender for good: before rejecting for what this
        # cache says (archived, an unknown arm or guardrail metric), read the experiment from
        # Redis again. Another process may have unarchived it, or added the arm or the
        # guardrail, a moment ago.
        try:
            try:
                snapshot = await self._decisions.snapshot(experiment_id)
            except NotFound:
                snapshot = await self._reread(experiment_id)
            current = snapshot.experiment
            if any(current.arm_index(e.arm) is None or (
                    e.metric is not None and current.guardrail(e.metric) is None)
                   for e in events):  # an arm or a guardrail added a moment ago, maybe
                snapshot = await self._reread(experiment_id)
        except NotFound as error:
            return [], [], [{"index": e.position, "error": error.message} for e in events], None
        experiment = snapshot.experiment
        model = experiment.model
        bernoulli = experiment.reward == "bernoulli"
        encoded: list[EncodedEvent] = []
        indices: list[int] = []
        errors: list[dict[str, Any]] = []
        arm_indices = experiment.arm_indices
        require = self._settings.require_decision_ids
        rows: list[npt.NDArray[np.float64]] = []
        for position, event in enumerate(events):
            index, reward, decision_id, context = (event.position, event.reward,
                                                   event.decision_id, event.context)
            if model is not None and position % CONTEXTS_PER_TURN == CONTEXTS_PER_TURN - 1:
                await asyncio.sleep(0)  # encoding contexts: a few milliseconds per turn
            arm_index = arm_indices.get(event.arm)
            guardrail = None if event.metric is None else experiment.guardrail(event.metric)
            problem = None if event.metric is None else _metric_problem(experiment, event,
                                                                        guardrail)
            binary = bernoulli if guardrail is None else guardrail.kind == "bernoulli"
            if problem is not None:
                errors.append({"index": index, "error": problem})
            elif arm_index is not None and (not binary or 0.0 <= reward <= 1.0) and (
                    decision_id is None or decision_id[0] != "p" or bernoulli) and (
                    decision_id is not None or not require):
                checked = EncodedEvent(event.id, arm_index, reward, event.ts, decision_id,
                                       "" if guardrail is None else f"{GUARD_SEPARATOR}"
                                       f"{guardrail.key}")
                if model is not None and guardrail is not None and decision_id is None:
                    rows.append(np.zeros(model.dimension))  # nothing to verify it against
                elif model is not None:
                    try:
                        rows.append(model.encode(context))
                    except InvalidValue as error:
                        errors.append({"index": index, "error": error.message + (
                            " (a contextual experiment's reward carries the context its "
                            "decision was served for)" if context is None else "")})
                        continue
                encoded.append(checked)
                indices.append(index)
            elif decision_id is None and require:
                errors.append({"index": index, "error": "decision_id: required (this service "
                               "only counts rewards for decisions it served)"})
            elif arm_index is None:
                errors.append({"index": index, "error": f"arm: {event.arm!r} is not an arm of "
                               f"experiment {experiment_id!r}"})
            elif binary:
                errors.append({"index": index, "error": f"reward: {reward!r} is outside [0, 1] "
                               + ("for a bernoulli experiment" if guardrail is None else
                                  f"for bernoulli guardrail metric {guardrail.metric!r}")})
            else:
                errors.append({"index": index, "error": "decision_id: provisional decisions "
                               "exist only for bernoulli experiments"})
        signed = [i for i, event in enumerate(encoded) if event.decision_id is not None]
        if signed:
            signer = await self._decisions.signer()
            statuses = signer.verify(
                experiment_id, [encoded[i].decision_id or "" for i in signed],
                [encoded[i].arm_index for i in signed], time.time(),
                self._settings.dedup_window_s,
                None if model is None else [feature_hash(rows[i]) for i in signed])
            refused = {i: status for i, status in zip(signed, statuses, strict=True) if status}
            if refused:
                for i, status in refused.items():
                    errors.append({"index": indices[i], "error": _token_error(
                        status, experiment_id, experiment.arms[encoded[i].arm_index],
                        self._settings.dedup_window_s, model is not None)})
                encoded = [e for i, e in enumerate(encoded) if i not in refused]
                indices = [e for i, e in enumerate(indices) if i not in refused]
                rows = [e for i, e in enumerate(rows) if i not in refused]
        batch = None
        if model is not None:
            # A contextual experiment's guardrail metrics are context-free statistics (their
            # rewards carry the context only for their decision's signature): their events are
            # applied as a context-free experiment's, apart from the rows.
            primary = [i for i, event in enumerate(encoded) if not event.guard]
            batch = _ContextualBatch(
                [encoded[i] for i in primary], [indices[i] for i in primary],
                np.vstack([rows[i] for i in primary]) if primary
                else np.zeros((0, model.dimension)), experiment.exploration.half_life_s)
            guards = [i for i, event in enumerate(encoded) if event.guard]
            encoded, indices = [encoded[i] for i in guards], [indices[i] for i in guards]
        return encoded, indices, errors, batch


class _ContextualBatch(NamedTuple):
    events: list[EncodedEvent]
    indices: list[int]
    #: One feature vector per event (n, d).
    features: npt.NDArray[np.float64]
    #: The experiment's forgetting when the events were checked.
    half_life_s: float | None


def _metric_problem(experiment: Experiment, event: RewardEvent,
                    guardrail: Guardrail | None) -> str | None:
    """Why an event's guardrail metric (``guardrail``: the experiment's, None if it has no such
    metric) cannot be counted (None: it can)."""
    if guardrail is None:
        names = [g.metric for g in experiment.guardrails]
        return (f"metric: {event.metric!r} is not a guardrail metric of experiment "
                f"{experiment.id!r} (" + (f"its guardrails: {names}" if names else
                                          "it has no guardrails")
                + f"; omit metric, or send {PRIMARY!r}, for the reward it optimises)")
    if event.decision_id is not None and event.decision_id[0] == "p":
        return ("decision_id: a provisional decision converts the primary metric only; a "
                "guardrail metric's reward names a signed decision, or none")
    return None


def _token_error(status: int, experiment_id: str, arm: str, window_s: float,
                 contextual: bool = False) -> str:
    if status == EXPIRED:
        return (f"decision_id: served more than the dedup window ({window_s:g} s) ago, so a "
                "reward for it could not be told from a replay; raise --dedup-window for "
                "longer reward delays")
    assert status == FORGED
    if contextual:
        return (f"decision_id: not a decision this service served for experiment "
                f"{experiment_id!r}, arm {arm!r} and this context: the reward names the "
                "decision's experiment and arm (one of its slate's arms), and its context "
                "encodes to the features the decision was served for")
    return (f"decision_id: not a decision this service served for experiment "
            f"{experiment_id!r} and arm {arm!r}")
