"""Reward delivery without I/O: the bounded buffer, batching, retries and the accounting.

``reward()`` puts events into a ``RewardPipeline``; one sender (a thread in the sync client, a
task in the async one) loops on ``next_step()``: send the batch it returns and report the
answer with ``answered()`` or ``failed()``, or wait the seconds it returns (less when woken),
until it returns None. A batch is encoded once and sent unchanged until it is answered, so a
retry carries the same event ids and the service's dedup makes it count once.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bandit_client._protocol import Counters, dumps, is_retryable, json_object, refusal, retry_after
from bandit_client.errors import BufferFull, ClientClosed

logger = logging.getLogger("bandit_client")

EVENTS_PATH = "/v1/events"

#: The shortest request timeout a batch gets while ``close()`` runs out of time.
MIN_CLOSING_TIMEOUT_S = 0.1


@dataclass(frozen=True, slots=True)
class Rejected:
    """An event the service refused, or that could not be delivered before ``close()``."""

    #: The event as sent: ``{id, experiment, arm, reward, ts, decision_id?, unit?, context?,
    #: metric?}``.
    event: dict[str, Any]
    reason: str
    #: The HTTP status of a whole-batch refusal; None for a per-event rejection or an
    #: undelivered event.
    status: int | None = None


RejectedCallback = Callable[[list[Rejected]], None]


@dataclass(slots=True)
class Batch:
    events: list[dict[str, Any]]
    #: Encoded once: every attempt sends exactly these bytes.
    body: bytes
    attempts: int = 0
    #: Request timeout for the next attempt (shortened while ``close()`` runs out of time).
    timeout: float = 0.0


class Backoff:
    """Exponential backoff with jitter: attempt ``a`` waits U(c/2, c), c = min(cap, base 2^(a-1)).

    The jitter spreads the retries of many clients after a shared outage; a Retry-After
    header is honoured as a lower bound.
    """

    def __init__(self, base_s: float, cap_s: float, rng: random.Random | None = None) -> None:
        self.base_s, self.cap_s = base_s, cap_s
        self._rng = rng or random.Random()

    def delay(self, attempt: int, after: float | None = None) -> float:
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(attempt - 1, 60))
        delay = self._rng.uniform(ceiling / 2, ceiling)
        return delay if after is None else max(delay, after)


class RewardPipeline:
    """The reward buffer and its sender's state machine. Thread-safe."""

    def __init__(self, *, batch_size: int, max_buffer: int, flush_interval_s: float,
                 request_timeout_s: float, backoff: Backoff, counters: Counters,
                 on_rejected: RejectedCallback | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.batch_size, self.max_buffer = batch_size, max_buffer
        self.flush_interval_s, self.request_timeout_s = flush_interval_s, request_timeout_s
        self.backoff, self.counters, self.on_rejected = backoff, counters, on_rejected
        self._clock = clock
        self._lock = threading.Lock()
        self._buffer: deque[dict[str, Any]] = deque()
        self._current: Batch | None = None
        self._retry_at = 0.0
        self._oldest_at = 0.0
        self._enqueued = self._taken = self._resolved = self._flush_through = 0
        self._deadline: float | None = None
        #: Called (by the sender) whenever events were resolved: flush() waiters watch it.
        self.on_progress: Callable[[], None] = lambda: None

    # -- the caller's side ----------------------------------------------------------------

    def add(self, event: dict[str, Any]) -> bool:
        """Buffer one event; True when the sender should be woken (first event, full batch)."""
        with self._lock:
            if self._deadline is not None:
                raise ClientClosed("the client is closed: it takes no more rewards")
            held = len(self._buffer) + (len(self._current.events) if self._current else 0)
            if held >= self.max_buffer:
                self.counters.add("buffer_full")
                raise BufferFull(f"the reward buffer holds {held} undelivered events "
                                 f"(max_buffer={self.max_buffer}); this event was not taken")
            if not self._buffer:
                self._oldest_at = self._clock()
            self._buffer.append(event)
            self._enqueued += 1
            size = len(self._buffer)
        self.counters.add("enqueued")
        return size in (1, self.batch_size)

    @property
    def buffered(self) -> int:
        with self._lock:
            return len(self._buffer) + (len(self._current.events) if self._current else 0)

    def request_flush(self) -> int:
        """Send everything buffered now; returns the count flush() waits to see resolved."""
        with self._lock:
            self._flush_through = self._enqueued
            return self._enqueued

    def flushed(self, target: int) -> bool:
        return self._resolved >= target

    def close(self, timeout_s: float) -> None:
        """Deliver everything within ``timeout_s``; what is left then is reported undelivered."""
        with self._lock:
            now = self._clock()
            if self._deadline is None:
                self._deadline = now + timeout_s
            self._retry_at = min(self._retry_at, now)  # one more attempt now, not after backoff

    # -- the sender's side ----------------------------------------------------------------

    def next_step(self) -> Batch | float | None:
        """The batch to send now, or seconds to wait (inf: until woken), or None: stop."""
        with self._lock:
            now = self._clock()
            if self._deadline is None or now < self._deadline:
                return self._step(now)
            abandoned = self._take_everything()
        if abandoned:
            self.counters.add("undelivered", len(abandoned))
            self._resolve(len(abandoned), [
                Rejected(event, "not delivered before close() timed out; it may still have "
                         "been applied: resending it with the same id is safe")
                for event in abandoned])
        return None

    def answered(self, batch: Batch, status: int, retry_after_header: str | None,
                 body: bytes) -> None:
        """Account for the service's answer to ``batch``: done, refused, or retry later."""
        if is_retryable(status):
            self._retry(batch, f"HTTP {status}", retry_after(retry_after_header))
            return
        if status != 200:
            reason = str(refusal(status, body, f"POST {EVENTS_PATH}"))
            self.counters.add("rejected", len(batch.events))
            self._finish(batch, [Rejected(event, reason, status) for event in batch.events])
            return
        try:
            data = json_object(body)
            accepted, duplicates = int(data["accepted"]), int(data["duplicates"])
            rejected = [Rejected(batch.events[int(item["index"])], str(item["error"]))
                        for item in data["rejected"]]
        except (ValueError, KeyError, TypeError, IndexError) as error:
            # Applied or not, resending the same ids is safe: they count once.
            self._retry(batch, f"unreadable answer: {error!r}", None)
            return
        for name, amount in (("sent", len(batch.events)), ("accepted", accepted),
                             ("duplicates", duplicates), ("rejected", len(rejected))):
            self.counters.add(name, amount)
        self._finish(batch, rejected)

    def failed(self, batch: Batch, error: BaseException) -> None:
        """The attempt got no answer (connection error, timeout): retry later."""
        self._retry(batch, repr(error), None)

    # -- inside ---------------------------------------------------------------------------

    def _step(self, now: float) -> Batch | float | None:
        closing = self._deadline is not None
        if self._current is not None:
            if now < self._retry_at:
                deadline = math.inf if self._deadline is None else self._deadline
                return min(self._retry_at, deadline) - now
            return self._attempt(self._current, now)
        if not self._buffer:
            return None if closing else math.inf
        if len(self._buffer) < self.batch_size and not closing \
                and self._taken >= self._flush_through:
            due = self._oldest_at + self.flush_interval_s
            if due > now:
                return due - now
        count = min(len(self._buffer), self.batch_size)
        events = [self._buffer.popleft() for _ in range(count)]
        self._taken += count
        self._oldest_at = now
        self._current = Batch(events, dumps({"events": events}))
        return self._attempt(self._current, now)

    def _attempt(self, batch: Batch, now: float) -> Batch:
        if batch.attempts:
            self.counters.add("retries")
        batch.attempts += 1
        batch.timeout = self.request_timeout_s
        if self._deadline is not None:
            batch.timeout = max(min(batch.timeout, self._deadline - now), MIN_CLOSING_TIMEOUT_S)
        return batch

    def _take_everything(self) -> list[dict[str, Any]]:
        events = self._current.events if self._current else []
        events.extend(self._buffer)
        self._buffer.clear()
        self._current = None
        return events

    def _retry(self, batch: Batch, reason: str, after: float | None) -> None:
        delay = self.backoff.delay(batch.attempts, after)
        log = logger.warning if batch.attempts == 1 else logger.debug
        log("reward batch of %d events not delivered (%s); attempt %d in %.2f s",
            len(batch.events), reason, batch.attempts + 1, delay)
        with self._lock:
            self._retry_at = self._clock() + delay

    def _finish(self, batch: Batch, rejected: list[Rejected]) -> None:
        with self._lock:
            self._current = None
        if batch.attempts > 1:
            logger.info("reward batch of %d events delivered after %d attempts",
                        len(batch.events), batch.attempts)
        self._resolve(len(batch.events), rejected)

    def _resolve(self, count: int, rejected: list[Rejected]) -> None:
        with self._lock:
            self._resolved += count
        if rejected:
            logger.warning("%d reward events rejected or undelivered; the first: %s (%s)",
                           len(rejected), rejected[0].event.get("id"), rejected[0].reason)
            if self.on_rejected is not None:
                try:
                    self.on_rejected(rejected)
                except Exception:
                    logger.exception("the on_rejected callback failed")
        self.on_progress()
