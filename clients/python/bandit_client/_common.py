"""What the sync and async clients share: options, decision calls, ``reward()`` and stats.

The clients subclass ``ClientBase`` and add a transport: how a ``DecisionCall`` and a reward
``Batch`` are sent, and how the reward sender is woken.
"""

from __future__ import annotations

import math
import numbers
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict
from urllib.parse import urlsplit

from bandit_client._decisions import (
    CircuitBreaker,
    DecisionCall,
    allocate_body,
    fallback_slate,
    validate_experiment,
)
from bandit_client._events import Backoff, RejectedCallback, RewardPipeline
from bandit_client._protocol import (
    ID_PATTERN,
    MAX_BATCH,
    MAX_PLACEMENTS,
    MAX_SLATE,
    ClientStats,
    Counters,
    event_problem,
)
from bandit_client._version import __version__
from bandit_client.errors import ClientClosed, InvalidRequest


class DecisionOptions(TypedDict, total=False):
    """Keyword arguments of ``decide()`` and ``allocate()``."""

    #: Caller-supplied id of the user or session; needed for ``sticky``.
    unit: str | None
    #: The unit keeps the arm (or slate) it first received, on every service process.
    sticky: bool
    #: Ask for a ranked slate of ``k`` distinct arms instead of one arm.
    k: int | None
    #: Validated and passed on; the Thompson policy does not use it.
    context: Mapping[str, Any] | None
    #: Bernoulli experiments: the decision counts as a failure until a reward converts it.
    provisional: bool
    #: The arm (for ``k``: the slate) to return when the service cannot answer in time;
    #: overrides the client's ``fallbacks``. Without one, such a call raises Unavailable.
    fallback: str | Sequence[str] | None
    #: Seconds the whole call may take (default: the client's ``decision_timeout``).
    timeout: float | None


def _positive(name: str, value: float) -> float:
    if not (isinstance(value, int | float) and 0 < value < math.inf):
        raise ValueError(f"{name}: expected a positive number of seconds, got {value!r}")
    return float(value)


def _count(name: str, value: int, low: int, high: float = math.inf) -> int:
    if not (isinstance(value, int) and low <= value <= high):
        bounds = f"at least {low}" if high == math.inf else f"from {low} to {high}"
        raise ValueError(f"{name}: expected a whole number {bounds}, got {value!r}")
    return value


class ClientBase:
    """Options and logic common to ``BanditClient`` and ``AsyncBanditClient``."""

    def __init__(
        self, url: str, *, api_key: str | None = None, decision_timeout: float = 0.2,
        fallbacks: Mapping[str, str | Sequence[str]] | None = None,
        events_timeout: float = 10.0, flush_interval: float = 1.0, batch_size: int = 1000,
        max_buffer: int = 100_000, retry_backoff: float = 0.1, retry_backoff_max: float = 10.0,
        breaker_threshold: int | None = 5, breaker_cooldown: float = 1.0,
        close_timeout: float = 5.0, max_connections: int = 10,
        on_rejected: RejectedCallback | None = None,
    ) -> None:
        """A client of the service at ``url`` (e.g. ``http://127.0.0.1:8080``).

        Decisions: ``decision_timeout`` bounds a whole decision call (connect, send, answer);
        ``fallbacks`` maps experiment ids to the arm (or slate) to serve when the service
        cannot answer in time (a call's ``fallback=`` overrides it). After
        ``breaker_threshold`` consecutive failures (None: never) decisions fall back without
        asking the service for ``breaker_cooldown`` seconds, then one call probes it.

        Rewards: buffered (at most ``max_buffer`` events, then ``reward()`` raises
        BufferFull) and sent by a background sender in batches of up to ``batch_size``,
        at least every ``flush_interval`` seconds. Each attempt may take ``events_timeout``;
        failed attempts are retried with exponential backoff from ``retry_backoff`` to
        ``retry_backoff_max`` seconds, with jitter, for as long as the client is open.
        ``close()`` tries for ``close_timeout`` seconds. Refused and undelivered events are
        logged, counted and passed to ``on_rejected`` (called on the sender's thread or task).

        ``api_key`` is sent as ``Authorization: Bearer <key>``.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise ValueError(f"url: expected http(s)://host[:port][/prefix], got {url!r}")
        self.url = url.rstrip("/")
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._prefix = parts.path.rstrip("/")
        self.decision_timeout = _positive("decision_timeout", decision_timeout)
        self.events_timeout = _positive("events_timeout", events_timeout)
        self.close_timeout = _positive("close_timeout", close_timeout)
        self.max_connections = _count("max_connections", max_connections, 1)
        self._fallbacks = dict(fallbacks or {})
        for experiment, fallback in self._fallbacks.items():
            if not (isinstance(experiment, str) and ID_PATTERN.fullmatch(experiment)):
                raise ValueError(f"fallbacks: {experiment!r} is not a valid experiment id")
            fallback_slate(fallback, None if isinstance(fallback, str) else len(fallback))
        self._headers = {"Content-Type": "application/json",
                         "User-Agent": f"bandit-client/{__version__}"}
        if api_key is not None:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._counters = Counters()
        if breaker_threshold is not None:
            _count("breaker_threshold", breaker_threshold, 1)
        self._breaker = CircuitBreaker(breaker_threshold,
                                       _positive("breaker_cooldown", breaker_cooldown))
        batch_size = _count("batch_size", batch_size, 1, MAX_BATCH)
        self._pipeline = RewardPipeline(
            batch_size=batch_size,
            max_buffer=_count("max_buffer", max_buffer, batch_size),
            flush_interval_s=_positive("flush_interval", flush_interval),
            request_timeout_s=self.events_timeout,
            backoff=Backoff(_positive("retry_backoff", retry_backoff),
                            _positive("retry_backoff_max", retry_backoff_max)),
            counters=self._counters, on_rejected=on_rejected,
        )
        self._closed = False
        self._setup()

    def _setup(self) -> None:
        """The transport's own state (no connections yet: they open on first use)."""

    def _wake_sender(self) -> None:
        """Start the reward sender if needed, and make it look at the buffer now."""
        raise NotImplementedError

    @property
    def stats(self) -> ClientStats:
        """The client's counters now (decisions, fallbacks, events by outcome, buffered)."""
        return self._counters.snapshot(self._pipeline.buffered)

    @property
    def circuit_open(self) -> bool:
        """Whether decisions currently fall back without asking the service."""
        return self._breaker.is_open

    def reward(self, experiment: str, arm: str, reward: float, *,
               decision_id: str | None = None, unit: str | None = None,
               event_id: str | None = None, ts: float | None = None,
               context: Mapping[str, Any] | None = None, metric: str | None = None) -> str:
        """Buffer one reward event for the sender; returns its event id. No I/O.

        ``event_id`` makes the event idempotent (default: a new uuid4 hex): every retry
        resends it, and the service counts it once. ``ts`` is when the reward happened, in
        epoch seconds (default: now, so buffering and retries do not make it look newer).
        ``context``: for a contextual experiment, the context the decision was served for
        (the service refuses a reward whose context encodes to other features).
        ``metric``: a guardrail metric of the experiment this reward is for (default: the
        primary metric, the reward the bandit optimises); give each metric's event its own id.
        Raises InvalidRequest for an event the service would refuse by its form (the
        experiment-specific checks happen there: such events are reported via
        ``on_rejected``), BufferFull when the buffer is full, ClientClosed after close().
        """
        event: dict[str, Any] = {
            "id": uuid.uuid4().hex if event_id is None else event_id,
            "experiment": experiment, "arm": arm,
            "reward": float(reward) if isinstance(reward, numbers.Real) else reward,
            "ts": time.time() if ts is None else ts,
        }
        if decision_id is not None:
            event["decision_id"] = decision_id
        if unit is not None:
            event["unit"] = unit
        if context is not None:
            event["context"] = dict(context) if isinstance(context, Mapping) else context
        if metric is not None:
            event["metric"] = metric
        problem = event_problem(event)
        if problem is not None:
            raise InvalidRequest(problem)
        if self._pipeline.add(event):
            self._wake_sender()
        return str(event["id"])

    def _start_closing(self, timeout: float | None) -> float:
        """Stop taking work, and have the sender deliver what is left (started if need be).

        Returns how long to wait for the sender to finish: the delivery deadline, plus a
        grace for an attempt in flight then (it gets a short timeout of its own).
        """
        self._closed = True
        timeout = self.close_timeout if timeout is None else timeout
        self._pipeline.close(timeout)
        if self._pipeline.buffered:  # an event may have raced in before the sender started
            self._wake_sender()
        return timeout + 1.0

    def _request_flush(self) -> int | None:
        """Have the sender send everything buffered now; returns the count of resolved events
        that flush() waits for, or None when there is nothing to wait for."""
        target = self._pipeline.request_flush()
        if self._pipeline.flushed(target):
            return None
        self._wake_sender()
        return target

    def _decision_call(self, experiment: str, n: int, *, unit: str | None = None,
                       sticky: bool = False, k: int | None = None,
                       context: Mapping[str, Any] | None = None, provisional: bool = False,
                       fallback: str | Sequence[str] | None = None,
                       timeout: float | None = None) -> DecisionCall:
        if self._closed:
            raise ClientClosed("the client is closed: it makes no more decisions")
        validate_experiment(experiment)
        # n and k shape the fallback too, so they are checked here, before anything else.
        if not (isinstance(n, int) and 1 <= n <= MAX_BATCH):
            raise InvalidRequest(f"n: expected a whole number from 1 to {MAX_BATCH}, got {n!r}")
        if k is not None and not (isinstance(k, int) and 1 <= k <= MAX_SLATE):
            raise InvalidRequest(f"k: expected a whole number from 1 to {MAX_SLATE}, got {k!r}")
        if k is not None and n * k > MAX_PLACEMENTS:
            raise InvalidRequest(f"n * k: {n} slates of {k} arms is over the service's cap of "
                                 f"{MAX_PLACEMENTS} arms per request")
        return DecisionCall(
            experiment=experiment, n=n,
            path=f"{self._prefix}/v1/experiments/{experiment}/allocate",
            body=allocate_body(n, k, unit, sticky, context, provisional),
            timeout=self.decision_timeout if timeout is None else _positive("timeout", timeout),
            fallback=fallback_slate(
                self._fallbacks.get(experiment) if fallback is None else fallback, k),
            breaker=self._breaker, counters=self._counters,
        )
