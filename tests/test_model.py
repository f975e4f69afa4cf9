"""bandit.model as pure functions: experiments, exploration settings, patches, the audit diff.

The HTTP tests reach these through a server; here each rule is checked directly and fast."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import pytest

from bandit.errors import InvalidValue
from bandit.model import (
    EXPLORATION_SETTINGS,
    SETTINGS_BY_NAME,
    Control,
    Experiment,
    Exploration,
    check_consistent,
    parse_exploration,
    parse_new_experiment,
)
from bandit.patches import diff, parse_patch

NOW = 1_800_000_000.0


def _experiment(**fields: Any) -> Experiment:
    return parse_new_experiment({"id": "exp", "arms": ["a", "b", "c"], "reward": "bernoulli",
                                 **fields}, NOW)


def test_the_declaration_names_every_setting_of_the_dataclass() -> None:
    assert [s.name for s in EXPLORATION_SETTINGS] == [
        f.name for f in dataclasses.fields(Exploration)]
    assert set(SETTINGS_BY_NAME) == {f.name for f in dataclasses.fields(Exploration)}


@pytest.mark.parametrize("setting", EXPLORATION_SETTINGS, ids=lambda s: s.name)
def test_each_settings_bounds_are_enforced_as_declared(setting: Any) -> None:
    """Inside the bounds is accepted, on an open bound or beyond it refused, with the name."""
    if setting.kind == "control":
        inside: Any = {"arm": "a", "share": (setting.low + setting.high) / 2}
        outside: Any = {"arm": "a", "share": setting.high}
    else:
        inside = int(setting.low) if setting.kind == "integer" else (setting.low + setting.high) / 2
        outside = setting.high + 1
    assert parse_exploration({setting.name: inside}, Exploration()) is not None
    with pytest.raises(InvalidValue, match=f"exploration.{setting.name}"):
        parse_exploration({setting.name: outside}, Exploration())
    if setting.low_open and setting.kind != "control":
        with pytest.raises(InvalidValue, match=f"must be > {setting.low}"):
            parse_exploration({setting.name: setting.low}, Exploration())
    if setting.null is None:
        with pytest.raises(InvalidValue):
            parse_exploration({setting.name: None}, Exploration())
    else:
        changed = parse_exploration({setting.name: None}, Exploration())
        assert getattr(changed, setting.name) is None


@pytest.mark.parametrize(("value", "message"), [
    (math.nan, "must be finite"), (True, "expected a number"), ("0.1", "expected a number"),
    ([0.1], "expected a number")])
def test_numbers_are_finite_json_numbers(value: Any, message: str) -> None:
    with pytest.raises(InvalidValue, match=f"exploration.epsilon: {message}"):
        parse_exploration({"epsilon": value}, Exploration())


def test_integers_accept_whole_floats_only() -> None:
    assert parse_exploration({"warmup": 3.0}, Exploration()).warmup == 3
    with pytest.raises(InvalidValue, match="warmup: expected an integer"):
        parse_exploration({"warmup": 2.5}, Exploration())


def test_a_partial_change_keeps_the_other_settings() -> None:
    base = Exploration(epsilon=0.2, warmup=5)
    changed = parse_exploration({"min_share": 0.1}, base)
    assert (changed.epsilon, changed.warmup, changed.min_share) == (0.2, 5, 0.1)


def test_control_needs_an_arm_and_a_share() -> None:
    with pytest.raises(InvalidValue, match="needs both 'arm' and 'share'"):
        parse_exploration({"control": {"arm": "a"}}, Exploration())
    assert parse_exploration({"control": {"arm": "a", "share": 0.2}}, Exploration()).control == \
        Control("a", 0.2)


@pytest.mark.parametrize(("exploration", "message"), [
    ({"min_share": 0.4}, "min_share: 0.4 * 3 active arms > 1"),
    ({"max_share": 0.3}, "caps cannot add up"),
    ({"min_share": 0.3, "max_share": 0.2}, "above max_share"),
    ({"control": {"arm": "zz", "share": 0.2}}, "'zz' is not an arm"),
    ({"control": {"arm": "a", "share": 0.5}, "min_share": 0.3}, "the share left after the "
                                                                "control"),
])
def test_settings_that_do_not_fit_together_are_refused(
        exploration: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidValue, match=re.escape(message)):
        _experiment(exploration=exploration)


def test_a_new_experiment_has_defaults_and_round_trips_through_json() -> None:
    experiment = _experiment(prior={"alpha": 2})
    assert experiment.prior == {"alpha": 2.0, "beta": 1.0}
    assert experiment.version == 1 and experiment.created_at == NOW
    assert Experiment.from_json(experiment.to_json()) == experiment


def test_a_patch_bumps_the_version_and_says_what_changed() -> None:
    current = _experiment()
    patch = parse_patch({"version": 1, "exploration": {"epsilon": 0.1},
                         "arms": {"pause": ["c"], "add": ["d"]}, "reason": "test"},
                        current, NOW + 1)
    assert patch.version == 1 and patch.experiment.version == 2
    assert patch.changes == {"arms.c": {"old": "active", "new": "paused"},
                             "arms.d": {"old": None, "new": "active"},
                             "exploration.epsilon": {"old": 0.0, "new": 0.1}}
    assert patch.reason == "test"
    assert diff(current, current) == {}


@pytest.mark.parametrize(("body", "message"), [
    ({}, "version: required"),
    ({"version": 1, "arms": {"pause": ["zz"]}}, "unknown arm"),
    ({"version": 1, "arms": {"add": ["a"]}}, "already exist"),
    ({"version": 1, "arms": {"pause": ["a", "b", "c"]}}, "at least one arm must stay active"),
    ({"version": 1, "reason": "x" * 1001}, "reason: at most 1000 characters, got 1001"),
    ({"version": 1, "colour": "red"}, "unknown field"),
])
def test_bad_patches_are_refused(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidValue, match=message):
        parse_patch(body, _experiment(), NOW)


def test_consistency_is_checked_on_any_experiment() -> None:
    paused = dataclasses.replace(_experiment(), paused=frozenset({"a", "b", "c"}))
    with pytest.raises(InvalidValue, match="at least one arm must stay active"):
        check_consistent(paused)
