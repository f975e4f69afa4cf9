"""JSON Schemas of the API's requests and experiments, and the helpers every schema and route
uses: one place for the shapes ``bandit.api.openapi`` assembles into the OpenAPI document.

Limits and patterns come from the modules that enforce them (``bandit.inputs``,
``bandit.model``), so the document follows them when they change.
"""

from __future__ import annotations

import re
from typing import Any

from bandit import errors
from bandit.features import (
    FEATURE_NAME,
    MAX_DIMENSION,
    MAX_FEATURES,
    MAX_VALUE_LENGTH,
    MAX_VALUES,
    MODEL_VERSION,
)
from bandit.inputs import (
    EVENT_ID_PATTERN,
    MAX_DECISIONS,
    MAX_EVENT_EXPERIMENTS,
    MAX_EVENTS,
    MAX_LIST_PAGE,
    MAX_PLACEMENTS,
    MAX_SLATE,
    MAX_UNIT_LENGTH,
    UNIT_PATTERN,
)
from bandit.model import (
    BERNOULLI_PRIOR,
    EXPLORATION_SETTINGS,
    GAUSSIAN_PRIOR,
    ID_PATTERN,
    MAX_ABS_REWARD,
    MAX_ARMS,
    MAX_GUARDRAILS,
    MAX_HYPOTHESIS_LENGTH,
    MAX_OWNER_LENGTH,
    MAX_PRIOR_PARAMETER,
    MAX_TAGS,
    MAX_WEIGHT,
    MIN_ARMS,
    MIN_GAUSSIAN_ALPHA,
    MIN_PRIOR_PARAMETER,
    POLICIES,
    PRIMARY,
    REWARDS,
    TAG_PATTERN,
    Setting,
)
from bandit.patches import MAX_REASON_LENGTH
from bandit.targeting import MAX_ALL, MAX_ANY, MAX_PATTERN, NAME, SEMVER
from bandit.targeting import MAX_VALUES as MAX_RULE_VALUES
from bandit.tokens import DECISION_ID_PATTERN

Schema = dict[str, Any]

_BEARER = "bearerAuth"


def anchored(pattern: re.Pattern[str]) -> str:
    """A Python ``fullmatch`` pattern as a JSON Schema (ECMA 262, unanchored) pattern."""
    return f"^(?:{pattern.pattern})$"


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def closed_object(required: list[str], properties: dict[str, Any], **extra: Any) -> Schema:
    """A closed object: every field a response has is documented, and only those."""
    return {"type": "object", "additionalProperties": False, "required": required,
            "properties": properties, **extra}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


ID: Schema = {"type": "string", "pattern": anchored(ID_PATTERN),
               "description": "experiment or arm id"}
NUMBER: Schema = {"type": "number"}
NULLABLE_NUMBER: Schema = {"type": ["number", "null"]}
COUNT: Schema = {"type": "integer", "minimum": 0}
SHARE: Schema = {"type": "number", "minimum": 0, "maximum": 1}
INTERVAL: Schema = {"type": "array", "items": NUMBER, "minItems": 2, "maxItems": 2}
ARM_STATE: Schema = {"enum": ["active", "paused"]}
REWARD: Schema = {"enum": list(REWARDS)}
_PRIOR_VALUE: Schema = {"type": "number", "minimum": MIN_PRIOR_PARAMETER,
                        "maximum": MAX_PRIOR_PARAMETER}
_REWARD_VALUE: Schema = {"type": "number", "minimum": -MAX_ABS_REWARD, "maximum": MAX_ABS_REWARD}
VERSION: Schema = {"type": "integer", "minimum": 1}
CHANGES: Schema = {
    "type": "object",
    "description": "what changed, by setting: `exploration.epsilon`, `arms.<id>` (arm state), "
                   "`prior.<name>`, `attribution_window_s`, `status`, `held` (the arms the "
                   "guardrails' hard gate holds)",
    "additionalProperties": closed_object(["old", "new"], {"old": {}, "new": {}}),
}

def _bounds(setting: Setting) -> Schema:
    """A number's (or integer's) bounds as JSON Schema keywords."""
    low = {"exclusiveMinimum" if setting.low_open else "minimum": setting.low}
    high = {"exclusiveMaximum" if setting.high_open else "maximum": setting.high}
    return {**low, **high}


def _setting(setting: Setting) -> Schema:
    """An exploration setting's schema, from its declaration (``bandit.model``)."""
    if setting.kind == "control":
        value = closed_object(["arm", "share"], {"arm": ID, "share": {"type": "number",
                                                                     **_bounds(setting)}})
    else:
        value = {"type": "integer" if setting.kind == "integer" else "number",
                 **_bounds(setting)}
    description = setting.description + (f"; null = {setting.null}" if setting.null else "")
    if setting.null is not None:
        value = nullable(value) if setting.kind == "control" else {
            **value, "type": [value["type"], "null"]}
        # What null means, for forms (the dashboard's placeholder).
        value["x-null"] = setting.null
    return {**value, "title": setting.title, "description": description}


_EXPLORATION_PROPERTIES: dict[str, Schema] = {
    setting.name: _setting(setting) for setting in EXPLORATION_SETTINGS}
EXPLORATION_CHANGE: Schema = {
    "type": "object", "additionalProperties": False, "properties": _EXPLORATION_PROPERTIES,
    "description": "settings to change (the others keep their values); combinations are "
                   "checked too (422), e.g. `min_share` times the active arms must not exceed 1",
}

_ARM_IDS: Schema = {"type": "array", "items": ID, "uniqueItems": True}
ARM_CHANGES: Schema = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "add": {**_ARM_IDS, "maxItems": MAX_ARMS - MIN_ARMS,
                "description": f"new arms (an experiment has at most {MAX_ARMS})"},
        "pause": {**_ARM_IDS, "description": "paused arms get no traffic, keep their posterior"},
        "resume": _ARM_IDS,
    },
}

_PRIOR_FIELDS = {"bernoulli": BERNOULLI_PRIOR, "gaussian": GAUSSIAN_PRIOR}


def _prior(reward: str, fields: dict[str, float]) -> Schema:
    def value(name: str) -> Schema:
        if name == "mean":
            return _REWARD_VALUE
        if (reward, name) == ("gaussian", "alpha"):
            return {**_PRIOR_VALUE, "minimum": MIN_GAUSSIAN_ALPHA}
        return _PRIOR_VALUE

    return {"type": "object", "additionalProperties": False,
            "properties": {name: value(name) for name in fields}}


#: Free text: no control characters other than tab and newline.
_TEXT_PATTERN = ("^[^\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f\\u202a-\\u202e"
                 "\\u2066-\\u2069]*$")
TAG_LIST: Schema = {"type": "array", "maxItems": MAX_TAGS, "description": "labels to filter by",
                    "items": {"type": "string", "pattern": anchored(TAG_PATTERN)}}
_METADATA_CHANGE: dict[str, Schema] = {
    "owner": {"type": ["string", "null"], "maxLength": MAX_OWNER_LENGTH,
              "pattern": _TEXT_PATTERN, "description": "who runs the experiment"},
    "hypothesis": {"type": ["string", "null"], "maxLength": MAX_HYPOTHESIS_LENGTH,
                   "pattern": _TEXT_PATTERN, "description": "what it is expected to show"},
    "tags": {**TAG_LIST, "type": ["array", "null"]},
}

_FEATURE_COMMON: dict[str, Schema] = {
    "name": {"type": "string", "pattern": anchored(FEATURE_NAME),
             "description": "the key of the feature in a request's `context`"},
    "precision": {"type": ["number", "null"], "minimum": 1e-6, "maximum": 1e12,
                  "description": "prior precision of this feature's columns"},
}
_CATEGORY: Schema = {"type": "string", "minLength": 1, "maxLength": MAX_VALUE_LENGTH}
_FEATURE: Schema = {"oneOf": [
    closed_object(["name", "type", "scale"], {
        **_FEATURE_COMMON,
        "type": {"const": "numeric", "description": "one column: (value - low) / (high - low) "
                                                    "clipped to [0, 1]"},
        "scale": {"type": "array", "items": NUMBER, "minItems": 2, "maxItems": 2,
                  "description": "[low, high], low < high"},
        "default": {"type": ["number", "null"],
                    "description": "used when the context lacks the feature (else 422)"}}),
    closed_object(["name", "type", "values"], {
        **_FEATURE_COMMON,
        "type": {"const": "categorical", "description": "one column per declared value and "
                                                        "one for `other` (any other value)"},
        "values": {"type": "array", "minItems": 1, "maxItems": MAX_VALUES,
                   "uniqueItems": True, "items": {**_CATEGORY, "not": {"const": "other"}}},
        "default": {**_CATEGORY, "type": ["string", "null"]}}),
    closed_object(["name", "type", "buckets"], {
        **_FEATURE_COMMON,
        "type": {"const": "hashed", "description": "one-hot over `buckets`: CRC-32 of the "
                                                   "value's UTF-8 bytes mod buckets"},
        "buckets": {"type": "integer", "minimum": 2, "maximum": MAX_DIMENSION},
        "default": {**_CATEGORY, "type": ["string", "null"]}}),
]}
MODEL: Schema = {
    "type": "object", "additionalProperties": False, "required": ["type", "features"],
    "description": "a contextual experiment's model: one Bayesian linear regression per arm "
                   f"over the features' columns (at most {MAX_DIMENSION} with the "
                   "intercept); fixed at create",
    "properties": {
        "type": {"const": "linear"},
        "version": {"const": MODEL_VERSION, "description": "the spec format's version"},
        "features": {"type": "array", "maxItems": MAX_FEATURES, "items": _FEATURE},
        "intercept": {"type": "boolean", "description": "a per-arm intercept column (default "
                                                        "true)"},
        "prior": {"type": "object", "additionalProperties": False, "properties": {
            name: {"type": "number", "minimum": 1e-6, "maximum": 1e12, "description": text}
            for name, text in (
                ("precision", "prior precision of the coefficients, per unit of noise "
                              "variance (default 1)"),
                ("intercept_precision", "prior precision of the intercept (default 0.01)"),
                ("alpha", "inverse-gamma shape of the noise variance (default 1)"),
                ("beta", "inverse-gamma scale of the noise variance (default 0.25 bernoulli, "
                         "1 gaussian)"))}},
        "dimension": {"type": "integer", "minimum": 1, "maximum": MAX_DIMENSION,
                      "description": "number of columns (answered; checked if sent)"},
    },
}
CONTEXT: Schema = {"type": ["object", "null"],
                   "description": "feature values by name, for a contextual experiment "
                                  "(ignored by a context-free one)"}

POLICY: Schema = {"enum": list(POLICIES), "description": "thompson: a bandit (default); fixed: "
                                                       "an A/B test serving its weights"}
#: No control characters or bidirectional overrides (``bandit.features.CONTROL_CHARACTERS``).
SHOWN = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069]*$"
_SCALAR: Schema = {"type": ["string", "number", "boolean"], "pattern": SHOWN}
_ATTRIBUTE: Schema = {"type": "string", "pattern": NAME.pattern,
                      "description": "the attribute's name in an assign request's `attributes`"}


def _condition(ops: list[str], operand: str, value: Schema) -> Schema:
    return closed_object(["attribute", "op", operand], {
        "attribute": _ATTRIBUTE, "op": {"enum": ops}, operand: value})


def _all_of_one_kind(kind: str) -> Schema:
    items: Schema = {"type": kind, "pattern": SHOWN} if kind == "string" else {"type": kind}
    return {"type": "array", "minItems": 1, "maxItems": MAX_RULE_VALUES, "items": items}


_CONDITION: Schema = {"oneOf": [
    _condition(["eq", "neq"], "value", _SCALAR),
    _condition(["in", "not_in"], "values", {
        "oneOf": [_all_of_one_kind(kind) for kind in ("string", "number", "boolean")],
        "description": "all strings, all numbers or all booleans"}),
    _condition(["lt", "lte", "gt", "gte"], "value", {"type": "number"}),
    _condition(["regex"], "value", {
        "type": "string", "minLength": 1, "maxLength": MAX_PATTERN, "pattern": SHOWN,
        "description": "an RE2 pattern, searched anywhere in the value (linear time; no "
                       "backreferences or lookarounds: 422)"}),
    _condition(["semver_eq", "semver_lt", "semver_lte", "semver_gt", "semver_gte"], "value",
               {"type": "string", "pattern": SEMVER.pattern,
                "description": "MAJOR[.MINOR[.PATCH]][-PRERELEASE][+BUILD]"}),
    _condition(["is_null"], "value", {
        "type": "boolean", "description": "true: the attribute is missing or null"}),
]}
TARGETING_RULE: Schema = nullable(closed_object(["any"], {"any": {
    "type": "array", "minItems": 1, "maxItems": MAX_ANY,
    "description": "alternatives (OR), each a list of conditions (AND)",
    "items": closed_object(["all"], {"all": {
        "type": "array", "minItems": 1, "maxItems": MAX_ALL, "items": _CONDITION}})}},
    description="who is eligible: an OR of ANDs of conditions on the assign request's "
                "attributes (a missing attribute fails all but is_null; an attribute of the "
                "wrong type is a 422); a unit that fails gets its layer's default"))
WEIGHTS: Schema = {
    "type": "object", "minProperties": 1,
    "additionalProperties": {"type": "number", "minimum": 0, "maximum": MAX_WEIGHT},
    "description": 'a fixed experiment\'s weight per arm (`"policy": "fixed"`): relative, '
                   "each arm is served in proportion over the active arms"}

_GUARDRAIL: Schema = {
    "type": "object", "additionalProperties": False,
    "required": ["metric", "kind", "direction", "threshold"],
    "properties": {
        "metric": {**ID, "not": {"const": PRIMARY},
                   "description": f"the metric's name in reward events (not {PRIMARY!r}, the "
                                  "primary's)"},
        "kind": REWARD,
        "direction": {"enum": ["higher", "lower"], "description": "which is better"},
        "threshold": {"oneOf": [
            closed_object(["relative"], {"relative": {
                "type": "number", "minimum": -1, "maximum": 10,
                "description": "allowed change against the control's mean (-0.02: no worse "
                               "than 2% below it, for a higher-is-better metric)"}}),
            closed_object(["absolute"], {"absolute": {
                "type": "number", "minimum": -MAX_ABS_REWARD, "maximum": MAX_ABS_REWARD,
                "description": "a level the arm's mean must keep (bernoulli: in [0, 1])"}})]},
    },
    # A bernoulli metric's absolute level is a rate.
    "if": {"required": ["kind"], "properties": {"kind": {"const": "bernoulli"}}},
    "then": {"properties": {"threshold": {"oneOf": [
        closed_object(["relative"], {"relative": {"type": "number", "minimum": -1,
                                                  "maximum": 10}}),
        closed_object(["absolute"], {"absolute": {"type": "number", "minimum": 0,
                                                  "maximum": 1}})]}}},
}
GUARDRAILS: Schema = {"type": "array", "maxItems": MAX_GUARDRAILS, "items": _GUARDRAIL,
                      "description": "metrics an arm must not break besides the primary "
                                     "(the reward); a relative threshold needs a control arm"}
CONTROL_ARM: Schema = {**ID, "type": ["string", "null"],
                       "description": "the control arm, when there is no control share "
                                      "(exploration.control names it then)"}

_NEW_EXPERIMENT: Schema = {
    "type": "object", "additionalProperties": False,
    "required": ["id", "arms", "reward"],
    "properties": {
        "id": ID,
        "arms": {**_ARM_IDS, "minItems": MIN_ARMS, "maxItems": MAX_ARMS},
        "reward": REWARD,
        "prior": {"type": ["object", "null"],
                  "description": "bernoulli: Beta `alpha`, `beta`; gaussian: Normal-Gamma "
                                 "`mean`, `kappa`, `alpha`, `beta`; missing ones take their "
                                 "defaults"},
        "exploration": EXPLORATION_CHANGE,
        "attribution_window_s": {"type": "number", "minimum": 1, "maximum": 90 * 86_400,
                                 "description": "how long a provisional decision can convert"},
        "model": nullable(MODEL),
        "policy": POLICY,
        "weights": nullable(WEIGHTS),
        "targeting": TARGETING_RULE,
        "guardrails": GUARDRAILS,
        "control": CONTROL_ARM,
        **_METADATA_CHANGE,
    },
    # Which prior fields exist depends on the reward type; a fixed experiment needs weights.
    "allOf": [*({"if": {"required": ["reward"], "properties": {"reward": {"const": reward}}},
                 "then": {"properties": {"prior": nullable(_prior(reward, fields))}}}
                for reward, fields in _PRIOR_FIELDS.items()),
              {"if": {"required": ["policy"], "properties": {"policy": {"const": "fixed"}}},
               "then": {"required": ["weights"], "properties": {"weights": WEIGHTS}}}],
}

_EXPERIMENT_PROPERTIES: dict[str, Schema] = {
    "id": ID,
    "arms": {"type": "array", "minItems": MIN_ARMS, "maxItems": MAX_ARMS,
             "items": closed_object(["id", "state"], {"id": ID, "state": ARM_STATE})},
    "reward": REWARD,
    "prior": {"type": "object", "additionalProperties": NUMBER},
    "exploration": closed_object(list(_EXPLORATION_PROPERTIES), _EXPLORATION_PROPERTIES),
    "attribution_window_s": NUMBER,
    "version": VERSION,
    "created_at": {"type": "number", "description": "epoch seconds"},
    "updated_at": {"type": "number", "description": "epoch seconds"},
    "status": {"enum": ["active", "archived"]},
    "owner": {"type": ["string", "null"], "maxLength": MAX_OWNER_LENGTH},
    "hypothesis": {"type": ["string", "null"], "maxLength": MAX_HYPOTHESIS_LENGTH},
    "tags": TAG_LIST,
    "model": nullable(MODEL),
    "policy": POLICY,
    "weights": nullable(WEIGHTS),
    "targeting": TARGETING_RULE,
    "guardrails": GUARDRAILS,
    "control": CONTROL_ARM,
}
_EXPERIMENT: Schema = closed_object(list(_EXPERIMENT_PROPERTIES), _EXPERIMENT_PROPERTIES)
_CHANGED: Schema = {"type": "boolean",
                    "description": "false when the request changed nothing (the version stays)"}
LIFT: Schema = nullable(closed_object(["against", "kind", "mean", "ci95", "p_better"], {
    "against": {**ID, "description": "the reference arm: the control, else the best other "
                                     "active arm"},
    "kind": {"enum": ["relative", "absolute"],
             "description": "relative: mean / reference mean - 1; absolute (a reference mean "
                            "that may be <= 0): mean - reference mean"},
    "mean": {**NUMBER, "description": "the lift of the posterior means"},
    "ci95": {**INTERVAL, "description": "central 95% of the lift over posterior draws"},
    "p_better": {**SHARE, "description": "posterior probability the arm's mean is above the "
                                         "reference's"}},
    description="the arm's lift against its reference (null for the control itself)"))
_LIST_SUMMARY: Schema = closed_object(
    ["leader", "winner", "lift", "health", "traffic_last_hour"], {
        "leader": nullable(closed_object(["arm", "p_best"], {"arm": ID, "p_best": SHARE},
                                         description="the arm with the highest P(best) (with "
                                                     "guardrails: P(best feasible)); null "
                                                     "before any observation")),
        "winner": {**ID, "type": ["string", "null"],
                   "description": "the winner call of the stats with their default rule"},
        "lift": LIFT,
        "health": closed_object(["sample_ratio_ok", "rewards_stalled"], {
            "sample_ratio_ok": {"type": ["boolean", "null"],
                                "description": "the stats' `health.sample_ratio.ok`"},
            "rewards_stalled": {"type": ["boolean", "null"],
                                "description": "the stats' `health.rewards.stalled`"}}),
        "traffic_last_hour": nullable(closed_object(["decisions", "seconds"], {
            "decisions": COUNT,
            "seconds": {"type": "number", "minimum": 0,
                        "description": "the span counted: an hour (up to a minute more), or "
                                       "since creation"}},
            description="decisions served in the last hour; null when the history does not "
                        "reach back that far")),
    }, description="with `summary=true`: the experiment at a glance")
_PATCHED_EXPERIMENT: Schema = closed_object(
    [*_EXPERIMENT_PROPERTIES, "changes", "changed"],
    {**_EXPERIMENT_PROPERTIES, "changes": CHANGES, "changed": _CHANGED})
_ARCHIVE_STATE: Schema = closed_object(
    [*_EXPERIMENT_PROPERTIES, "changed"], {**_EXPERIMENT_PROPERTIES, "changed": _CHANGED})
_EXPERIMENT_LIST: Schema = closed_object(["experiments", "next"], {
    "experiments": {
        "type": "array", "maxItems": MAX_LIST_PAGE,
        "items": closed_object(
            ["id", "reward", "arms", "version", "status", "owner", "tags", "created_at",
             "updated_at"], {
                "id": ID, "reward": REWARD,
                "arms": {"type": "integer", "minimum": MIN_ARMS, "maximum": MAX_ARMS,
                         "description": "number of arms"},
                "version": VERSION, "status": {"enum": ["active", "archived"]},
                "owner": _EXPERIMENT_PROPERTIES["owner"], "tags": TAG_LIST,
                "created_at": _EXPERIMENT_PROPERTIES["created_at"],
                "updated_at": _EXPERIMENT_PROPERTIES["updated_at"],
                "summary": _LIST_SUMMARY})},
    "next": {**ID, "type": ["string", "null"],
             "description": "ask `?after=` this id for the next page; null on the last"}})

_PATCH: Schema = {
    "type": "object", "additionalProperties": False, "required": ["version"],
    "properties": {
        "version": {"type": "integer", "minimum": 1, "maximum": 2**53,
                    "description": "the version the change is based on (409 if not current)"},
        "exploration": EXPLORATION_CHANGE,
        "arms": ARM_CHANGES,
        "reason": {"type": ["string", "null"], "maxLength": MAX_REASON_LENGTH,
                   "pattern": _TEXT_PATTERN, "description": "recorded in the audit log"},
        "weights": {**WEIGHTS, "description": "a fixed experiment's new weights (the arms "
                                              "named; an added arm needs one)"},
        "targeting": TARGETING_RULE,
        "guardrails": {**GUARDRAILS, "description": "the whole new list (audited)"},
        "control": CONTROL_ARM,
        **_METADATA_CHANGE,
    },
}

_ALLOCATE: Schema = {
    "type": ["object", "null"], "additionalProperties": False,
    "description": "an empty body or null is one decision",
    "properties": {
        "n": {"type": "integer", "minimum": 1, "maximum": MAX_DECISIONS,
              "description": "decisions to make (default 1)"},
        "k": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_SLATE,
              "description": "arms per decision (a ranked slate); null = one arm; at most the "
                             f"arms that can be served, and n * k at most {MAX_PLACEMENTS} "
                             "(422)"},
        "unit": {"type": ["string", "null"], "minLength": 1, "maxLength": MAX_UNIT_LENGTH,
                 "pattern": anchored(UNIT_PATTERN),
                 "description": "user, session or other unit the decision is for (no control "
                                "characters)"},
        "sticky": {"type": "boolean",
                   "description": "the unit keeps the arm it first received (needs `unit`)"},
        "provisional": {"type": "boolean",
                        "description": "count as a failure now, convertible by a reward event "
                                       "naming the decision (bernoulli, single arm)"},
        "context": {**CONTEXT, "description": "feature values by name: a contextual "
                                              "experiment decides for them (422 when one has "
                                              "the wrong type or a required one is missing); "
                                              "a context-free one ignores them"},
    },
    "if": {"type": "object", "required": ["sticky"], "properties": {"sticky": {"const": True}}},
    "then": {"required": ["unit"], "properties": {"unit": {"type": "string"}}},
}

_DECISION_ID: Schema = {"type": "string", "pattern": anchored(DECISION_ID_PATTERN)}
_PROPENSITY: Schema = {**SHARE, "description": "probability the policy gave this arm (or this "
                                                 "ranked slate) when deciding"}
_DECISION: Schema = {"oneOf": [
    closed_object(["decision_id", "arm", "propensity"],
            {"decision_id": _DECISION_ID, "arm": ID, "propensity": _PROPENSITY,
             "sticky": {"const": True, "description": "the unit's stored arm"}}),
    closed_object(["decision_id", "arms", "propensity", "position_propensities"],
            {"decision_id": _DECISION_ID,
             "arms": {"type": "array", "items": ID, "minItems": 1, "maxItems": MAX_SLATE},
             "propensity": _PROPENSITY,
             "position_propensities": {
                 "type": "array", "items": SHARE, "minItems": 1, "maxItems": MAX_SLATE,
                 "description": "probability of each position's arm given the arms above it"},
             "sticky": {"const": True}}),
]}
_ALLOCATION: Schema = closed_object(["decisions", "version"], {
    "decisions": {"type": "array", "items": _DECISION, "minItems": 1, "maxItems": MAX_DECISIONS},
    "version": {**VERSION, "description": "the configuration version that decided"},
})

_EVENT: Schema = closed_object(["id", "experiment", "arm", "reward"], {
    "id": {"type": "string", "pattern": anchored(EVENT_ID_PATTERN),
           "description": "idempotency key: the same id counts once within the dedup window"},
    "experiment": ID,
    "arm": ID,
    "reward": {**_REWARD_VALUE, "description": "in [0, 1] for bernoulli (else rejected in "
                                               "`rejected`)"},
    "decision_id": {**_DECISION_ID, "type": ["string", "null"],
                    "description": "the decision rewarded, as served (converts a provisional "
                                   "one); a service with `require_decision_ids` rejects events "
                                   "without one"},
    "unit": {"type": ["string", "null"], "minLength": 1, "maxLength": MAX_UNIT_LENGTH,
             "pattern": anchored(UNIT_PATTERN)},
    "ts": {"type": ["number", "null"], "minimum": 0,
           "description": "when the reward happened (epoch seconds); with forgetting, older "
                          "rewards weigh less"},
    "context": {**CONTEXT, "description": "a contextual experiment's reward: the context its "
                                          "decision was served for (refused if it encodes to "
                                          "other features)"},
    "metric": {"type": ["string", "null"], "pattern": anchored(ID_PATTERN),
               "description": "the guardrail metric this reward is for; `primary` or absent: "
                              "the reward the experiment optimises"},
})
_EVENT_BATCH: Schema = {
    "type": "object", "additionalProperties": False, "required": ["events"],
    "properties": {"events": {
        "type": "array", "maxItems": MAX_EVENTS,
        "description": f"at most {MAX_EVENTS} (422 above), naming at most "
                       f"{MAX_EVENT_EXPERIMENTS} distinct experiments; each item is checked "
                       "on its own: "
                       "one that is not a valid RewardEvent, or names an unknown experiment or "
                       "arm, is reported in `rejected` and the others are still applied",
        "items": {"anyOf": [ref("RewardEvent"), {}]},
    }},
}
_EVENT_RESULT: Schema = closed_object(["accepted", "duplicates", "rejected"], {
    "accepted": {**COUNT, "maximum": MAX_EVENTS},
    "duplicates": {**COUNT, "maximum": MAX_EVENTS,
                   "description": "events whose id was seen before (counted once)"},
    "rejected": {"type": "array", "maxItems": MAX_EVENTS,
                 "items": closed_object(["index", "error"], {
                     "index": {**COUNT, "description": "position in `events`"},
                     "error": {"type": "string"}})},
})


# -- responses -------------------------------------------------------------------------------

ERROR_CLASSES: dict[int, type[errors.BanditError]] = {
    error.status: error for error in (
        errors.MalformedRequest, errors.Unauthorized, errors.Forbidden, errors.NotFound,
        errors.Conflict, errors.PayloadTooLarge, errors.UnsupportedMediaType,
        errors.InvalidValue, errors.StoreUnavailable)
}
def audit_log(subject: str, actions: list[str]) -> Schema:
    """An audit log's answer: ``{subject: id, entries: [...]}``, oldest first."""
    return closed_object([subject, "entries"], {
        subject: ID,
        "entries": {"type": "array", "items": closed_object(
            ["version", "at", "actor", "action", "changes", "reason"], {
                "version": {**VERSION, "description": "the version the change produced"},
                "at": {"type": "number", "description": "epoch seconds"},
                "actor": {"type": "string",
                          "description": "the API key's name, or `anonymous`"},
                "action": {"enum": actions},
                "changes": CHANGES,
                "reason": {"type": ["string", "null"]}})}})


def errors_for(*statuses: int) -> dict[str, Any]:
    return {str(status): {"$ref": f"#/components/responses/{ERROR_CLASSES[status].__name__}"}
            for status in statuses}


def ok(schema: Schema, status: int = 200, description: str = "success",
        headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description,
                                "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return {str(status): response}


def text(media_types: list[str], description: str) -> dict[str, Any]:
    return {"200": {"description": description,
                    "content": {media: {"schema": {"type": "string"}} for media in media_types}}}


def json_body(schema: Schema) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}




#: The named schemas of this module, for the document's ``components``.
COMPONENTS: dict[str, Schema] = {
    "Experiment": _EXPERIMENT, "ChangedExperiment": _PATCHED_EXPERIMENT,
    "ArchiveState": _ARCHIVE_STATE,
    "ExperimentList": _EXPERIMENT_LIST, "NewExperiment": _NEW_EXPERIMENT,
    "ExperimentChange": _PATCH, "AllocateRequest": _ALLOCATE, "Allocation": _ALLOCATION,
    "RewardEvent": _EVENT, "EventBatch": _EVENT_BATCH, "EventResult": _EVENT_RESULT,
}
