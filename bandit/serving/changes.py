"""Which experiments changed in Redis, told by Redis: the cache's change feed.

Every script that changes an experiment's posteriors or settings publishes the experiment's id
on ``<prefix>:changes`` (``bandit.store.scripts``), at most once per ``NOTIFY_WINDOW_MS`` per
experiment: a busy experiment sends ten messages a second, not one per event batch. Each
service process subscribes, and its cache re-reads only the experiments named, so the cost of
keeping a cache fresh follows what changes, not how many experiments are cached.

Why this is exact despite the window: a change that publishes nothing happened within the
window after one that did. The feed keeps an experiment *dirty* until the window after its
last message has passed (measured from when the message arrived, which is after it was sent),
and the cache reads a dirty experiment at every refresh until then, so its last read comes
after every change of the window.

What can go missing, and how it is recovered:

- The subscription drops (Redis restarts, a failover, a network cut): redis-py reconnects and
  subscribes again, and every (re)subscription marks the whole cache dirty for a window.
- Redis drops a subscriber that falls too far behind: the same (it is a disconnection).
- On a Redis Cluster, a message crosses the cluster bus to the node this process listens on;
  a bus outage can lose one without disconnecting us. The cache's slow sweep of change
  counters (``bandit.serving.cache``) catches those within a minute.

Freshness: the feed sends a PING on its connection at every refresh; Redis answers it after
every message published before it, so when its PONG arrives the feed has heard of every change
made before the PING was sent. ``confirmed_at`` is that time: the cache's age is measured from
it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from redis import exceptions as redis_errors

from bandit.errors import StoreUnavailable
from bandit.store.redis_store import RedisStore

__all__ = ["NOTIFY_WINDOW_MS", "ChangeFeed", "Dirty", "cancelling"]

logger = logging.getLogger(__name__)

#: A script publishes an experiment's id at most once per this many milliseconds.
NOTIFY_WINDOW_MS = 100
#: Seconds the feed waits before subscribing again after a failure.
RETRY_S = 0.5
#: Longest wait for a message before the listener sends a PING asked for meanwhile.
LISTEN_S = 0.05


def cancelling() -> bool:
    """True once the running task was asked to stop.

    redis-py can swallow a CancelledError delivered mid-command, so background loops check
    this on every turn: a cancel always ends them.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class Dirty:
    """The experiments to read again, each until the notify window after its last message.

    An experiment named at ``t`` (local time of arrival) may change again, unannounced, until
    ``t + window``: it is read at every refresh that starts by then, and once more at the
    first refresh that starts after, which reads what the window's last change left.

    A (re)subscription is the same for every experiment at once: a message sent just before
    it was not heard, and the changes its window held back would never be announced.
    """

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._everything_until: float | None = None

    def note(self, experiment_id: str, until: float) -> None:
        self._until[experiment_id] = until

    def note_everything(self, until: float) -> None:
        self._everything_until = until

    def take(self, started: float) -> tuple[bool, set[str]]:
        """(everything?, the experiments named) to read at a refresh starting at
        ``started``; what is past its window is returned one last time and forgotten."""
        until = self._everything_until
        if until is not None and until < started:
            self._everything_until = None
        everything = until is not None
        named = set(self._until)
        self._until = {k: until for k, until in self._until.items() if until >= started}
        return everything, named


class ChangeFeed:
    """The experiments named on the change channel since the cache last took them."""

    def __init__(self, store: RedisStore, *, timeout_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._timeout_s = timeout_s
        self._clock = clock
        self._dirty = Dirty()
        self._pings: deque[float] = deque()
        #: When a PING was asked for that the listener has not sent yet.
        self._ping_due: float | None = None
        self._pubsub: Any = None
        #: Set when the connection looks dead: the listener subscribes again.
        self._restart = False
        #: When the feed last knew of every change made before it (see the module docstring).
        self.confirmed_at = clock()
        self.subscribed = False

    def take(self, started: float) -> tuple[bool, set[str]]:
        """(everything?, the dirty experiments) to read at a refresh that started at
        ``started`` (see ``Dirty``)."""
        return self._dirty.take(started)

    async def ping(self) -> None:
        """Ask for a PONG behind every message published so far (``confirmed_at``)."""
        if self._pubsub is None or not self.subscribed:
            return
        now = self._clock()
        if self._pings and now - self._pings[0] > 2 * self._timeout_s:
            # No answer for two Redis timeouts: the connection is dead without having said so.
            logger.warning("change feed: no answer from Redis in %.1f s; subscribing again",
                           now - self._pings[0])
            self.subscribed, self._restart = False, True
            return
        # Sent by the listener (``run``), the one coroutine that uses the connection: a
        # PING sent from here while the listener read (or reconnected) the same connection
        # had two coroutines reading one socket after a cut.
        if self._ping_due is None:
            self._ping_due = now

    async def run(self) -> None:
        """Listen forever: subscribe, note each message, subscribe again after a failure."""
        channel = self._store.changes_channel
        while not cancelling():
            failed = False
            try:
                self._pubsub = self._store.subscriber()
                await self._pubsub.subscribe(channel)
                while not self._restart and not cancelling():
                    if self._ping_due is not None and self.subscribed:
                        due, self._ping_due = self._ping_due, None
                        await self._pubsub.ping(message=repr(due))
                        self._pings.append(due)
                    message = await self._pubsub.get_message(ignore_subscribe_messages=False,
                                                             timeout=LISTEN_S)
                    if message is not None:
                        self._note(message)
            except asyncio.CancelledError:
                await self._close()
                raise
            except (StoreUnavailable, redis_errors.RedisError, OSError) as error:
                logger.warning("change feed interrupted (the cache polls until it is back): "
                               "%s", error)
                failed = True
            await self._close()
            if failed:
                await asyncio.sleep(RETRY_S)

    def _note(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "message":
            self._dirty.note(message["data"], self._clock() + NOTIFY_WINDOW_MS / 1000)
        elif kind == "pong":
            if self._pings:
                self.confirmed_at = self._pings.popleft()
        elif kind == "subscribe":
            # A first subscription, or one renewed after a reconnection: what was published
            # in between is lost, so everything is read again, as if every experiment had
            # just been named.
            self._dirty.note_everything(self._clock() + NOTIFY_WINDOW_MS / 1000)
            self._pings.clear()
            self.subscribed = True
            logger.info("change feed subscribed to %s", message["channel"])

    async def _close(self) -> None:
        self.subscribed, self._restart = False, False
        self._pings.clear()
        self._ping_due = None
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(redis_errors.RedisError, OSError):
                await pubsub.aclose()
