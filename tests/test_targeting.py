"""Targeting rules (``bandit.targeting``): parsing that names the bad clause, evaluation,
semver precedence, RE2 regexes in linear time, and attributes of the wrong type."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from bandit.errors import InvalidValue
from bandit.targeting import parse_rule, semver_key


def _rule(*alternatives: list[dict[str, Any]]) -> Any:
    return parse_rule({"any": [{"all": conditions} for conditions in alternatives]})


def test_an_or_of_ands() -> None:
    rule = _rule([{"attribute": "country", "op": "in", "values": ["DE", "FR"]},
                  {"attribute": "app_version", "op": "semver_gte", "value": "2.3.0"}],
                 [{"attribute": "beta", "op": "eq", "value": True}])
    assert rule.matches({"country": "DE", "app_version": "2.10.1"})
    assert not rule.matches({"country": "DE", "app_version": "2.3.0-rc.1"})
    assert not rule.matches({"country": "US", "app_version": "9.0.0"})
    assert rule.matches({"country": "US", "beta": True})
    assert not rule.matches({})  # a missing attribute fails its conditions


@pytest.mark.parametrize(("condition", "attribute"), [
    ({"op": "eq", "value": True}, 1), ({"op": "eq", "value": True}, "true"),
    ({"op": "eq", "value": "DE"}, True), ({"op": "neq", "value": "DE"}, True),
    ({"op": "not_in", "values": ["DE"]}, False), ({"op": "in", "values": [1, 2]}, True),
    ({"op": "eq", "value": 1}, True), ({"op": "eq", "value": 1}, "1"),
])
def test_a_boolean_compared_with_a_string_or_number_is_the_callers_error(
        condition: dict[str, Any], attribute: Any) -> None:
    """As a number compared with a string is: the attacker run found ``country: true``
    entering an experiment targeted at ``country neq "DE"``, and ``beta: 1`` silently failing
    ``beta eq true``."""
    rule = _rule([{"attribute": "x", **condition}])
    with pytest.raises(InvalidValue, match=r"attributes\.x: expected"):
        rule.matches({"x": attribute})


def test_regexes_whose_program_is_too_large_are_refused() -> None:
    """``(?:[a-z]{1,30}){1,30}z`` is linear in RE2, but its 1,800-instruction program runs out
    of DFA memory and took 30 ms per 1,000-character attribute (the attacker run: a batch of
    15 units held a process for 7 s); such patterns, and rules whose regexes add up past the
    bound, are refused."""
    with pytest.raises(InvalidValue, match=r"targeting.any\[0\].all\[0\].value: .*1804 RE2"):
        _rule([{"attribute": "x", "op": "regex", "value": "(?:[a-z]{1,30}){1,30}z"}])
    fine = {"attribute": "x", "op": "regex", "value": "(?:[a-z]{1,10}){1,10}z"}  # 204
    _rule([fine])
    with pytest.raises(InvalidValue, match="in all, over 1000"):
        _rule([fine] * 5)


@pytest.mark.parametrize(("op", "value", "attribute", "expected"), [
    ("eq", "a", "a", True), ("neq", "a", "b", True), ("eq", 3, 3.0, True),
    ("lt", 10, 9.5, True), ("lte", 10, 10, True), ("gt", 10, 10, False), ("gte", 10, 10, True),
    ("regex", "^user-[0-9]+$", "user-42", True), ("regex", "^user-[0-9]+$", "user-x", False),
    ("semver_eq", "1.2", "1.2.0+build.7", True), ("semver_lt", "1.0.0", "1.0.0-alpha", True),
    ("semver_gt", "1.9.9", "1.10.0", True), ("is_null", True, None, True),
    ("is_null", False, "x", True),
])
def test_each_operator(op: str, value: Any, attribute: Any, expected: bool) -> None:
    rule = _rule([{"attribute": "a", "op": op, "value": value}])
    assert rule.matches({"a": attribute}) is expected


def test_semver_precedence_as_semver_org_lists_it() -> None:
    ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta",
               "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "2.0.0", "2.1.0",
               "2.1.1"]
    assert sorted(ordered, key=semver_key) == ordered
    assert all(semver_key(v) < semver_key(w) for v, w in itertools.pairwise(ordered))


def test_a_pathological_pattern_runs_in_linear_time() -> None:
    """(a+)+$ against 'a' * n + '!' takes 2^n steps in a backtracking engine (Python's re
    needs minutes at n = 30); RE2 answers at once. Bounded generously: 1 s for 10^5."""
    rule = _rule([{"attribute": "a", "op": "regex", "value": "(a+)+$"}])
    started = time.perf_counter()
    assert rule.matches({"a": "a" * 100_000})
    assert not rule.matches({"a": "a" * 100_000 + "!"})
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(("spec", "message"), [
    ({"all": []}, "targeting: expected an object {\"any\""),
    ({"any": []}, "targeting.any: expected a list of 1 to 20"),
    ({"any": [{"all": [{"attribute": "a", "op": "between", "value": 1}]}]},
     "targeting.any[0].all[0].op: 'between' is not one of"),
    ({"any": [{"all": [{"attribute": "a", "op": "eq", "value": 1}]},
              {"all": [{"attribute": "b", "op": "lt", "value": "ten"}]}]},
     "targeting.any[1].all[0].value: expected a finite number"),
    ({"any": [{"all": [{"attribute": "a", "op": "regex", "value": "(a)\\1"}]}]},
     "targeting.any[0].all[0].value: '(a)\\\\1' is not an RE2 pattern"),
    ({"any": [{"all": [{"attribute": "a", "op": "in", "values": ["x", 1]}]}]},
     "targeting.any[0].all[0].values: the values must all be strings, all numbers"),
    ({"any": [{"all": [{"attribute": "a", "op": "semver_gt", "value": "v1"}]}]},
     "'v1' is not a semantic version"),
    ({"any": [{"all": [{"attribute": "a b", "op": "eq", "value": 1}]}]},
     "targeting.any[0].all[0].attribute: 'a b' is not an attribute name"),
    ({"any": [{"all": [{"attribute": "a", "op": "in", "value": ["x"]}]}]},
     "has exactly the fields attribute, op, values"),
])
def test_a_bad_rule_names_its_clause(spec: Any, message: str) -> None:
    with pytest.raises(InvalidValue) as raised:
        parse_rule(spec)
    assert message in raised.value.message


@pytest.mark.parametrize(("op", "value", "attribute", "message"), [
    ("gt", 3, "4", "attributes.a: expected a number for targeting.any[0].all[0]"),
    ("regex", "x", 5, "attributes.a: expected a string"),
    ("semver_gte", "1.0.0", "one", "attributes.a: 'one' is not a semantic version"),
    ("eq", "x", 1, "attributes.a: expected a string"),
])
def test_an_attribute_of_the_wrong_type_is_the_caller_s_error(
        op: str, value: Any, attribute: Any, message: str) -> None:
    rule = _rule([{"attribute": "a", "op": op, "value": value}])
    with pytest.raises(InvalidValue) as raised:
        rule.matches({"a": attribute})
    assert message in raised.value.message


def test_every_present_attribute_is_type_checked_whatever_the_evaluation_reaches() -> None:
    """A malformed attribute was an error only when the evaluation reached its condition: a
    422 for one user and silently accepted for another (the second attacker run)."""
    rule = _rule([{"attribute": "country", "op": "eq", "value": "DE"},
                  {"attribute": "age", "op": "gte", "value": 18}],
                 [{"attribute": "v", "op": "semver_gte", "value": "2.3.0"}])
    for attributes, where in (({"country": "US", "age": "old"}, "attributes.age"),
                              ({"country": "DE", "age": 20, "v": "abc"}, "attributes.v"),
                              ({"country": "DE", "age": 20, "v": 5}, "attributes.v")):
        with pytest.raises(InvalidValue, match=where):
            rule.matches(attributes)
    assert rule.matches({"country": "DE", "age": 20})  # absent ones are not errors
