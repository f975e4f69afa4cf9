"""bandit.inputs as pure functions: allocate requests and reward events, checked one by one."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bandit.errors import InvalidValue
from bandit.inputs import (
    MAX_EVENTS,
    MAX_PLACEMENTS,
    AllocateRequest,
    parse_allocate,
    parse_event,
    parse_event_batch,
)

GOOD = {"id": "e1", "experiment": "exp", "arm": "a", "reward": 1}


def test_an_empty_allocate_body_is_one_decision() -> None:
    assert parse_allocate(None) == parse_allocate({}) == AllocateRequest()
    request = parse_allocate({"n": 3, "k": 2, "unit": "u", "sticky": True})
    assert (request.n, request.k, request.unit, request.sticky) == (3, 2, "u", True)


@pytest.mark.parametrize(("body", "message"), [
    ({"n": 0}, "n: must be between"), ({"n": 10_001}, "n: must be between"),
    ({"k": 1001}, "k: must be between"), ({"sticky": True}, "sticky: needs a unit"),
    ({"sticky": 1, "unit": "u"}, "sticky: expected true or false"),
    ({"unit": ""}, "unit: expected a string"), ({"unit": "a\x1fb"}, "control characters"),
    ({"context": []}, "context: expected an object"), ({"colour": 1}, "unknown field"),
    ({"n": 11, "k": 1000}, f"over the cap of {MAX_PLACEMENTS:,}"), ([1], "expected an object"),
])
def test_bad_allocate_bodies_name_what_is_wrong(body: Any, message: str) -> None:
    with pytest.raises(InvalidValue, match=message):
        parse_allocate(body)


def test_a_good_event_parses() -> None:
    event = parse_event(4, {**GOOD, "decision_id": None, "ts": 12}, set())
    assert (event.position, event.id, event.reward, event.ts) == (4, "e1", 1.0, 12.0)


@pytest.mark.parametrize(("change", "message"), [
    ({"id": "@d:1"}, "may not start with '@'"), ({"id": "has space"}, "id: expected"),
    ({"experiment": ["exp"]}, "got a list"), ({"arm": {"a": 1}}, "got an object"),
    ({"experiment": "Bad"}, "not a valid experiment id"), ({"reward": True}, "expected a number"),
    ({"reward": 1e16}, "within"), ({"decision_id": "d0"}, "not a decision id"),
    ({"unit": "u\n"}, "control characters"), ({"ts": -1}, "ts: expected"),
    ({"colour": "red"}, "unknown field"),
])
def test_bad_events_name_their_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidValue, match=message):
        parse_event(0, {**GOOD, **change}, set())


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=5)


@given(st.dictionaries(st.sampled_from(["id", "experiment", "arm", "reward", "decision_id",
                                        "unit", "ts", "other"]), _JSON))
def test_an_event_of_any_json_is_parsed_or_refused_never_crashes(fields: dict[str, Any]) -> None:
    """Anything but a clean refusal (InvalidValue) would fail the event's whole batch."""
    raw = {**GOOD, **fields}
    try:
        event = parse_event(0, raw, set())
    except InvalidValue as refusal:
        assert refusal.message
        return
    assert (event.id, event.experiment, event.arm) == (raw["id"], raw["experiment"], raw["arm"])


def test_a_batch_is_a_list_of_at_most_the_limit() -> None:
    assert parse_event_batch({"events": [GOOD]}) == [GOOD]
    for body, message in [({"events": {}}, "expected a list"), ({}, "expected a list"),
                          ({"events": [GOOD] * (MAX_EVENTS + 1)}, "at most 10000 events")]:
        with pytest.raises(InvalidValue, match=message):
            parse_event_batch(body)
