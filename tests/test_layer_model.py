"""Layers (``bandit.layers``): ranges validated with the field named, a unit in at most one
experiment, membership in proportion to the buckets owned, growth that moves nobody."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bandit.errors import InvalidValue
from bandit.layers import parse_layer

UNITS = [f"user-{i}" for i in range(100_000)]


def _layer(ranges: dict[str, Any], **extra: Any) -> Any:
    return parse_layer({"id": "hero-layer", "ranges": ranges, **extra})


def test_membership_follows_the_buckets_owned() -> None:
    """Each experiment's share of 10^5 units is within 4 standard errors of the share of the
    buckets it owns (binomial: sqrt(p (1 - p) / n))."""
    layer = _layer({"headline": [[0, 2500]], "ranking": [[2500, 3000], [9000, 10000]]},
                   default="control")
    seen: dict[str | None, int] = {}
    for unit in UNITS:
        _, experiment = layer.experiment_of(unit)
        seen[experiment] = seen.get(experiment, 0) + 1
    for experiment, share in (("headline", 0.25), ("ranking", 0.15), (None, 0.60)):
        if experiment is not None:
            assert layer.share(experiment) == share
        error = math.sqrt(share * (1 - share) / len(UNITS))
        assert abs(seen[experiment] / len(UNITS) - share) <= 4 * error, (experiment, seen)


def test_growing_an_experiment_moves_nobody_already_in() -> None:
    before = _layer({"headline": [[0, 1000]], "ranking": [[5000, 6000]]})
    after = _layer({"headline": [[0, 1000], [2000, 3000]], "ranking": [[5000, 6000]]})
    moved = 0
    for unit in UNITS:
        _, was = before.experiment_of(unit)
        _, now = after.experiment_of(unit)
        if was is not None and now != was:
            moved += 1
        if now == "headline" and was is None:
            bucket, _ = after.experiment_of(unit)
            assert 2000 <= bucket < 3000  # only units of the new buckets join
    assert moved == 0


def test_adjacent_ranges_merge_and_the_layer_round_trips() -> None:
    layer = _layer({"headline": [[100, 200], [0, 100]]}, salt="s-1")
    assert layer.ranges == {"headline": ((0, 200),)}
    assert layer.to_json() == {"id": "hero-layer", "salt": "s-1", "default": None,
                               "version": 1, "ranges": {"headline": [[0, 200]]}}


@pytest.mark.parametrize(("ranges", "message"), [
    ({"a": [[0, 10]], "b": [[5, 20]]}, "ranges: a [0, 10) and b [5, 20) overlap"),
    ({"a": [[0, 10], [5, 7]]}, "ranges.a: the ranges [0, 10) and [5, 7) overlap"),
    ({"a": [[-1, 10]]}, "ranges.a[0]: [-1, 10) is not within [0, 10000)"),
    ({"a": [[0, 10001]]}, "ranges.a[0]: [0, 10001) is not within [0, 10000)"),
    ({"a": [[10, 10]]}, "with start < end"),
    ({"a": [[0, 1.5]]}, "ranges.a[0]: expected [start, end], two whole numbers"),
    ({"a": []}, "ranges.a: expected 1 to 100 ranges [start, end], got 0"),
    ({"a": [[2 * i, 2 * i + 1] for i in range(101)]}, "ranges.a: expected 1 to 100 ranges"),
    ({"A!": [[0, 1]]}, "ranges key: 'A!' does not match"),
])
def test_bad_ranges_name_the_field(ranges: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidValue) as raised:
        _layer(ranges)
    assert message in raised.value.message


def test_bad_layers_name_the_field() -> None:
    for body, message in (({"id": "x", "colour": 1}, "unknown field(s) colour"),
                          ({"id": "x", "salt": ""}, "salt: expected 1 to 128 characters, got 0"),
                          ({"id": "x", "salt": "s" * 129},
                           "salt: expected 1 to 128 characters, got 129"),
                          ({"id": "x", "default": 3}, "default: expected a string of 1 to 64"),
                          # Shown raw by terminals and pages (the attacker run: an OSC sequence
                          # in a salt retitled the operator's terminal).
                          ({"id": "x", "salt": "\u001b]0;pwned\u0007"}, "salt: control"),
                          ({"id": "x", "default": "a\nb"}, "default: control"),
                          ({"id": "x", "default": "\u202eevil"}, "default: control"),
                          ({"id": "x", "salt": "\u0000"}, "salt: control"),
                          ({"salt": "s"}, "id: None does not match")):
        with pytest.raises(InvalidValue) as raised:
            parse_layer(body)
        assert message in raised.value.message


def test_whole_floats_are_bucket_numbers() -> None:
    """JSON has one number type: [0, 10.0] is [0, 10], as the API's JSON Schema says (the fuzz
    found it refused as "expected ... two whole numbers")."""
    layer = parse_layer({"id": "l", "ranges": {"e": [[0.0, 10.0]]}})
    assert layer.ranges == {"e": ((0, 10),)}
    with pytest.raises(InvalidValue, match="two whole numbers"):
        parse_layer({"id": "l", "ranges": {"e": [[0, 10.5]]}})
