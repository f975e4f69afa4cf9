"""Group commit of small reward requests: one script call per experiment for every request
that arrived while the previous call for that experiment was in flight.

A click beacon sends one event per request. Applied alone, each request paid a whole Redis
script call (a pipeline, a round trip, the reply), about two thirds of its cost. Here the
requests of one experiment queue in its *lane*:

- A request that finds no call in flight for its experiment goes at once (in the next turn
  of the event loop, with whatever arrived in the same turn): a lone request waits for no
  timer.
- Requests that arrive while a call is in flight wait for it and then go together, in
  arrival order, in the next call: the busier the experiment, the larger its groups, with no
  delay chosen in advance.
- A request is acknowledged only once the call holding its events has returned, as before,
  and with exactly the answer it would have had alone: the events of a group are the
  requests' events one after the other, and the script checks them in that order (dedup,
  "one reward per decision and arm"), as it does within a request. Two requests that name
  the same event id or the same provisional decision never share a call, since the script
  answers a repeat within one call by its first copy; the later one goes in the next call,
  which sees the first one's outcome in Redis. So every answer equals the one of running the
  requests one after another in arrival order.
- A failed call (Redis unreachable: ``StoreUnavailable``, a 503) fails every request of its
  group and acknowledges none; the requests waiting behind it get their own call.

Only small requests for one experiment join a lane (``GROUP_REQUEST_EVENTS``); a larger or
wider batch is applied on its own at once, as before, so it neither waits behind a queue of
small requests nor is split.
"""

from __future__ import annotations

import asyncio
import time
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from bandit.errors import StoreUnavailable
from bandit.store.codec import EncodedEvent
from bandit.store.redis_store import RedisStore

#: A request of at most this many events, all for one experiment, joins its experiment's
#: group; a larger one is applied alone (its own script call costs it little per event).
GROUP_REQUEST_EVENTS = 100
#: Most events in one grouped script call (whole requests: a request is never split), so
#: that one call holds Redis for about a millisecond at most.
GROUP_EVENTS = 1000

Statuses = list[int] | None


class ContextualEvents(NamedTuple):
    """A contextual experiment's checked events: feature rows, and the forgetting to weigh
    them with."""

    #: One feature vector per event (n, d).
    features: npt.NDArray[np.float64]
    #: The experiment's half-life when the events were checked (None: no forgetting).
    half_life_s: float | None


class _Request:
    __slots__ = ("contextual", "events", "future")

    def __init__(self, events: list[EncodedEvent], contextual: ContextualEvents | None,
                 future: asyncio.Future[Statuses]) -> None:
        self.events = events
        self.contextual = contextual
        self.future = future

    @property
    def keys(self) -> set[str]:
        """What must not repeat within one call: event ids and provisional decisions."""
        keys = {e.event_id for e in self.events}
        keys.update("\0" + e.decision_id for e in self.events
                    if e.decision_id is not None and e.decision_id[0] == "p")
        return keys


class _Lane:
    __slots__ = ("queue", "task")

    def __init__(self) -> None:
        self.queue: list[_Request] = []
        #: The task making this experiment's calls, while there are requests to apply.
        self.task: asyncio.Task[None] | None = None


def weigh(events: list[EncodedEvent], half_life_s: float | None,
          weighed_at: float) -> npt.NDArray[np.float64]:
    """With forgetting, an event with a time ``ts`` weighs 2^((ts - now) / h) (never more
    than 1); without, 1."""
    weights = np.ones(len(events))
    if half_life_s is not None:
        for i, event in enumerate(events):
            if event.ts is not None:
                weights[i] = 2.0 ** (min(event.ts - weighed_at, 0.0) / half_life_s)
    return weights


class GroupCommit:
    """The lanes of one process, one per experiment with requests waiting or in flight."""

    def __init__(self, store: RedisStore, dedup_window_s: float) -> None:
        self._store = store
        self._window_s = dedup_window_s
        self._lanes: dict[str, _Lane] = {}
        #: Script calls made for groups, and the requests they answered (metrics, tests).
        self.calls = 0
        self.requests = 0

    async def apply(self, experiment_id: str, events: list[EncodedEvent],
                    contextual: ContextualEvents | None = None) -> Statuses:
        """The statuses of ``events`` (APPLIED, DUPLICATE, ...), or None when the experiment
        is archived or gone, once the call holding them has returned."""
        lane = self._lanes.get(experiment_id)
        if lane is None:
            lane = self._lanes[experiment_id] = _Lane()
        future: asyncio.Future[Statuses] = asyncio.get_running_loop().create_future()
        lane.queue.append(_Request(events, contextual, future))
        if lane.task is None:
            lane.task = asyncio.create_task(self._drain(experiment_id, lane),
                                            name=f"group-commit {experiment_id}")
        return await future

    async def _drain(self, experiment_id: str, lane: _Lane) -> None:
        group: list[_Request] = []
        try:
            while lane.queue:
                if any(request.future.done() for request in lane.queue):
                    # Cancelled while waiting (a client gone): never sent, never answered.
                    lane.queue[:] = [r for r in lane.queue if not r.future.done()]
                    if not lane.queue:
                        break
                group = _take(lane.queue)
                try:
                    await self._commit(experiment_id, group)
                except Exception as error:
                    for request in group:
                        if not request.future.done():
                            request.future.set_exception(error)
                group = []
        except BaseException:
            # Cancelled (the process is stopping): nothing in flight or waiting is
            # acknowledged.
            stopping = StoreUnavailable("the service is stopping; retry")
            for request in group + lane.queue:
                if not request.future.done():
                    request.future.set_exception(stopping)
            lane.queue.clear()
            raise
        finally:
            lane.task = None
            if self._lanes.get(experiment_id) is lane and not lane.queue:
                del self._lanes[experiment_id]

    async def _commit(self, experiment_id: str, group: list[_Request]) -> None:
        events = group[0].events if len(group) == 1 else [
            event for request in group for event in request.events]
        self.calls += 1
        self.requests += len(group)
        if group[0].contextual is None:
            statuses = (await self._store.apply_events({experiment_id: events},
                                                       self._window_s))[experiment_id]
        else:
            weighed_at = time.time()
            weights = np.concatenate([
                weigh(request.events, request.contextual.half_life_s, weighed_at)
                for request in group if request.contextual is not None])
            features = np.vstack([request.contextual.features for request in group
                                  if request.contextual is not None])
            statuses = await self._store.apply_contextual(experiment_id, events, features,
                                                          weights, weighed_at, self._window_s)
        start = 0
        for request in group:
            end = start + len(request.events)
            if not request.future.done():
                request.future.set_result(None if statuses is None else statuses[start:end])
            start = end


def _take(queue: list[_Request]) -> list[_Request]:
    """The next group: the requests at the head of the queue, in order, up to GROUP_EVENTS
    events, of one kind (contextual or not), until one repeats an event id or provisional
    decision of the group (it heads the next group)."""
    first = queue[0]
    count = 1
    size = len(first.events)
    if len(queue) > 1:
        seen = first.keys
        kind = first.contextual is None
        for request in queue[1:]:
            size += len(request.events)
            if size > GROUP_EVENTS or (request.contextual is None) != kind:
                break
            keys = request.keys
            if not seen.isdisjoint(keys):
                break
            seen |= keys
            count += 1
    group = queue[:count]
    del queue[:count]
    return group
