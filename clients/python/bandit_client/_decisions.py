"""Decisions: the request, the answer, the caller's fallback and the circuit breaker.

No I/O: a transport sends ``DecisionCall.body`` to ``DecisionCall.path`` within
``DecisionCall.timeout`` and hands the answer (or its failure) back to the call, which turns it
into decisions, a fallback, or an exception. The sync and async clients differ only in how
they send.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bandit_client._protocol import ID_PATTERN, Counters, dumps, is_retryable, json_object, refusal
from bandit_client.errors import InvalidRequest, Unavailable

#: What a fallback decision says when the circuit breaker kept the call from being made.
CIRCUIT_OPEN = "circuit open: the service failed repeatedly; not asked"


@dataclass(frozen=True, slots=True)
class Decision:
    """One decision: the arm, or the ranked slate, to serve.

    ``fallback`` is True when the service gave no usable answer in time and this is the
    caller's fallback. Then ``decision_id`` and ``propensity`` are None: no policy drew it, so
    there is no decision for a reward to refer to, and any number logged as its propensity
    (1.0, 1/K) would be false and bias off-policy evaluation. ``reason`` says what failed.
    """

    experiment: str
    #: The arm to serve; for a slate, its top arm.
    arm: str
    #: The ranked slate; ``(arm,)`` for a single-arm decision.
    arms: tuple[str, ...]
    decision_id: str | None
    #: Probability the policy gave this arm (or this ranked slate) when it drew it.
    propensity: float | None
    #: For a slate: each position's probability given the arms above it.
    position_propensities: tuple[float, ...] | None = None
    fallback: bool = False
    reason: str | None = None
    #: The experiment's configuration version the decision was drawn under.
    version: int | None = None
    #: A sticky unit's (first) assignment.
    sticky: bool = False
    #: The service answered from posteriors it could not refresh lately (Redis unreachable).
    stale: bool = False


def validate_experiment(experiment: str) -> str:
    if not isinstance(experiment, str) or not ID_PATTERN.fullmatch(experiment):
        raise InvalidRequest(f"experiment: {experiment!r} is not a valid experiment id")
    return experiment


def allocate_body(n: int, k: int | None, unit: str | None, sticky: bool,
                  context: Mapping[str, Any] | None, provisional: bool) -> bytes:
    """The allocate request body. The service checks the values (a 422 raises InvalidRequest)."""
    body: dict[str, Any] = {}
    for name, value, default in (("n", n, 1), ("k", k, None), ("unit", unit, None),
                                 ("sticky", sticky, False), ("provisional", provisional, False)):
        if value != default:
            body[name] = value
    if context is not None:
        body["context"] = dict(context)
    return dumps(body)


def fallback_slate(fallback: str | Sequence[str] | None, k: int | None) -> tuple[str, ...] | None:
    """The caller's fallback as a slate: one arm for ``k=None``, else at least ``k`` arms.

    Checked on every call, not only when the service fails: a wrong fallback is a bug that
    should show in the first test, not in the first outage.
    """
    if fallback is None:
        return None
    if k is None:
        if not isinstance(fallback, str):
            raise TypeError(f"fallback: expected one arm id for a single-arm decision, "
                            f"got {fallback!r}")
        slate: tuple[str, ...] = (fallback,)
    else:
        if isinstance(fallback, str) or len(fallback) < k:
            raise TypeError(f"fallback: expected a slate of at least k={k} arm ids, "
                            f"got {fallback!r}")
        slate = tuple(fallback[:k])
    for arm in slate:
        if not isinstance(arm, str) or not ID_PATTERN.fullmatch(arm):
            raise ValueError(f"fallback: {arm!r} is not a valid arm id")
    if len(set(slate)) != len(slate):
        raise ValueError(f"fallback: the slate {slate!r} repeats an arm")
    return slate


def parse_decisions(experiment: str, body: bytes, stale: bool) -> list[Decision]:
    """The decisions in an allocate answer; ValueError/KeyError/TypeError if it has none."""
    data = json_object(body)
    version = data.get("version")
    decisions = []
    for item in data["decisions"]:
        arms = tuple(item["arms"]) if "arms" in item else (item["arm"],)
        positions = item.get("position_propensities")
        decisions.append(Decision(
            experiment=experiment, arm=arms[0], arms=arms, decision_id=item["decision_id"],
            propensity=float(item["propensity"]),
            position_propensities=None if positions is None else tuple(positions),
            version=version, sticky=bool(item.get("sticky", False)), stale=stale,
        ))
    if not decisions:
        raise ValueError("the answer holds no decisions")
    return decisions


class CircuitBreaker:
    """After ``threshold`` consecutive failures, skip the service for ``cooldown_s``.

    While open, decisions get their fallback at no cost instead of each waiting out a timeout
    on a dead service. After the cooldown one call is let through as a probe (the next probe
    one cooldown later, so a probe that never reports cannot wedge it); a success closes it.
    ``threshold=None`` disables it. Thread-safe.
    """

    def __init__(self, threshold: int | None, cooldown_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._threshold, self._cooldown_s, self._clock = threshold, cooldown_s, clock
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until: float | None = None

    @property
    def is_open(self) -> bool:
        return self._open_until is not None

    def allow(self) -> bool:
        if self._open_until is None:  # the common case, without the lock
            return True
        with self._lock:
            now = self._clock()
            if self._open_until is None or now >= self._open_until:
                if self._open_until is not None:
                    self._open_until = now + self._cooldown_s  # this call is the probe
                return True
            return False

    def success(self) -> None:
        if self._failures or self._open_until is not None:
            with self._lock:
                self._failures, self._open_until = 0, None

    def failure(self) -> None:
        if self._threshold is None:
            return
        with self._lock:
            self._failures += 1
            if self._failures >= self._threshold:
                self._open_until = self._clock() + self._cooldown_s


def why_unanswered(error: BaseException, timeout: float) -> str:
    """Why a call got no answer, in words: the timeout, or the operating system's reason for a
    refused or broken connection. (The transports' own reprs name internal objects such as
    aiohttp's ``ConnectionKey(...)``.)"""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno and not isinstance(cause, TimeoutError):
            return f"cannot connect: {os.strerror(cause.errno).lower()}"
        # aiohttp keeps the OSError in os_error, urllib3 in reason; both chain it too.
        cause = (getattr(cause, "os_error", None) or getattr(cause, "reason", None)
                 or cause.__cause__ or cause.__context__)
        if not isinstance(cause, BaseException):
            cause = None
    if _timed_out(error):
        return f"timed out after {timeout:g} s"
    text = _OBJECT_REPRS.sub("", str(error)).strip(" :")
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


#: ``<... object at 0x...>`` and ``Name(field=..., ...)`` reprs inside exception messages.
_OBJECT_REPRS = re.compile(r"<[^<>]* at 0x[0-9a-f]+>|\b[A-Z]\w*\((?:\w+=[^()]*,? ?)+\)")


def _timed_out(error: BaseException) -> bool:
    # TimeoutError covers asyncio and sockets; urllib3's read/connect timeouts are its own
    # TimeoutError class, which is not the builtin one.
    return isinstance(error, TimeoutError) or any(
        kind.__name__ in ("TimeoutError", "ReadTimeoutError", "ConnectTimeoutError")
        for kind in type(error).__mro__)


@dataclass(frozen=True, slots=True)
class DecisionCall:
    """One allocate call, prepared: what to send, and what to make of the answer."""

    experiment: str
    n: int
    path: str
    body: bytes
    timeout: float
    fallback: tuple[str, ...] | None
    breaker: CircuitBreaker
    counters: Counters

    def answered(self, status: int, body: bytes, stale: bool) -> list[Decision]:
        """Decisions from the service's answer; a 4xx raises (see ``RequestError``)."""
        if status == 200:
            try:
                decisions = parse_decisions(self.experiment, body, stale)
            except (ValueError, KeyError, TypeError, IndexError) as error:
                return self.failed(f"unreadable answer: {error!r}", error)
            self.breaker.success()
            self.counters.add("decisions", len(decisions))
            return decisions
        if is_retryable(status):
            return self.failed(f"HTTP {status}")
        self.breaker.success()  # the service is up; the request is what is wrong
        raise refusal(status, body, f"POST {self.path}")

    def unanswered(self, error: BaseException) -> list[Decision]:
        """The call got no answer: fall back, with a reason a person can read."""
        return self.failed(f"no answer: {why_unanswered(error, self.timeout)}", error)

    def failed(self, reason: str, cause: BaseException | None = None) -> list[Decision]:
        """No usable answer: count it against the service, and fall back."""
        self.breaker.failure()
        return self.fall_back(reason, cause)

    def fall_back(self, reason: str, cause: BaseException | None = None) -> list[Decision]:
        """The caller's fallback ``n`` times, or Unavailable when there is none."""
        if self.fallback is None:
            raise Unavailable(f"POST {self.path}: {reason} (and no fallback given)") from cause
        self.counters.add("fallbacks", self.n)
        decision = Decision(experiment=self.experiment, arm=self.fallback[0],
                            arms=self.fallback, decision_id=None, propensity=None,
                            fallback=True, reason=reason)
        return [decision] * self.n
