"""Parsing and checking of allocate and reward-event request bodies (pure functions).

Events are checked one by one so that a batch can apply its good events and report the bad
ones by index; checks that need the experiment's configuration (does the arm exist, is the
reward in range for the reward type) happen in the service, which has it cached.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from bandit.errors import InvalidValue, json_kind
from bandit.model import ID_PATTERN, MAX_ABS_REWARD, PRIMARY, check_id, integer, mapping
from bandit.tokens import DECISION_ID_PATTERN

MAX_DECISIONS = 10_000
MAX_EVENTS = 10_000
#: Most distinct experiments the events of one batch may name: each one not in the cache is
#: read from Redis and computed (a batch naming 10,000 once took 32 s).
MAX_EVENT_EXPERIMENTS = 1000
#: Experiments per page of the list, by default and at most.
DEFAULT_LIST_PAGE, MAX_LIST_PAGE = 100, 1000
MAX_SLATE = 1000
#: Most arms placed in one allocate answer: n single decisions, or n slates of k arms (n * k).
#: It bounds one request's work and answer: about 20 ms of the event loop and 1 MB of JSON at
#: most, where n=10,000 slates of 1,000 long arm ids took 10 s and 885 MB.
MAX_PLACEMENTS = 10_000
#: Printable ASCII without spaces; never starting with '@', which marks a decision's reward in
#: the dedup sets (``@<decision>:<arm>``), so no event id can pose as one.
EVENT_ID_PATTERN = re.compile(r"[\x21-\x3f\x41-\x7e][\x21-\x7e]{0,127}")
MAX_UNIT_LENGTH = 256
#: No control characters in a unit, so a unit's stored field (``unit``, or ``unit\x1fk=K`` for
#: a slate) cannot be spelled by another unit.
UNIT_PATTERN = re.compile(r"[^\x00-\x1f\x7f]*")


@dataclass(frozen=True, slots=True)
class AllocateRequest:
    n: int = 1
    k: int | None = None
    unit: str | None = None
    sticky: bool = False
    provisional: bool = False
    #: The feature values of a contextual decision (checked against the model's spec later).
    context: dict[str, Any] | None = None


_ALLOCATE_FIELDS = {"unit", "n", "k", "context", "sticky", "provisional"}


_DEFAULT_ALLOCATE = AllocateRequest()


def parse_allocate(body: object) -> AllocateRequest:
    if body is None or body == {}:
        return _DEFAULT_ALLOCATE
    data = mapping(body, "body", _ALLOCATE_FIELDS)
    n = integer(data.get("n", 1), "n", low=1, high=MAX_DECISIONS)
    k = data.get("k")
    if k is not None:
        k = integer(k, "k", low=1, high=MAX_SLATE)
        if n * k > MAX_PLACEMENTS:
            raise InvalidValue(f"n * k: {n} slates of {k} arms place {n * k:,} arms, over the "
                               f"cap of {MAX_PLACEMENTS:,} per request; ask for fewer slates "
                               "per request")
    unit = _unit(data.get("unit"))
    sticky = _flag(data, "sticky")
    if sticky and unit is None:
        raise InvalidValue("sticky: needs a unit")
    context = data.get("context")
    if context is not None and not isinstance(context, dict):
        raise InvalidValue("context: expected an object")
    return AllocateRequest(n=n, k=k, unit=unit, sticky=sticky,
                           provisional=_flag(data, "provisional"), context=context)


def _unit(unit: object) -> str | None:
    if unit is None:
        return None
    if type(unit) is not str or not 0 < len(unit) <= MAX_UNIT_LENGTH:
        raise InvalidValue(f"unit: expected a string of 1 to {MAX_UNIT_LENGTH} characters")
    if not UNIT_PATTERN.fullmatch(unit):
        raise InvalidValue("unit: control characters (U+0000 to U+001F, U+007F) are not "
                           "allowed")
    return unit


def _flag(data: dict[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise InvalidValue(f"{name}: expected true or false")
    return value


class RewardEvent(NamedTuple):
    position: int
    id: str
    experiment: str
    arm: str
    reward: float
    decision_id: str | None
    ts: float | None
    #: A contextual decision's context, sent again (None: not given).
    context: dict[str, Any] | None = None
    #: The guardrail metric this reward is for (None: the primary metric).
    metric: str | None = None


_EVENT_FIELDS = frozenset({"id", "experiment", "arm", "reward", "decision_id", "unit", "ts",
                           "context", "metric"})


def parse_event_batch(body: object) -> list[object]:
    """The list of raw events in an ``{events: [...]}`` body (size-checked)."""
    data = mapping(body, "body", {"events"})
    events = data.get("events")
    if not isinstance(events, list):
        raise InvalidValue("events: expected a list of reward events")
    if len(events) > MAX_EVENTS:
        # 422, not 413: a count over its limit is an invalid value, as the OpenAPI document's
        # maxItems says; 413 is for a body over the byte limit.
        raise InvalidValue(f"events: at most {MAX_EVENTS} events per batch, got {len(events)}")
    return events


def parse_event(index: int, raw: object, valid_ids: set[str]) -> RewardEvent:
    """One reward event; raises InvalidValue with a message naming the bad field.

    ``valid_ids`` remembers experiment and arm ids already checked in this batch: a batch
    names few distinct ones, and this is the per-event hot path.
    """
    if type(raw) is not dict:
        raise InvalidValue("expected an object")
    if not raw.keys() <= _EVENT_FIELDS:
        raise InvalidValue(f"unknown field(s) {sorted(raw.keys() - _EVENT_FIELDS)}")
    event_id = raw.get("id")
    if type(event_id) is not str or not EVENT_ID_PATTERN.fullmatch(event_id):
        if type(event_id) is str and event_id.startswith("@"):
            raise InvalidValue("id: may not start with '@' (reserved for the service's own "
                               "records)")
        raise InvalidValue("id: expected 1 to 128 printable ASCII characters without spaces")
    # Type first: a list or an object is not hashable, so it cannot be looked up in valid_ids.
    experiment = raw.get("experiment")
    if type(experiment) is not str:
        raise InvalidValue(f"experiment: expected an experiment id, got {json_kind(experiment)}")
    if experiment not in valid_ids:
        if not ID_PATTERN.fullmatch(experiment):
            raise InvalidValue(f"experiment: {experiment!r} is not a valid experiment id")
        valid_ids.add(experiment)
    arm = raw.get("arm")
    if type(arm) is not str:
        raise InvalidValue(f"arm: expected an arm id, got {json_kind(arm)}")
    if arm not in valid_ids:
        if not ID_PATTERN.fullmatch(arm):
            raise InvalidValue(f"arm: {arm!r} is not a valid arm id")
        valid_ids.add(arm)
    reward = raw.get("reward")
    if type(reward) is not float:
        if type(reward) is not int:
            raise InvalidValue("reward: expected a number")
        reward = float(reward)
    if not -MAX_ABS_REWARD <= reward <= MAX_ABS_REWARD:
        raise InvalidValue(f"reward: must be a finite number within ±{MAX_ABS_REWARD:g}")
    decision_id = raw.get("decision_id")
    if decision_id is not None and (
        type(decision_id) is not str or not DECISION_ID_PATTERN.fullmatch(decision_id)
    ):
        raise InvalidValue(f"decision_id: {decision_id!r} is not a decision id this service issued")
    _unit(raw.get("unit"))
    ts = raw.get("ts")
    if ts is not None:
        if type(ts) not in (int, float) or not 0 <= ts < math.inf:
            raise InvalidValue("ts: expected a finite, non-negative number of epoch seconds")
        ts = float(ts)
    context = raw.get("context")
    if context is not None and type(context) is not dict:
        raise InvalidValue("context: expected an object of feature values, got "
                           f"{json_kind(context)}")
    metric = raw.get("metric")
    if metric is not None:
        if type(metric) is not str:
            raise InvalidValue(f"metric: expected a metric name, got {json_kind(metric)}")
        if metric == PRIMARY:
            metric = None
        elif metric not in valid_ids:
            if not ID_PATTERN.fullmatch(metric):
                raise InvalidValue(f"metric: {metric!r} is not a valid metric name")
            valid_ids.add(metric)
    return RewardEvent(index, event_id, experiment, arm, reward, decision_id, ts, context,
                       metric)


#: Most units in one batch assign request, and attributes per unit.
MAX_ASSIGN_UNITS = 1_000
MAX_ATTRIBUTES = 100
#: Longest string attribute value (a user agent fits).
MAX_ATTRIBUTE_LENGTH = 1_000


class AssignUnit(NamedTuple):  # (a tuple: a frozen dataclass takes 5 times as long to build)
    """One unit to assign: its id, the attributes targeting rules read, and the context a
    contextual experiment decides from."""

    unit: str
    attributes: dict[str, Any]
    context: dict[str, Any] | None = None


class AssignRequest(NamedTuple):
    units: tuple[AssignUnit, ...]
    #: Whether the request was the batch form (``units``), which answers ``results``.
    batch: bool = False
    sticky: bool = False
    #: Only these layers (None: every layer).
    layers: tuple[str, ...] | None = None


_ASSIGN_UNIT_FIELDS = {"unit", "attributes", "context"}
#: The JSON types of an attribute besides strings.
_ATTRIBUTE_KINDS = frozenset({int, float, bool, type(None)})
_ASSIGN_FIELDS = {*_ASSIGN_UNIT_FIELDS, "units", "sticky", "layers"}


def parse_assign(body: object) -> AssignRequest:
    """``{unit, attributes?, context?, sticky?, layers?}``, or the batch form ``{units: [{unit,
    attributes?, context?}, ...], sticky?, layers?}``."""
    data = mapping(body, "body", _ASSIGN_FIELDS)
    if "units" in data:
        own = sorted(set(data) & _ASSIGN_UNIT_FIELDS)
        if own:
            raise InvalidValue(f"units: the batch form carries {', '.join(own)} per unit, "
                               "inside units")
        raw = data["units"]
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_ASSIGN_UNITS:
            raise InvalidValue(f"units: expected a list of 1 to {MAX_ASSIGN_UNITS} units")
        units = tuple(_assign_unit(mapping(item, f"units[{i}]", _ASSIGN_UNIT_FIELDS),
                                   f"units[{i}].") for i, item in enumerate(raw))
    else:
        units = (_assign_unit(data, ""),)
    layers = data.get("layers")
    if layers is not None:
        if not isinstance(layers, list) or not 1 <= len(layers) <= 1000:
            raise InvalidValue("layers: expected a list of 1 to 1000 layer ids")
        layers = tuple(check_id(layer, f"layers[{i}]") for i, layer in enumerate(layers))
    return AssignRequest(units, "units" in data, _flag(data, "sticky"), layers)


def _assign_unit(data: dict[str, Any], where: str) -> AssignUnit:
    if "unit" not in data:
        raise InvalidValue(f"{where}unit: required")
    try:
        unit = _unit(data["unit"])
        if unit is None:
            raise InvalidValue(f"unit: expected a string of 1 to {MAX_UNIT_LENGTH} characters")
    except InvalidValue as error:
        raise InvalidValue(f"{where}{error.message}") from None
    attributes = data.get("attributes")
    if attributes is None:
        attributes = {}
    if not isinstance(attributes, dict) or len(attributes) > MAX_ATTRIBUTES:
        raise InvalidValue(f"{where}attributes: expected an object of at most "
                           f"{MAX_ATTRIBUTES} attributes")
    for name, value in attributes.items():
        kind = type(value)  # what JSON parses to: no subclasses to allow for
        if kind is str:
            if len(value) > MAX_ATTRIBUTE_LENGTH:
                raise InvalidValue(f"{where}attributes.{name}: at most {MAX_ATTRIBUTE_LENGTH} "
                                   "characters")
        elif kind not in _ATTRIBUTE_KINDS:
            raise InvalidValue(f"{where}attributes.{name}: expected a string, number, boolean "
                               f"or null, got {json_kind(value)}")
    context = data.get("context")
    if context is not None and not isinstance(context, dict):
        raise InvalidValue(f"{where}context: expected an object")
    return AssignUnit(unit, attributes, context)
