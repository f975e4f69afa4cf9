"""What the sync and async clients share about the protocol, and the client's counters.

Pure functions and a lock-guarded counter: no I/O, so both transports use them unchanged.
Nothing here imports the service's modules: the client must stay light (no numpy or numba),
so the few field rules it checks before sending are the service's, restated here (a test of
the service's repository proves them equal).
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, fields
from typing import Any

from bandit_client.errors import RequestError, request_error


def dumps(data: Any) -> bytes:
    """Compact UTF-8 JSON (the standard library's: the client depends on nothing else)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()

#: Experiment and arm ids.
ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
EVENT_ID_PATTERN = re.compile(r"[\x21-\x3f\x41-\x7e][\x21-\x7e]{0,127}")
UNIT_PATTERN = re.compile(r"[^\x00-\x1f\x7f]*")
MAX_UNIT_LENGTH = 256
#: Most events, or decisions, the service handles in one call; most arms in a slate; most
#: arms placed in one answer (n * k).
MAX_BATCH = 10_000
MAX_SLATE = 1000
MAX_PLACEMENTS = 10_000

#: Statuses that say "not now" rather than "not this": the same request may succeed later.
RETRYABLE_STATUSES = frozenset({408, 425, 429})

#: The most a Retry-After header may make the sender wait, whatever it says.
MAX_RETRY_AFTER_S = 300.0


def is_retryable(status: int) -> bool:
    """Whether an answer with this status means the service could not answer (yet)."""
    return status >= 500 or status in RETRYABLE_STATUSES


def refusal(status: int, body: bytes, what: str) -> RequestError:
    """The exception for a 4xx answer, with the service's own message when it sent one."""
    code, message = "http_error", body[:200].decode(errors="replace")
    try:
        error = json.loads(body)["error"]
        code, message = str(error["code"]), str(error["message"])
    except (json.JSONDecodeError, KeyError, TypeError):
        pass
    return request_error(status, code, f"{what}: {status} {code}: {message}")


def retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def event_problem(event: dict[str, Any]) -> str | None:
    """What makes a reward event one the service would refuse by its form alone, or None.

    Checked when ``reward()`` is called, so such a mistake raises at once in the caller's
    code rather than being reported later; checks that need the experiment's configuration
    (does the arm exist, is the reward in range) are the service's.
    """
    if not isinstance(event["id"], str) or not EVENT_ID_PATTERN.fullmatch(event["id"]):
        return (f"event_id: {event['id']!r} is not 1 to 128 printable ASCII characters "
                "without spaces, not starting with '@'")
    for field in ("experiment", "arm"):
        if not isinstance(event[field], str) or not ID_PATTERN.fullmatch(event[field]):
            return f"{field}: {event[field]!r} is not a valid {field} id"
    if not isinstance(event["reward"], float) or not math.isfinite(event["reward"]):
        return f"reward: expected a finite number, got {event['reward']!r}"
    if not isinstance(event["ts"], int | float) or not 0 <= event["ts"] < math.inf:
        return f"ts: expected finite, non-negative epoch seconds, got {event['ts']!r}"
    unit = event.get("unit")
    if unit is not None and not (isinstance(unit, str) and 0 < len(unit) <= MAX_UNIT_LENGTH
                                 and UNIT_PATTERN.fullmatch(unit)):
        return (f"unit: expected a string of 1 to {MAX_UNIT_LENGTH} characters, with no control "
                "characters")
    if not isinstance(event.get("decision_id", ""), str):
        return "decision_id: expected a string"
    if not isinstance(event.get("context", {}), dict):
        return "context: expected an object of feature values"
    metric = event.get("metric", "primary")
    if not isinstance(metric, str) or not ID_PATTERN.fullmatch(metric):
        return f"metric: {metric!r} is not a valid metric name"
    return None


def json_object(body: bytes) -> dict[str, Any]:
    """A JSON object from a response body; ValueError if it is not one."""
    data = json.loads(body)  # JSONDecodeError is a ValueError
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    return data


@dataclass(frozen=True, slots=True)
class ClientStats:
    """A snapshot of a client's counters (``client.stats``).

    Events: every event ``reward()`` took ends as exactly one of accepted, duplicates,
    rejected or undelivered, or is still ``buffered``.
    """

    #: Decisions the service drew (not fallbacks).
    decisions: int = 0
    #: Decisions answered with the caller's fallback (service unavailable or circuit open).
    fallbacks: int = 0
    #: Reward events taken by ``reward()``.
    enqueued: int = 0
    #: Events the service answered for (accepted, duplicate or rejected one by one).
    sent: int = 0
    #: Events applied by the service.
    accepted: int = 0
    #: Events the service had already applied (a retry of an answer that was lost).
    duplicates: int = 0
    #: Events the service refused (per event, or a whole batch with a 4xx); never retried.
    rejected: int = 0
    #: Batches sent again after a timeout, connection error, 5xx or 429.
    retries: int = 0
    #: Events still undelivered when ``close()`` ran out of time (reported, never silent).
    undelivered: int = 0
    #: ``reward()`` calls refused with BufferFull.
    buffer_full: int = 0
    #: Events waiting in the buffer or in flight now.
    buffered: int = 0


_COUNTER_NAMES = tuple(f.name for f in fields(ClientStats) if f.name != "buffered")


class Counters:
    """Thread-safe counters behind ``ClientStats``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def snapshot(self, buffered: int) -> ClientStats:
        with self._lock:
            return ClientStats(**{name: self._counts[name] for name in _COUNTER_NAMES},
                               buffered=buffered)
