"""A reward stream's entries and keys: the entry format, the consumer's configuration, the
sibling keys in the stream's hash slot, and how far behind a consumer group is (the consumer
itself is ``bandit.ops.stream``)."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import orjson
from redis import exceptions as redis_errors

from bandit.errors import StoreUnavailable
from bandit.inputs import MAX_EVENTS
from bandit.store.connection import Client

T = TypeVar("T")

#: Lag in entries is counted with an XRANGE capped at this many entries (Redis 6.2 keeps no
#: count; Redis >= 7 reports it exactly in XINFO GROUPS, which is used when present).
LAG_COUNT_CAP = 10_000


def sibling_key(stream: str, suffix: str) -> str:
    """A key in the stream's hash slot: ``{s}:suffix`` (``s:suffix`` when ``s`` has a tag)."""
    start = stream.find("{")
    end = stream.find("}", start + 1) if start >= 0 else -1
    if end > start + 1:
        return f"{stream}:{suffix}"
    return f"{{{stream}}}:{suffix}"


@dataclass(frozen=True)
class StreamConfig:
    stream: str
    group: str
    consumer: str
    dead_letter: str
    batch: int = 500
    block_ms: int = 1000
    claim_idle_ms: int = 30_000
    max_deliveries: int = 5

    @property
    def failures(self) -> str:
        return sibling_key(self.stream, "failures")


class Entry(NamedTuple):
    entry_id: str
    fields: dict[str, str]
    deliveries: int


class MalformedEntry(ValueError):
    """An entry that holds no event list we can read (dead-lettered whole)."""


def parse_entry(fields: dict[str, str]) -> tuple[list[object], bool]:
    """The raw events of an entry, and whether they came as an ``events`` list."""
    if "event" in fields:
        try:
            return [orjson.loads(fields["event"])], False
        except orjson.JSONDecodeError as error:
            raise MalformedEntry(f"event: not valid JSON: {error}") from None
    if "events" in fields:
        try:
            events = orjson.loads(fields["events"])
        except orjson.JSONDecodeError as error:
            raise MalformedEntry(f"events: not valid JSON: {error}") from None
        if not isinstance(events, list) or not 0 < len(events) <= MAX_EVENTS:
            raise MalformedEntry(f"events: expected a list of 1 to {MAX_EVENTS} reward events")
        return events, True
    raise MalformedEntry(f"no 'event' or 'events' field (fields: {sorted(fields)})")


async def server_millis(client: Client) -> int:
    """Redis's clock, which stamps stream entry ids (a worker's clock may differ)."""
    seconds, micros = await redis_call(client.time())
    return int(seconds) * 1000 + int(micros) // 1000


def stream_millis(entry_id: str) -> int:
    return int(entry_id.partition("-")[0])


def entry_order(entry_id: str) -> tuple[int, int]:
    millis, _, sequence = entry_id.partition("-")
    return int(millis), int(sequence or 0)


async def redis_call(awaitable: Awaitable[T]) -> T:
    """Await a redis-py call; connection trouble becomes StoreUnavailable (as in the store)."""
    try:
        return await awaitable
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as error:
        raise StoreUnavailable(f"Redis is unreachable: {error}") from error
    except redis_errors.BusyLoadingError as error:
        raise StoreUnavailable("Redis is loading its data set") from error


@dataclass(frozen=True)
class Lag:
    #: Entries not yet delivered to any consumer of the group (at most LAG_COUNT_CAP on
    #: Redis 6.2 when the count had to be made by XRANGE: ``capped`` is then True).
    entries: int
    capped: bool
    #: Age of the oldest undelivered entry (from its id's milliseconds and Redis TIME).
    seconds: float
    #: Delivered but not acknowledged (in flight, deferred, or held by a dead consumer).
    pending: int
    oldest_pending_seconds: float


async def measure_lag(client: Client, stream: str, group: str) -> Lag:
    async with client.pipeline(transaction=False) as pipe:
        pipe.xinfo_groups(stream)
        pipe.xinfo_stream(stream)
        pipe.xpending(stream, group)
        groups, info, pending = await redis_call(pipe.execute())
    now_ms = await server_millis(client)
    [state] = [g for g in groups if g["name"] == group]
    last = state["last-delivered-id"]
    exact = state.get("lag")  # Redis >= 7 only
    first = info["first-entry"]
    entries, capped, oldest = 0, False, None
    if info["length"] and entry_order(last) < entry_order(first[0]):
        entries, oldest = int(info["length"]), first[0]  # nothing delivered yet: all of it
    elif info["length"]:
        rows: Any = await redis_call(client.xrange(
            stream, f"({last}", "+", count=1 if exact is not None else LAG_COUNT_CAP))
        oldest = rows[0][0] if rows else None
        entries = int(exact) if exact is not None else len(rows)
        capped = exact is None and len(rows) == LAG_COUNT_CAP
    oldest_pending = pending["min"] if pending["pending"] else None
    return Lag(
        entries=entries, capped=capped,
        seconds=0.0 if oldest is None else max(0, now_ms - stream_millis(oldest)) / 1000,
        pending=int(pending["pending"]),
        oldest_pending_seconds=(0.0 if oldest_pending is None
                                else max(0, now_ms - stream_millis(oldest_pending)) / 1000),
    )




def experiment_of(event: object) -> str | None:
    """The event's experiment id when it is a string (anything else the validation rejects;
    a list or an object could not even be looked up in a set)."""
    if isinstance(event, dict):
        experiment = event.get("experiment")
        if isinstance(experiment, str):
            return experiment
    return None


def payload(entry: Entry) -> str:
    for name in ("event", "events"):
        if name in entry.fields:
            return entry.fields[name]
    return orjson.dumps(entry.fields).decode()
