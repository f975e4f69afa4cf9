"""The OpenAPI 3.1 document served at ``/openapi.json``: the API as it really is.

Limits and patterns come from the modules that enforce them (``bandit.inputs``,
``bandit.model``, ``bandit.serving.advisor``, ``bandit.serving.history``,
``bandit.api.auth``), so the document follows them when they change;
``tests/test_schemathesis.py`` fuzzes a real service against it.

Two variants: with API keys configured every ``/v1`` operation and ``/metrics`` declare the
bearer scheme, the scope they need (``x-scopes``) and their 401/403 answers; a service running
open (no keys) declares none of that, because it answers every request without looking at
credentials.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from bandit import __version__, errors
from bandit.api.auth import SCOPES
from bandit.inputs import (
    DEFAULT_LIST_PAGE,
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
    GAUSSIAN_PRIOR,
    ID_PATTERN,
    MAX_ABS_REWARD,
    MAX_ARMS,
    MAX_PRIOR_PARAMETER,
    MIN_ARMS,
    MIN_GAUSSIAN_ALPHA,
    MIN_PRIOR_PARAMETER,
    REWARDS,
)
from bandit.serving import advisor
from bandit.serving.history import MAX_LIMIT as MAX_HISTORY_SAMPLES
from bandit.tokens import DECISION_ID_PATTERN

Schema = dict[str, Any]

_BEARER = "bearerAuth"


def _anchored(pattern: re.Pattern[str]) -> str:
    """A Python ``fullmatch`` pattern as a JSON Schema (ECMA 262, unanchored) pattern."""
    return f"^(?:{pattern.pattern})$"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(required: list[str], properties: dict[str, Any], **extra: Any) -> Schema:
    """A closed object: every field a response has is documented, and only those."""
    return {"type": "object", "additionalProperties": False, "required": required,
            "properties": properties, **extra}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


_ID: Schema = {"type": "string", "pattern": _anchored(ID_PATTERN),
               "description": "experiment or arm id"}
_NUMBER: Schema = {"type": "number"}
_NULLABLE_NUMBER: Schema = {"type": ["number", "null"]}
_COUNT: Schema = {"type": "integer", "minimum": 0}
_SHARE: Schema = {"type": "number", "minimum": 0, "maximum": 1}
_OPEN_SHARE: Schema = {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}
_INTERVAL: Schema = {"type": "array", "items": _NUMBER, "minItems": 2, "maxItems": 2}
_ARM_STATE: Schema = {"enum": ["active", "paused"]}
_REWARD: Schema = {"enum": list(REWARDS)}
_PRIOR_VALUE: Schema = {"type": "number", "minimum": MIN_PRIOR_PARAMETER,
                        "maximum": MAX_PRIOR_PARAMETER}
_REWARD_VALUE: Schema = {"type": "number", "minimum": -MAX_ABS_REWARD, "maximum": MAX_ABS_REWARD}
_VERSION: Schema = {"type": "integer", "minimum": 1}
_CHANGES: Schema = {
    "type": "object",
    "description": "what changed, by setting: `exploration.epsilon`, `arms.<id>` (arm state), "
                   "`prior.<name>`, `attribution_window_s`, `status`",
    "additionalProperties": _object(["old", "new"], {"old": {}, "new": {}}),
}

_CONTROL: Schema = _object(["arm", "share"], {"arm": _ID, "share": _OPEN_SHARE},
                           description="a fixed share kept on a control or holdout arm")
_EXPLORATION_PROPERTIES: dict[str, Schema] = {
    "epsilon": {**_SHARE, "description": "share of decisions drawn uniformly at random"},
    "min_share": {**_SHARE, "description": "floor on every active arm's probability"},
    "max_share": {"type": "number", "exclusiveMinimum": 0, "maximum": 1,
                  "description": "cap on any arm's probability"},
    "temperature": {"type": "number", "minimum": 0.01, "maximum": 100,
                    "description": "posterior tempering: >1 explores more, <1 exploits more"},
    "half_life_s": {"type": ["number", "null"], "minimum": 1, "maximum": 1e10,
                    "description": "exponential forgetting of evidence; null = never"},
    "warmup": {"type": "integer", "minimum": 0, "maximum": 1_000_000,
               "description": "observations every arm needs before allocation adapts"},
    "top_two": {"type": ["number", "null"], "exclusiveMinimum": 0, "exclusiveMaximum": 1,
                "description": "top-two Thompson leader probability; null = plain Thompson"},
    "control": _nullable(_CONTROL),
}
_EXPLORATION_CHANGE: Schema = {
    "type": "object", "additionalProperties": False, "properties": _EXPLORATION_PROPERTIES,
    "description": "settings to change (the others keep their values); combinations are "
                   "checked too (422), e.g. `min_share` times the active arms must not exceed 1",
}

_ARM_IDS: Schema = {"type": "array", "items": _ID, "uniqueItems": True}
_ARM_CHANGES: Schema = {
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


_NEW_EXPERIMENT: Schema = {
    "type": "object", "additionalProperties": False,
    "required": ["id", "arms", "reward"],
    "properties": {
        "id": _ID,
        "arms": {**_ARM_IDS, "minItems": MIN_ARMS, "maxItems": MAX_ARMS},
        "reward": _REWARD,
        "prior": {"type": ["object", "null"],
                  "description": "bernoulli: Beta `alpha`, `beta`; gaussian: Normal-Gamma "
                                 "`mean`, `kappa`, `alpha`, `beta`; missing ones take their "
                                 "defaults"},
        "exploration": _EXPLORATION_CHANGE,
        "attribution_window_s": {"type": "number", "minimum": 1, "maximum": 90 * 86_400,
                                 "description": "how long a provisional decision can convert"},
    },
    # Which prior fields exist depends on the reward type.
    "allOf": [{"if": {"required": ["reward"], "properties": {"reward": {"const": reward}}},
               "then": {"properties": {"prior": _nullable(_prior(reward, fields))}}}
              for reward, fields in _PRIOR_FIELDS.items()],
}

_EXPERIMENT_PROPERTIES: dict[str, Schema] = {
    "id": _ID,
    "arms": {"type": "array", "minItems": MIN_ARMS, "maxItems": MAX_ARMS,
             "items": _object(["id", "state"], {"id": _ID, "state": _ARM_STATE})},
    "reward": _REWARD,
    "prior": {"type": "object", "additionalProperties": _NUMBER},
    "exploration": _object(list(_EXPLORATION_PROPERTIES), _EXPLORATION_PROPERTIES),
    "attribution_window_s": _NUMBER,
    "version": _VERSION,
    "created_at": {"type": "number", "description": "epoch seconds"},
    "updated_at": {"type": "number", "description": "epoch seconds"},
    "status": {"enum": ["active", "archived"]},
}
_EXPERIMENT: Schema = _object(list(_EXPERIMENT_PROPERTIES), _EXPERIMENT_PROPERTIES)
_PATCHED_EXPERIMENT: Schema = _object(
    [*_EXPERIMENT_PROPERTIES, "changes"], {**_EXPERIMENT_PROPERTIES, "changes": _CHANGES})
_EXPERIMENT_LIST: Schema = _object(["experiments", "next"], {
    "experiments": {
        "type": "array", "maxItems": MAX_LIST_PAGE,
        "items": _object(["id", "reward", "arms", "version", "status"], {
            "id": _ID, "reward": _REWARD,
            "arms": {"type": "integer", "minimum": MIN_ARMS, "maximum": MAX_ARMS,
                     "description": "number of arms"},
            "version": _VERSION, "status": {"enum": ["active", "archived"]}})},
    "next": {**_ID, "type": ["string", "null"],
             "description": "ask `?after=` this id for the next page; null on the last"}})

_PATCH: Schema = {
    "type": "object", "additionalProperties": False, "required": ["version"],
    "properties": {
        "version": {"type": "integer", "minimum": 1, "maximum": 2**53,
                    "description": "the version the change is based on (409 if not current)"},
        "exploration": _EXPLORATION_CHANGE,
        "arms": _ARM_CHANGES,
        "reason": {"type": ["string", "null"], "maxLength": 1000,
                   "description": "recorded in the audit log"},
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
                 "pattern": _anchored(UNIT_PATTERN),
                 "description": "user, session or other unit the decision is for (no control "
                                "characters)"},
        "sticky": {"type": "boolean",
                   "description": "the unit keeps the arm it first received (needs `unit`)"},
        "provisional": {"type": "boolean",
                        "description": "count as a failure now, convertible by a reward event "
                                       "naming the decision (bernoulli, single arm)"},
        "context": {"type": ["object", "null"], "description": "accepted, not used yet"},
    },
    "if": {"type": "object", "required": ["sticky"], "properties": {"sticky": {"const": True}}},
    "then": {"required": ["unit"], "properties": {"unit": {"type": "string"}}},
}

_DECISION_ID: Schema = {"type": "string", "pattern": _anchored(DECISION_ID_PATTERN)}
_PROPENSITY: Schema = {**_SHARE, "description": "probability the policy gave this arm (or this "
                                                 "ranked slate) when deciding"}
_DECISION: Schema = {"oneOf": [
    _object(["decision_id", "arm", "propensity"],
            {"decision_id": _DECISION_ID, "arm": _ID, "propensity": _PROPENSITY,
             "sticky": {"const": True, "description": "the unit's stored arm"}}),
    _object(["decision_id", "arms", "propensity", "position_propensities"],
            {"decision_id": _DECISION_ID,
             "arms": {"type": "array", "items": _ID, "minItems": 1, "maxItems": MAX_SLATE},
             "propensity": _PROPENSITY,
             "position_propensities": {
                 "type": "array", "items": _SHARE, "minItems": 1, "maxItems": MAX_SLATE,
                 "description": "probability of each position's arm given the arms above it"},
             "sticky": {"const": True}}),
]}
_ALLOCATION: Schema = _object(["decisions", "version"], {
    "decisions": {"type": "array", "items": _DECISION, "minItems": 1, "maxItems": MAX_DECISIONS},
    "version": {**_VERSION, "description": "the configuration version that decided"},
})

_EVENT: Schema = _object(["id", "experiment", "arm", "reward"], {
    "id": {"type": "string", "pattern": _anchored(EVENT_ID_PATTERN),
           "description": "idempotency key: the same id counts once within the dedup window"},
    "experiment": _ID,
    "arm": _ID,
    "reward": {**_REWARD_VALUE, "description": "in [0, 1] for bernoulli (else rejected in "
                                               "`rejected`)"},
    "decision_id": {**_DECISION_ID, "type": ["string", "null"],
                    "description": "the decision rewarded, as served (converts a provisional "
                                   "one); a service with `require_decision_ids` rejects events "
                                   "without one"},
    "unit": {"type": ["string", "null"], "minLength": 1, "maxLength": MAX_UNIT_LENGTH,
             "pattern": _anchored(UNIT_PATTERN)},
    "ts": {"type": ["number", "null"], "minimum": 0,
           "description": "when the reward happened (epoch seconds); with forgetting, older "
                          "rewards weigh less"},
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
        "items": {"anyOf": [_ref("RewardEvent"), {}]},
    }},
}
_EVENT_RESULT: Schema = _object(["accepted", "duplicates", "rejected"], {
    "accepted": {**_COUNT, "maximum": MAX_EVENTS},
    "duplicates": {**_COUNT, "maximum": MAX_EVENTS,
                   "description": "events whose id was seen before (counted once)"},
    "rejected": {"type": "array", "maxItems": MAX_EVENTS,
                 "items": _object(["index", "error"], {
                     "index": {**_COUNT, "description": "position in `events`"},
                     "error": {"type": "string"}})},
})

_STATS: Schema = _object(
    ["experiment", "version", "reward", "arms", "winner", "call_rule", "health"], {
        "experiment": _ID, "version": _VERSION, "reward": _REWARD,
        "arms": {"type": "array", "items": _object(
            ["arm", "state", "n", "served", "mean", "ci95", "p_best", "expected_loss", "share"],
            {"arm": _ID, "state": _ARM_STATE,
             "n": {"type": "number", "minimum": 0,
                   "description": "observations (fractional with forgetting)"},
             "served": {**_COUNT, "description": "decisions served"},
             "mean": _NULLABLE_NUMBER,
             "ci95": {"type": "array", "items": _NULLABLE_NUMBER, "minItems": 2, "maxItems": 2},
             "p_best": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
             "expected_loss": _NULLABLE_NUMBER,
             "share": {**_SHARE, "description": "current allocation probability"}})},
        "winner": _nullable(_object(["arm", "p_best", "expected_loss", "threshold", "max_loss"], {
            "arm": _ID, "p_best": _SHARE, "expected_loss": _NUMBER, "threshold": _SHARE,
            "max_loss": _NUMBER})),
        "call_rule": _object(["threshold", "max_loss"], {
            "threshold": _SHARE, "max_loss": {"type": "number", "minimum": 0}},
            description="what a winner call needs (also when there is no winner)"),
        "health": _object(["sample_ratio", "rewards"], {
            "sample_ratio": _nullable(_object(
                ["decisions", "chi2", "dof", "p_value", "ok", "expected", "observed"], {
                    "decisions": _COUNT, "chi2": _NUMBER, "dof": _COUNT, "p_value": _SHARE,
                    "ok": {"type": "boolean"},
                    "expected": {"type": "array", "items": _NUMBER},
                    "observed": {"type": "array", "items": _COUNT}},
                description="chi-square test of decisions served against the propensities, "
                            "interval by interval")),
            "rewards": _nullable(_object(
                ["observations", "unchanged_since", "decisions_since", "quiet_for_s", "stalled"], {
                    "observations": _NUMBER, "unchanged_since": _NUMBER,
                    "decisions_since": _NUMBER, "quiet_for_s": _NUMBER,
                    "stalled": {"type": "boolean"}},
                description="when rewards last arrived; stalled if decisions kept being served "
                            "without them")),
        }),
    })

_NUMBERS: Schema = {"type": "array", "items": _NUMBER}
_NULLABLE_NUMBERS: Schema = {"type": "array", "items": _NULLABLE_NUMBER}
_HISTORY: Schema = _object(["experiment", "interval_s", "samples"], {
    "experiment": _ID,
    "interval_s": {"type": "number", "description": "sampling interval"},
    "samples": {"type": "array", "maxItems": MAX_HISTORY_SAMPLES, "items": _object(
        ["t", "version", "arms", "share", "mean", "ci_low", "ci_high", "n", "served"], {
            "t": {"type": "number", "description": "server time of the sample, epoch seconds"},
            "version": _VERSION,
            "arms": {"type": "array", "items": _ID},
            "share": _NUMBERS, "mean": _NULLABLE_NUMBERS, "ci_low": _NULLABLE_NUMBERS,
            "ci_high": _NULLABLE_NUMBERS, "n": _NUMBERS,
            "served": {"type": "array", "items": _COUNT,
                       "description": "decisions served so far (cumulative)"}})},
})

_AUDIT: Schema = _object(["experiment", "entries"], {
    "experiment": _ID,
    "entries": {"type": "array", "items": _object(
        ["version", "at", "actor", "action", "changes", "reason"], {
            "version": {**_VERSION, "description": "the version the change produced"},
            "at": {"type": "number", "description": "epoch seconds"},
            "actor": {"type": "string", "description": "the API key's name, or `anonymous`"},
            "action": {"enum": ["create", "update", "archive"]},
            "changes": _CHANGES,
            "reason": {"type": ["string", "null"]}})},
})

_ADVISE: Schema = {
    "type": ["object", "null"], "additionalProperties": False,
    "description": "a proposal in the PATCH body's format (checked by the same code) and the "
                   "forecast's parameters",
    "properties": {
        "exploration": _EXPLORATION_CHANGE,
        "arms": _ARM_CHANGES,
        "decisions": {"type": ["integer", "null"], "minimum": advisor.MIN_DECISIONS,
                      "maximum": advisor.MAX_DECISIONS,
                      "description": "horizon; default an hour of the measured traffic. A "
                                     f"forecast may take at most about {advisor.MAX_SECONDS:g} "
                                     "s of CPU (422 above)"},
        "traffic_per_s": {"type": ["number", "null"], "minimum": advisor.MIN_TRAFFIC_PER_S,
                          "maximum": advisor.MAX_TRAFFIC_PER_S,
                          "description": "default: measured (422 when nothing was served)"},
        "reward_delay_s": {"type": ["number", "null"], "minimum": 0, "maximum": 30 * 86_400,
                           "description": "default: measured"},
        "reps": {"type": "integer", "minimum": 10, "maximum": advisor.MAX_REPS,
                 "description": f"simulated futures (default {advisor.DEFAULT_REPS})"},
        "seed": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
        "threshold": {"type": "number", "minimum": 0.5, "maximum": 1,
                      "description": "P(best) a winner call needs (default 0.95)"},
        "max_loss": {"type": ["number", "null"], "minimum": 0,
                     "description": "largest expected loss of a winner (default: as in stats)"},
    },
}
_BAND: Schema = _object(["mean", "low", "high"], dict.fromkeys(("mean", "low", "high"), _NUMBERS),
                        description="per checkpoint: mean over the simulated futures, 10th and "
                                    "90th percentiles")
_MEDIAN_RANGE: Schema = _nullable(_object(["median", "range80"],
                                          {"median": _NUMBER, "range80": _INTERVAL}))
_FORECAST_SCENARIO: Schema = _object(
    ["regret", "regret_curve", "shares", "best_arm_rate", "winner_call"], {
        "regret": _object(["mean", "ci95", "range80"],
                          {"mean": _NUMBER, "ci95": _INTERVAL, "range80": _INTERVAL},
                          description="expected regret (reward units) over the horizon: mean, "
                                      "its 95% Monte Carlo interval, 10th-90th percentile"),
        "regret_curve": _BAND,
        "shares": {"type": "object", "additionalProperties": _BAND,
                   "description": "each arm's share of the decisions between checkpoints"},
        "best_arm_rate": _object(["mean", "ci95"], {"mean": _NUMBER, "ci95": _INTERVAL}),
        "winner_call": _object(["probability", "ci95", "correct", "decisions", "seconds"], {
            "probability": {**_SHARE, "description": "P(a winner is called in the horizon)"},
            "ci95": _INTERVAL,
            "correct": {"type": ["number", "null"], "minimum": 0, "maximum": 1,
                        "description": "P(the called arm is the truly best | a call)"},
            "decisions": _MEDIAN_RANGE, "seconds": _MEDIAN_RANGE}),
    })
_ADVICE: Schema = _object(
    ["experiment", "version", "changes", "assumptions", "checkpoints", "arms", "current",
     "proposed", "difference"], {
        "experiment": _ID,
        "version": {**_VERSION, "description": "the version the forecast started from"},
        "changes": _CHANGES,
        "assumptions": _object(
            ["decisions", "traffic_per_s", "traffic_source", "reward_delay_s", "delay_source",
             "reward_coverage", "horizon_s", "update_every", "reps", "seed", "threshold",
             "max_loss", "notes"], {
                "decisions": {"type": "integer", "minimum": advisor.MIN_DECISIONS},
                "traffic_per_s": _NUMBER,
                "traffic_source": {"enum": ["given", "measured"]},
                "reward_delay_s": _NUMBER,
                "delay_source": {"enum": ["given", "measured", "assumed"]},
                "reward_coverage": _NULLABLE_NUMBER,
                "horizon_s": _NUMBER,
                "update_every": {"type": "integer", "minimum": 1},
                "reps": {"type": "integer"}, "seed": {"type": "integer"},
                "threshold": _NUMBER, "max_loss": _NUMBER,
                "notes": {"type": "array", "items": {"type": "string"}}}),
        "checkpoints": _object(["decisions", "seconds"], {
            "decisions": {"type": "array", "items": {"type": "integer"}},
            "seconds": _NUMBERS}),
        "arms": {"type": "array", "items": _ID},
        "current": _FORECAST_SCENARIO,
        "proposed": _FORECAST_SCENARIO,
        "difference": _object(["regret", "p_proposed_better"], {
            "regret": _object(["mean", "ci95"], {"mean": _NUMBER, "ci95": _INTERVAL}),
            "p_proposed_better": _SHARE}),
    })

_WHOAMI_PROPERTIES: dict[str, Schema] = {
    "name": {"type": "string", "description": "the key's name (`anonymous` when open)"},
    "scopes": {"type": "array", "uniqueItems": True, "items": {"enum": list(SCOPES)}},
}


# -- responses -------------------------------------------------------------------------------

_ERRORS: dict[int, type[errors.BanditError]] = {
    error.status: error for error in (
        errors.MalformedRequest, errors.Unauthorized, errors.Forbidden, errors.NotFound,
        errors.Conflict, errors.PayloadTooLarge, errors.UnsupportedMediaType,
        errors.InvalidValue, errors.StoreUnavailable)
}
_WHY = {
    400: "the body is not JSON",
    401: "no valid API key (`Authorization: Bearer KEY`)",
    403: "the API key lacks the scope this operation needs",
    404: "no such experiment (or, for decisions and forecasts, it is archived)",
    409: "the experiment id exists (create), or `version` is not the current one (change)",
    413: "the body is over its size limit (BANDIT_MAX_BODY_BYTES)",
    415: "a body whose Content-Type is not application/json",
    422: "well-formed but invalid values; the message names the field and what is wrong",
    503: "Redis cannot be reached (for decisions: for longer than the service may serve "
         "from its last known posteriors); retry after the given seconds",
}
_HEADERS = {
    401: {"WWW-Authenticate": {"required": True, "schema": {"type": "string",
                                                            "pattern": "^Bearer"}}},
    503: {"Retry-After": {"required": True, "schema": {"type": "string",
                                                       "pattern": "^[0-9]+$"}}},
}


def _error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _WHY[status],
        "content": {"application/json": {"schema": _object(["error"], {"error": _object(
            ["code", "message"],
            {"code": {"const": _ERRORS[status].code},
             "message": {"type": "string", "description": "what is wrong, for people"}})})}},
    }
    if status in _HEADERS:
        response["headers"] = _HEADERS[status]
    return response


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): {"$ref": f"#/components/responses/{_ERRORS[status].__name__}"}
            for status in statuses}


def _ok(schema: Schema, status: int = 200, description: str = "success",
        headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description,
                                "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return {str(status): response}


def _text(media_types: list[str], description: str) -> dict[str, Any]:
    return {"200": {"description": description,
                    "content": {media: {"schema": {"type": "string"}} for media in media_types}}}


def _body(schema: Schema) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_PATH_ID = [{"name": "id", "in": "path", "required": True, "schema": _ID}]

_SCHEMAS: dict[str, Schema] = {
    "Experiment": _EXPERIMENT, "ChangedExperiment": _PATCHED_EXPERIMENT,
    "ExperimentList": _EXPERIMENT_LIST, "NewExperiment": _NEW_EXPERIMENT,
    "ExperimentChange": _PATCH, "AllocateRequest": _ALLOCATE, "Allocation": _ALLOCATION,
    "RewardEvent": _EVENT, "EventBatch": _EVENT_BATCH, "EventResult": _EVENT_RESULT,
    "Stats": _STATS, "History": _HISTORY, "Audit": _AUDIT, "AdviseRequest": _ADVISE,
    "Advice": _ADVICE,
}


# -- the document ----------------------------------------------------------------------------


def document(*, keys: bool = True) -> dict[str, Any]:
    """The API description; ``keys``: whether the service enforces API keys."""

    def operation(summary: str, scope: str | None, responses: dict[str, Any], *,
                  body: dict[str, Any] | None = None, redis: bool = True,
                  **extra: Any) -> dict[str, Any]:
        """An operation; ``scope`` None: open, "any": any valid key, else the key scope."""
        result: dict[str, Any] = {"summary": summary, **extra}
        if body is not None:
            result["requestBody"] = body
            responses = {**responses, **_errors(400, 413, 415)}
        if redis:
            responses = {**responses, **_errors(503)}
        if scope is not None and keys:
            result["security"] = [{_BEARER: [] if scope == "any" else [scope]}]
            result["x-scopes"] = [] if scope == "any" else [scope]
            result["description"] = ("Needs an API key." if scope == "any" else
                                     f"Needs an API key with the `{scope}` scope.")
            responses = {**responses, **_errors(*(401,) if scope == "any" else (401, 403))}
        else:
            result["security"] = []
        result["responses"] = dict(sorted(responses.items()))
        return result

    experiment_path = {"parameters": _PATH_ID}
    paths: dict[str, Any] = {
        "/v1/experiments": {
            "post": operation("Create an experiment", "admin",
                              {**_ok(_ref("Experiment"), 201, "created"),
                               **_errors(409, 422)},
                              body=_body(_ref("NewExperiment"))),
            "get": operation("List experiments, a page at a time in id order", "read",
                             {**_ok(_ref("ExperimentList")), **_errors(422)},
                             parameters=[
                                 {"name": "after", "in": "query", "required": False,
                                  "schema": _ID, "description": "the `next` of the page before"},
                                 {"name": "limit", "in": "query", "required": False,
                                  "schema": {"type": "integer", "minimum": 1,
                                             "maximum": MAX_LIST_PAGE},
                                  "description": f"experiments per page (default "
                                                 f"{DEFAULT_LIST_PAGE})"}]),
        },
        "/v1/experiments/{id}": {
            **experiment_path,
            "get": operation("Show an experiment", "read",
                             {**_ok(_ref("Experiment")), **_errors(404, 422)}),
            "patch": operation(
                "Change settings, add, pause or resume arms (audited)", "admin",
                {**_ok(_ref("ChangedExperiment"), description="the changed experiment and "
                                                               "what changed"),
                 **_errors(404, 409, 422)},
                body=_body(_ref("ExperimentChange"))),
            "delete": operation("Archive an experiment (archiving twice is no change)", "admin",
                                {**_ok(_ref("Experiment")), **_errors(404, 422)}),
        },
        "/v1/experiments/{id}/allocate": {
            **experiment_path,
            "post": operation(
                "Decisions: arms (or ranked slates of k arms) with propensities", "decide",
                {**_ok(_ref("Allocation"), headers={"X-Bandit-Stale": {
                    "description": "seconds since the posteriors were refreshed, when they are "
                                   "stale (Redis unreachable)",
                    "schema": {"type": "string", "pattern": "^[0-9]+\\.[0-9]$"}}}),
                 **_errors(404, 422)},
                body={"required": False,
                      "content": {"application/json": {"schema": _ref("AllocateRequest")}}}),
        },
        "/v1/events": {
            "post": operation("Report reward events (idempotent by event id)", "decide",
                              {**_ok(_ref("EventResult")), **_errors(422)},
                              body=_body(_ref("EventBatch"))),
        },
        "/v1/experiments/{id}/stats": {
            "parameters": [
                *_PATH_ID,
                {"name": "threshold", "in": "query", "required": False,
                 "schema": {"type": "number", "minimum": 0.5, "maximum": 1},
                 "description": "P(best) a winner needs (default 0.95)"},
                {"name": "max_loss", "in": "query", "required": False,
                 "schema": {"type": "number", "minimum": 0},
                 "description": "largest expected loss of a winner, in reward units (default "
                                "1% of the best mean)"}],
            "get": operation("Per-arm statistics, shares, a winner call and serving health",
                             "read", {**_ok(_ref("Stats")), **_errors(404, 422)}),
        },
        "/v1/experiments/{id}/history": {
            "parameters": [
                *_PATH_ID,
                {"name": "since", "in": "query", "required": False,
                 "schema": {"type": "number", "minimum": 0},
                 "description": "only samples after this epoch time"},
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_HISTORY_SAMPLES},
                 "description": "at most this many of the newest samples"}],
            "get": operation("Allocation shares, posteriors and traffic sampled over time",
                             "read", {**_ok(_ref("History")), **_errors(404, 422)}),
        },
        "/v1/experiments/{id}/audit": {
            **experiment_path,
            "get": operation("Configuration changes, oldest first (who, when, old and new)",
                             "read", {**_ok(_ref("Audit")), **_errors(404, 422)}),
        },
        "/v1/experiments/{id}/advise": {
            **experiment_path,
            "post": operation(
                "Tuning advisor: forecast the current settings against a proposed change "
                "(nothing is changed)", "admin",
                {**_ok(_ref("Advice")), **_errors(404, 422)}, body=_body(_ref("AdviseRequest"))),
        },
        "/v1/whoami": {
            "get": operation(
                "The API key's name and scopes", "any",
                _ok(_object(["name", "scopes", "auth"], {
                    **_WHOAMI_PROPERTIES,
                    "auth": {"const": "keys" if keys else "open",
                             "description": "`open`: the service runs without API keys"}})),
                redis=False),
        },
        "/metrics": {"get": operation("Prometheus metrics", "read",
                                      _text(["text/plain"], "text exposition format"),
                                      redis=False)},
        "/healthz": {"get": operation(
            "Liveness", None, _ok(_object(["status"], {"status": {"const": "ok"}})),
            redis=False)},
        "/readyz": {"get": operation(
            "Readiness (Redis reachable)", None,
            {**_ok(_object(["status"], {"status": {"const": "ready"}})),
             "503": {"description": "Redis cannot be reached",
                     "content": {"application/json": {"schema": _object(
                         ["status", "reason"], {"status": {"const": "unavailable"},
                                                "reason": {"type": "string"}})}}}},
            redis=False)},
        "/openapi.json": {"get": operation("This document", None, _ok({"type": "object"}),
                                           redis=False)},
        "/": {"get": operation("The operator dashboard", None,
                               _text(["text/html"], "the dashboard's page"), redis=False)},
        "/dashboard/{name}": {
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string"},
                            "description": "a file name, e.g. `app.js`"}],
            "get": operation(
                "The dashboard's scripts, styles and images", None,
                {**_text(["text/html", "text/javascript", "text/css", "image/svg+xml"],
                         "a static file"),
                 **_errors(404)}, redis=False)},
    }
    result: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Adaptive allocation service", "version": __version__,
                 "description": "Errors are `{error: {code, message}}`. " + (
                     "Every /v1 operation and /metrics need `Authorization: Bearer KEY`."
                     if keys else "This service runs without API keys: nothing needs one.")},
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "responses": {error.__name__: _error_response(status)
                          for status, error in _ERRORS.items() if keys or status not in (401, 403)},
        },
    }
    if keys:
        result["components"]["securitySchemes"] = {_BEARER: {
            "type": "http", "scheme": "bearer",
            "description": "an API key from `bandit keys new`; each key has scopes: "
                           "`decide` (allocate, events), `read` (show, list, stats, history, "
                           "audit, metrics), `admin` (create, change, archive, advise)"}}
    # A copy (a JSON round trip is the fast deep copy): the schemas above are shared module
    # constants, and callers may change what they get.
    copied: dict[str, Any] = orjson.loads(orjson.dumps(result))
    return copied
