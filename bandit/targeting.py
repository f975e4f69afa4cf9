"""Targeting rules: who is eligible for an experiment, decided from the request's attributes.

A rule is an OR of ANDs of conditions on attributes::

    {"any": [{"all": [{"attribute": "country", "op": "in", "values": ["DE", "FR"]},
                      {"attribute": "app_version", "op": "semver_gte", "value": "2.3.0"}]},
             {"all": [{"attribute": "beta_tester", "op": "eq", "value": true}]}]}

Operators: ``eq`` and ``neq`` (a string, number or boolean), ``in`` and ``not_in``
(``values``: a list of them), ``lt`` ``lte`` ``gt`` ``gte`` (numbers), ``regex`` (an RE2
pattern, searched anywhere in the string: RE2 matches in time linear in the input, and refuses
backreferences and lookarounds), ``semver_eq`` ``semver_lt`` ``semver_lte`` ``semver_gt``
``semver_gte`` (semantic versions, ``MAJOR[.MINOR[.PATCH]][-PRERELEASE][+BUILD]``, compared
by semver 2.0 precedence) and ``is_null`` (``value`` true: the attribute is missing or null).

A missing or null attribute fails every condition but ``is_null``. An attribute of the wrong
type for its condition (a string compared with ``gt``, a number matched by ``regex``, a
version that does not parse) is the caller's error, and says which attribute and rule clause.

Rules are parsed once (``parse_rule``, at create or PATCH: errors name the clause, e.g.
``targeting.any[1].all[0].op``) and evaluated in process (``Rule.matches``).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import re2

from bandit.errors import InvalidValue, json_kind
from bandit.features import CONTROL_CHARACTERS

__all__ = ["OPERATORS", "Condition", "Rule", "parse_rule", "semver_key"]

#: Most alternatives, conditions per alternative, values of ``in``, pattern characters.
MAX_ANY, MAX_ALL, MAX_VALUES, MAX_PATTERN = 20, 20, 1000, 1000
#: Largest RE2 program of one regex, and of all a rule's regexes: matching time is linear in
#: the input, times a factor that grows with the program (counted repetitions expand into
#: copies). A 300-instruction pattern searches a 1,000-character attribute in about 0.04 ms;
#: one of 1,800 (``(?:[a-z]{1,30}){1,30}z``) runs out of DFA memory and takes 30 ms.
MAX_PROGRAM, MAX_RULE_PROGRAM = 300, 1000
#: Attribute names: what a JSON object key in a request may be, within reason.
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")
SEMVER = re.compile(r"^(0|[1-9]\d{0,8})(?:\.(0|[1-9]\d{0,8}))?(?:\.(0|[1-9]\d{0,8}))?"
                     r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z.-]+)?$")

Scalar = str | int | float | bool
#: RE2 logs to stderr whenever a search outgrows its DFA memory and falls back to the slower
#: matcher (each such search, on an operator's rule): a log line per assigned unit.
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_EQUALITY = ("eq", "neq")
_MEMBERSHIP = ("in", "not_in")
_NUMERIC: dict[str, Callable[[float, float], bool]] = {
    "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b, "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b}
_SEMVER_OPS: dict[str, Callable[[int], bool]] = {
    "semver_eq": lambda c: c == 0, "semver_lt": lambda c: c < 0,
    "semver_lte": lambda c: c <= 0, "semver_gt": lambda c: c > 0,
    "semver_gte": lambda c: c >= 0}
OPERATORS = (*_EQUALITY, *_MEMBERSHIP, *_NUMERIC, "regex", *_SEMVER_OPS, "is_null")


@functools.lru_cache(maxsize=4096)  # an audience has few app versions: parse each once
def semver_key(text: str) -> tuple[tuple[int, int, int], tuple[tuple[int, int | str], ...]]:
    """A sort key of a semantic version by semver 2.0 precedence (build metadata ignored;
    a version without a pre-release ranks above the same one with)."""
    match = SEMVER.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a semantic version (MAJOR[.MINOR[.PATCH]]"
                         "[-PRERELEASE][+BUILD])")
    core = tuple(int(part or 0) for part in match.group(1, 2, 3))
    prerelease = match.group(4)
    if prerelease is None:
        return (core[0], core[1], core[2]), ((2, 0),)  # above any pre-release
    identifiers: list[tuple[int, int | str]] = [
        (0, int(part)) if part.isdigit() else (1, part) for part in prerelease.split(".")]
    return (core[0], core[1], core[2]), (*identifiers,)


def _compare_versions(left: str, right: str) -> int:
    a, b = semver_key(left), semver_key(right)
    if a[0] != b[0]:
        return -1 if a[0] < b[0] else 1
    if a[1] == b[1]:
        return 0
    return -1 if a[1] < b[1] else 1


@dataclass(frozen=True)
class Condition:
    attribute: str
    op: str
    value: Any
    #: Where the condition is in its rule, for messages (``targeting.any[0].all[1]``).
    where: str
    #: Whether a present value of the right type holds (``Rule.matches`` checks the type
    #: first, with ``check``).
    test: Callable[[Any], bool]
    #: A regex's RE2 program size (its matching cost per character); 0 for the others.
    cost: int = 0
    #: Raises InvalidValue for a present attribute of the wrong type (None: any type).
    check: Callable[[Any], object] | None = None

    def matches(self, attributes: Mapping[str, Any]) -> bool:
        value = attributes.get(self.attribute)
        if self.op == "is_null":
            return (value is None) == bool(self.value)
        if value is None:
            return False
        return self.test(value)


@dataclass(frozen=True)
class Rule:
    """An OR of ANDs of conditions; ``spec`` is the JSON it was parsed from."""

    any: tuple[tuple[Condition, ...], ...]
    spec: dict[str, Any]
    #: (attribute, type check) of every condition that has one.
    checks: tuple[tuple[str, Callable[[Any], object]], ...] = ()

    def matches(self, attributes: Mapping[str, Any]) -> bool:
        # Every present attribute's type first, whichever conditions the evaluation below
        # reaches: else a malformed attribute is an error for one unit and not for another
        # (short-circuited away), and hides in testing.
        for attribute, check in self.checks:
            value = attributes.get(attribute)
            if value is not None:
                check(value)
        for conditions in self.any:  # loops, not any(all(...)): twice as fast
            for condition in conditions:
                if not condition.matches(attributes):
                    break
            else:
                return True
        return False


def parse_rule(data: object, where: str = "targeting") -> Rule:
    """A rule from its JSON, or InvalidValue naming the clause that is wrong."""
    parsed = []
    for i, alternative in enumerate(_listed(data, "any", where, MAX_ANY, "alternatives")):
        at = f"{where}.any[{i}]"
        conditions = _listed(alternative, "all", at, MAX_ALL, "conditions")
        parsed.append(tuple(_condition(c, f"{at}.all[{j}]") for j, c in enumerate(conditions)))
    size = sum(c.cost for conditions in parsed for c in conditions)
    if size > MAX_RULE_PROGRAM:
        raise InvalidValue(f"{where}: its regexes compile to {size} RE2 instructions in all, "
                           f"over {MAX_RULE_PROGRAM}: every unit assigned pays for matching "
                           "them; use fewer or simpler patterns")
    return Rule(tuple(parsed), cast(dict[str, Any], data),
                tuple((c.attribute, c.check) for conditions in parsed for c in conditions
                      if c.check is not None))


def _listed(data: object, key: str, where: str, most: int, what: str) -> list[Any]:
    """The list of 1 to ``most`` items under the one field ``key`` of ``data``."""
    if not isinstance(data, dict) or set(data) != {key}:
        raise InvalidValue(f"{where}: expected an object {{\"{key}\": [{what}]}}, got "
                           f"{json_kind(data)}")
    items = data[key]
    if not isinstance(items, list) or not 1 <= len(items) <= most:
        raise InvalidValue(f"{where}.{key}: expected a list of 1 to {most} {what}")
    return items


def _scalar(value: object, where: str) -> Scalar:
    if isinstance(value, str):
        return _shown(value, where)
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and math.isfinite(value):
        return value
    raise InvalidValue(f"{where}: expected a string, a finite number or a boolean, got "
                       f"{json_kind(value)}")


def _condition(data: object, where: str) -> Condition:
    if not isinstance(data, dict):
        raise InvalidValue(f"{where}: expected a condition object, got {json_kind(data)}")
    op = data.get("op")
    if op not in OPERATORS:
        raise InvalidValue(f"{where}.op: {op!r} is not one of {', '.join(OPERATORS)}")
    operand = "values" if op in _MEMBERSHIP else "value"
    expected = {"attribute", "op", operand}
    if set(data) != expected:
        raise InvalidValue(f"{where}: a {op!r} condition has exactly the fields "
                           f"{', '.join(sorted(expected))}; got {', '.join(sorted(data))}")
    attribute = data["attribute"]
    if not isinstance(attribute, str) or not NAME.fullmatch(attribute):
        raise InvalidValue(f"{where}.attribute: {attribute!r} is not an attribute name "
                           "(letters, digits, _ . : -, at most 64)")
    raw = data[operand]
    label = f"{where}.{operand}"
    name = f"attributes.{attribute}"
    if op in _EQUALITY:
        value = _scalar(raw, label)
        return Condition(attribute, op, value, where,
                         _member_test([value], op == "eq"),
                         check=_checker(_kind(value), name, where))
    if op in _MEMBERSHIP:
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_VALUES:
            raise InvalidValue(f"{label}: expected a list of 1 to {MAX_VALUES} values")
        values = [_scalar(v, f"{label}[{k}]") for k, v in enumerate(raw)]
        if len({_kind(v) for v in values}) > 1:
            raise InvalidValue(f"{label}: the values must all be strings, all numbers or all "
                               "booleans")
        return Condition(attribute, op, values, where,
                         _member_test(values, op == "in"),
                         check=_checker(_kind(values[0]), name, where))
    if op in _NUMERIC:
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            raise InvalidValue(f"{label}: expected a finite number, got {json_kind(raw)}")
        compare = _NUMERIC[op]
        return Condition(attribute, op, raw, where,
                         lambda v: compare(v, raw),
                         check=_checker("number", name, where))
    if op == "regex":
        if not isinstance(raw, str) or not 1 <= len(raw) <= MAX_PATTERN:
            raise InvalidValue(f"{label}: expected a pattern of 1 to {MAX_PATTERN} characters")
        _shown(raw, label)
        try:
            pattern = re2.compile(raw, options=_RE2_OPTIONS)
        except re2.error as error:
            reason = error.args[0].decode() if error.args and isinstance(error.args[0], bytes) \
                else str(error)
            raise InvalidValue(f"{label}: {raw!r} is not an RE2 pattern ({reason})") from None
        if pattern.programsize > MAX_PROGRAM:
            raise InvalidValue(
                f"{label}: {raw!r} compiles to {pattern.programsize} RE2 instructions, over "
                f"{MAX_PROGRAM}: counted repetitions and large classes (such as \\pL) expand "
                "into many; simplify the pattern")
        return Condition(attribute, op, raw, where,
                         lambda v: pattern.search(v) is not None,
                         pattern.programsize, check=_checker("string", name, where))
    if op in _SEMVER_OPS:
        if not isinstance(raw, str):
            raise InvalidValue(f"{label}: expected a version string, got {json_kind(raw)}")
        try:
            semver_key(raw)
        except ValueError as error:
            raise InvalidValue(f"{label}: {error}") from None
        holds = _SEMVER_OPS[op]
        return Condition(attribute, op, raw, where,
                         lambda v: holds(_compare_versions(v, raw)),
                         check=lambda v: _version(v, name, where))
    if not isinstance(raw, bool):  # is_null
        raise InvalidValue(f"{label}: expected true or false, got {json_kind(raw)}")
    return Condition(attribute, op, raw, where, lambda v: False)


def _shown(text: str, where: str) -> str:
    """A rule's string, shown to operators (terminal, dashboard): no control characters or
    bidirectional overrides (a pattern writes them as escapes, ``\\x00``)."""
    if CONTROL_CHARACTERS.search(text):
        raise InvalidValue(f"{where}: control characters and bidirectional overrides are not "
                           "allowed (write them as escapes in a regex: \\x1b)")
    return text


def _member_test(values: list[Scalar], inside: bool) -> Callable[[Any], bool]:
    """Whether a value of the values' JSON type (checked first) equals one of ``values`` is
    ``inside``: a set lookup (numbers as floats: 3 equals 3.0)."""
    if _kind(values[0]) == "number":
        numbers = frozenset(float(v) for v in values)
        return lambda v: (float(v) in numbers) == inside
    members = frozenset(values)
    return lambda v: (v in members) == inside


def _checker(kind: str, name: str, where: str) -> Callable[[Any], object]:
    """The type check of an attribute compared with values of ``kind``."""
    if kind == "string":
        return lambda v: _string(v, name, where)
    if kind == "number":
        return lambda v: _number(v, name, where)

    def boolean(v: Any) -> bool:
        if not isinstance(v, bool):
            raise InvalidValue(f"{name}: expected true or false for {where}, got "
                               f"{json_kind(v)}")
        return v
    return boolean


def _kind(value: Scalar) -> str:
    return "boolean" if isinstance(value, bool) else "string" if isinstance(value, str) \
        else "number"


def _number(value: object, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidValue(f"{name}: expected a number for {where}, got {json_kind(value)}")
    return float(value)


def _string(value: object, name: str, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidValue(f"{name}: expected a string for {where}, got {json_kind(value)}")
    return value


def _version(value: object, name: str, where: str) -> str:
    text = _string(value, name, where)
    try:
        semver_key(text)
    except ValueError as error:
        raise InvalidValue(f"{name}: {error} ({where})") from None
    return text
