"""Changes to an experiment: a PATCH body applied to the current experiment (not yet stored),
and what changed between two versions, for the audit log (pure functions)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import orjson

from bandit.errors import InvalidValue
from bandit.model import (
    MAX_ARMS,
    METADATA_FIELDS,
    Experiment,
    check_consistent,
    check_id,
    integer,
    mapping,
    parse_arm_list,
    parse_exploration,
    parse_guardrails,
    parse_metadata,
    parse_targeting,
    parse_text,
    parse_weights,
)

#: The longest reason for a change the audit log records.
MAX_REASON_LENGTH = 1000


@dataclass(frozen=True)
class Patch:
    version: int
    experiment: Experiment
    reason: str | None
    #: Empty when the body changes nothing (``experiment`` is then the current one).
    changes: dict[str, Any]


_PATCH_FIELDS = {"version", "exploration", "arms", "reason", "weights", "targeting",
                 "guardrails", "control",
                 *METADATA_FIELDS}
#: Fixed at create: a PATCH naming them is refused with this reason.
_FIXED_AT_CREATE = {
    "model": "model: fixed at create (the statistics are sums over its columns); create a new "
             "experiment for another feature spec",
    "policy": "policy: fixed at create (a bandit's evidence and a fixed test's are analysed "
              "differently); create a new experiment for the other policy",
}


def patch_version(body: object) -> int:
    """The version a PATCH body says its change is based on (checked before the change itself:
    a change based on an old version may be invalid only because of what changed since)."""
    if isinstance(body, dict):
        for name, reason in _FIXED_AT_CREATE.items():
            if name in body:
                raise InvalidValue(reason)
    return based_on(mapping(body, "body", _PATCH_FIELDS))


def based_on(data: dict[str, Any]) -> int:
    """A change's ``version``: the one it is based on (experiments' and layers' PATCHes)."""
    if "version" not in data:
        raise InvalidValue("version: required (the version your change is based on)")
    return integer(data["version"], "version", low=1, high=2**53)


def audit_entry(version: int, actor: str, action: str, changes: dict[str, Any],
                reason: str | None) -> dict[str, Any]:
    """An audit log's entry: the version the change produced, when, who (the API key's name,
    "anonymous" when the service runs without keys), what and why."""
    return {"version": version, "at": time.time(), "actor": actor, "action": action,
            "changes": changes, "reason": reason}


def parse_patch(body: object, current: Experiment, now: float) -> Patch:
    """The experiment a PATCH body would produce from ``current`` (not yet stored)."""
    data = mapping(body, "body", _PATCH_FIELDS)
    version = patch_version(data)
    reason = parse_text(data.get("reason"), "reason", MAX_REASON_LENGTH)
    updated = current
    if "exploration" in data:
        updated = replace(updated, exploration=parse_exploration(data["exploration"],
                                                                 updated.exploration))
    if "arms" in data:
        updated = _apply_arm_changes(updated, mapping(data["arms"], "arms",
                                                      {"add", "pause", "resume"}))
    if "weights" in data:
        if current.policy != "fixed":
            raise InvalidValue('weights: only for "policy": "fixed" (a bandit\'s allocation '
                               "follows its posteriors)")
        updated = replace(updated, weights=parse_weights(data["weights"], updated.arms,
                                                         updated.weights))
    elif updated.policy == "fixed" and len(updated.arms) != len(current.arms):
        updated = replace(updated, weights=parse_weights({}, updated.arms, updated.weights))
    if "guardrails" in data:
        updated = replace(updated, guardrails=parse_guardrails(data["guardrails"]))
    if "control" in data:
        updated = replace(updated, control=None if data["control"] is None
                          else check_id(data["control"], "control"))
    if "targeting" in data:
        updated = replace(updated, targeting=parse_targeting(data["targeting"]))
    updated = replace(updated, **parse_metadata(data))
    check_consistent(updated)
    changes = diff(current, updated)
    if not changes:  # nothing changes: the version stays, so no one else's edit turns stale
        return Patch(version=version, experiment=current, reason=reason, changes={})
    updated = replace(updated, version=current.version + 1, updated_at=now)
    return Patch(version=version, experiment=updated, reason=reason, changes=changes)


def _apply_arm_changes(experiment: Experiment, arms: dict[str, Any]) -> Experiment:
    added = parse_arm_list(arms.get("add", []), "arms.add")
    existing = [arm for arm in added if experiment.arm_index(arm) is not None]
    if existing:
        raise InvalidValue(f"arms.add: {existing} already exist")
    if len(experiment.arms) + len(added) > MAX_ARMS:
        raise InvalidValue(f"arms.add: an experiment has at most {MAX_ARMS} arms")
    paused = set(experiment.paused)
    for action in ("pause", "resume"):
        named = parse_arm_list(arms.get(action, []), f"arms.{action}")
        unknown = [arm for arm in named if experiment.arm_index(arm) is None and arm not in added]
        if unknown:
            raise InvalidValue(f"arms.{action}: unknown arm(s) {unknown}")
        if action == "pause":
            paused.update(named)
        else:
            paused.difference_update(named)
    return replace(experiment, arms=experiment.arms + added, paused=frozenset(paused))


def diff(old: Experiment, new: Experiment) -> dict[str, dict[str, Any]]:
    """What changed, for the audit log: ``{"exploration.epsilon": {"old": 0, "new": 0.1},
    "arms.blue": {"old": "active", "new": "paused"}, ...}``."""
    before, after = _flat(old), _flat(new)
    return {key: {"old": before.get(key), "new": after.get(key)}
            for key in sorted(before.keys() | after.keys())
            if _typed(before.get(key)) != _typed(after.get(key))}


def _typed(value: Any) -> Any:
    """A value compared with its JSON types: Python has ``True == 1``, so a targeting rule
    changed from ``true`` to ``1`` compared equal and the change was dropped as none."""
    if isinstance(value, dict | list):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return (type(value) is bool, value)


def _flat(experiment: Experiment) -> dict[str, Any]:
    document = experiment.to_json()
    flat: dict[str, Any] = {f"exploration.{k}": v for k, v in document["exploration"].items()}
    flat.update({f"arms.{arm['id']}": arm["state"] for arm in document["arms"]})
    flat.update({f"prior.{k}": v for k, v in document["prior"].items()})
    flat["attribution_window_s"] = document["attribution_window_s"]
    flat["status"] = document["status"]
    flat.update({name: document[name] for name in METADATA_FIELDS})
    flat.update({f"weights.{arm}": w for arm, w in (document["weights"] or {}).items()})
    flat["targeting"] = document["targeting"]
    flat["guardrails"] = document["guardrails"]
    flat["control"] = document["control"]
    return flat
