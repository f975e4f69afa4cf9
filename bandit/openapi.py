"""The OpenAPI 3.1 document served at ``/openapi.json``: the API as it really is."""

from __future__ import annotations

from typing import Any

from bandit import __version__
from bandit.inputs import MAX_DECISIONS, MAX_EVENTS, MAX_SLATE, MAX_UNIT_LENGTH
from bandit.model import MAX_ARMS, MIN_ARMS

_ID = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$"}
_NUMBER = {"type": "number"}
_SHARE = {"type": "number", "minimum": 0, "maximum": 1}

_EXPLORATION = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "epsilon": {**_SHARE, "description": "share of decisions drawn uniformly at random"},
        "min_share": {**_SHARE, "description": "floor on every active arm's probability"},
        "max_share": {"type": "number", "exclusiveMinimum": 0, "maximum": 1,
                      "description": "cap on any arm's probability"},
        "temperature": {"type": "number", "minimum": 0.01, "maximum": 100,
                        "description": ">1 explores more, <1 exploits more"},
        "half_life_s": {"type": ["number", "null"], "minimum": 1,
                        "description": "exponential forgetting of evidence; null = never"},
        "warmup": {"type": "integer", "minimum": 0, "maximum": 1_000_000,
                   "description": "observations every arm needs before allocation adapts"},
        "top_two": {"type": ["number", "null"], "exclusiveMinimum": 0, "exclusiveMaximum": 1,
                    "description": "top-two Thompson leader probability; null = plain"},
        "control": {
            "oneOf": [
                {"type": "null"},
                {"type": "object", "additionalProperties": False, "required": ["arm", "share"],
                 "properties": {"arm": _ID, "share": {"type": "number", "exclusiveMinimum": 0,
                                                      "exclusiveMaximum": 1}}},
            ],
        },
    },
}

_EXPERIMENT = {
    "type": "object",
    "required": ["id", "arms", "reward", "prior", "exploration", "version", "status"],
    "properties": {
        "id": _ID,
        "arms": {"type": "array", "items": {
            "type": "object", "required": ["id", "state"],
            "properties": {"id": _ID, "state": {"enum": ["active", "paused"]}}}},
        "reward": {"enum": ["bernoulli", "gaussian"]},
        "prior": {"type": "object", "additionalProperties": _NUMBER},
        "exploration": _EXPLORATION,
        "attribution_window_s": _NUMBER,
        "version": {"type": "integer", "minimum": 1},
        "created_at": _NUMBER,
        "updated_at": _NUMBER,
        "status": {"enum": ["active", "archived"]},
    },
}

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"],
                             "properties": {"code": {"type": "string"},
                                            "message": {"type": "string"}}}},
}

_DECISION = {
    "type": "object",
    "required": ["decision_id", "propensity"],
    "properties": {
        "decision_id": {"type": "string"},
        "arm": _ID,
        "arms": {"type": "array", "items": _ID},
        "propensity": {"type": "number", "minimum": 0, "maximum": 1,
                       "description": "probability the policy gave this arm (or ranked slate)"},
        "position_propensities": {"type": "array", "items": _NUMBER,
                                  "description": "probability of each slate position's arm "
                                                 "given the arms above it"},
        "sticky": {"type": "boolean"},
    },
}

_EVENT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "experiment", "arm", "reward"],
    "properties": {
        "id": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,128}$",
               "description": "idempotency key: the same id counts once within the dedup window"},
        "experiment": _ID,
        "arm": _ID,
        "reward": {"type": "number", "description": "[0, 1] for bernoulli; any finite number "
                                                    "for gaussian"},
        "decision_id": {"type": "string", "pattern": "^[dp][0-9a-z]{1,40}$"},
        "unit": {"type": "string", "minLength": 1, "maxLength": MAX_UNIT_LENGTH},
        "ts": {"type": "number", "minimum": 0,
               "description": "when the reward happened (epoch seconds); with forgetting, "
                              "older rewards weigh less"},
    },
}


_NUMBERS = {"type": "array", "items": {"type": ["number", "null"]}}
_HISTORY_SAMPLE = {
    "type": "object",
    "required": ["t", "version", "arms", "share", "mean", "ci_low", "ci_high", "n", "served"],
    "properties": {
        "t": {"type": "number", "description": "server time of the sample, epoch seconds"},
        "version": {"type": "integer"},
        "arms": {"type": "array", "items": _ID},
        "share": _NUMBERS, "mean": _NUMBERS, "ci_low": _NUMBERS, "ci_high": _NUMBERS,
        "n": _NUMBERS,
        "served": {"type": "array", "items": {"type": "integer"},
                   "description": "decisions served so far (cumulative)"},
    },
}

_AUDIT_ENTRY = {
    "type": "object",
    "required": ["version", "at", "actor", "action", "changes", "reason"],
    "properties": {
        "version": {"type": "integer", "description": "the version the change produced"},
        "at": {"type": "number", "description": "epoch seconds"},
        "actor": {"type": "string"},
        "action": {"enum": ["create", "update", "archive"]},
        "changes": {"type": "object", "additionalProperties": {
            "type": "object", "properties": {"old": {}, "new": {}}}},
        "reason": {"type": ["string", "null"]},
    },
}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): {"description": "error",
                          "content": {"application/json": {"schema": _ERROR}}}
            for status in statuses}


def _ok(schema: dict[str, Any], status: int = 200) -> dict[str, Any]:
    return {str(status): {"description": "success",
                          "content": {"application/json": {"schema": schema}}}}


def _body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


_PATH_ID = [{"name": "id", "in": "path", "required": True, "schema": _ID}]

_ARM_CHANGES = {"type": "object", "additionalProperties": False,
                "properties": {k: {"type": "array", "items": _ID}
                               for k in ("add", "pause", "resume")}}
_INTERVAL = {"type": "array", "items": _NUMBER, "minItems": 2, "maxItems": 2}
_BAND = {"type": "object", "required": ["mean", "low", "high"],
         "description": "per checkpoint: mean over the simulated futures, 10th and 90th "
                        "percentiles",
         "properties": {k: {"type": "array", "items": _NUMBER} for k in ("mean", "low", "high")}}
_MEDIAN_RANGE = {"type": ["object", "null"], "required": ["median", "range80"],
                 "properties": {"median": _NUMBER, "range80": _INTERVAL}}
_FORECAST_SCENARIO = {
    "type": "object",
    "required": ["regret", "regret_curve", "shares", "best_arm_rate", "winner_call"],
    "properties": {
        "regret": {"type": "object", "required": ["mean", "ci95", "range80"],
                   "description": "expected regret (reward units) over the horizon: mean, its "
                                  "95% Monte Carlo interval, 10th-90th percentile of futures",
                   "properties": {"mean": _NUMBER, "ci95": _INTERVAL, "range80": _INTERVAL}},
        "regret_curve": _BAND,
        "shares": {"type": "object", "additionalProperties": _BAND,
                   "description": "each arm's share of the decisions between checkpoints"},
        "best_arm_rate": {"type": "object", "required": ["mean", "ci95"],
                          "properties": {"mean": _NUMBER, "ci95": _INTERVAL}},
        "winner_call": {
            "type": "object",
            "required": ["probability", "ci95", "correct", "decisions", "seconds"],
            "properties": {
                "probability": {**_SHARE, "description": "P(a winner is called in the horizon)"},
                "ci95": _INTERVAL,
                "correct": {"type": ["number", "null"],
                            "description": "P(the called arm is the truly best | a call)"},
                "decisions": _MEDIAN_RANGE, "seconds": _MEDIAN_RANGE}},
    },
}
_ADVICE = {
    "type": "object",
    "required": ["experiment", "version", "changes", "assumptions", "checkpoints", "arms",
                 "current", "proposed", "difference"],
    "properties": {
        "experiment": _ID,
        "version": {"type": "integer", "description": "the version the forecast started from"},
        "changes": {"type": "object"},
        "assumptions": {"type": "object", "required": [
            "decisions", "traffic_per_s", "traffic_source", "reward_delay_s", "delay_source",
            "horizon_s", "update_every", "reps", "seed", "threshold", "max_loss", "notes"]},
        "checkpoints": {"type": "object", "required": ["decisions", "seconds"],
                        "properties": {"decisions": {"type": "array",
                                                     "items": {"type": "integer"}},
                                       "seconds": {"type": "array", "items": _NUMBER}}},
        "arms": {"type": "array", "items": _ID},
        "current": _FORECAST_SCENARIO,
        "proposed": _FORECAST_SCENARIO,
        "difference": {"type": "object", "required": ["regret", "p_proposed_better"],
                       "properties": {"regret": {"type": "object",
                                                 "properties": {"mean": _NUMBER,
                                                                "ci95": _INTERVAL}},
                                      "p_proposed_better": _SHARE}},
    },
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Adaptive allocation service", "version": __version__},
        "paths": {
            "/v1/experiments": {
                "post": {
                    "summary": "Create an experiment",
                    "requestBody": _body({
                        "type": "object", "additionalProperties": False,
                        "required": ["id", "arms", "reward"],
                        "properties": {
                            "id": _ID,
                            "arms": {"type": "array", "items": _ID, "minItems": MIN_ARMS,
                                     "maxItems": MAX_ARMS, "uniqueItems": True},
                            "reward": {"enum": ["bernoulli", "gaussian"]},
                            "prior": {"type": "object", "additionalProperties": _NUMBER},
                            "exploration": _EXPLORATION,
                            "attribution_window_s": {"type": "number", "minimum": 1,
                                                     "maximum": 7_776_000},
                        },
                    }),
                    "responses": {**_ok(_EXPERIMENT, 201), **_errors(400, 409, 413, 422, 503)},
                },
                "get": {
                    "summary": "List experiments",
                    "responses": {**_ok({"type": "object", "properties": {
                        "experiments": {"type": "array", "items": {"type": "object"}}}}),
                        **_errors(503)},
                },
            },
            "/v1/experiments/{id}": {
                "parameters": _PATH_ID,
                "get": {"summary": "Show an experiment",
                        "responses": {**_ok(_EXPERIMENT), **_errors(404, 422, 503)}},
                "patch": {
                    "summary": "Change settings, add, pause or resume arms",
                    "requestBody": _body({
                        "type": "object", "additionalProperties": False, "required": ["version"],
                        "properties": {
                            "version": {"type": "integer", "minimum": 1},
                            "exploration": _EXPLORATION,
                            "arms": _ARM_CHANGES,
                            "reason": {"type": "string", "maxLength": 1000},
                        },
                    }),
                    "responses": {**_ok(_EXPERIMENT), **_errors(400, 404, 409, 413, 422, 503)},
                },
                "delete": {"summary": "Archive an experiment",
                           "responses": {**_ok(_EXPERIMENT), **_errors(404, 422, 503)}},
            },
            "/v1/experiments/{id}/allocate": {
                "parameters": _PATH_ID,
                "post": {
                    "summary": "Decisions: arms (or ranked slates of k arms) with propensities",
                    "requestBody": _body({
                        "type": "object", "additionalProperties": False,
                        "properties": {
                            "n": {"type": "integer", "minimum": 1, "maximum": MAX_DECISIONS},
                            "k": {"type": "integer", "minimum": 1, "maximum": MAX_SLATE},
                            "unit": {"type": "string", "minLength": 1,
                                     "maxLength": MAX_UNIT_LENGTH},
                            "sticky": {"type": "boolean"},
                            "provisional": {"type": "boolean"},
                            "context": {"type": "object"},
                        },
                    }, required=False),
                    "responses": {
                        **_ok({"type": "object", "required": ["decisions", "version"],
                               "properties": {"decisions": {"type": "array", "items": _DECISION},
                                              "version": {"type": "integer"}}}),
                        **_errors(400, 404, 413, 422, 503),
                    },
                },
            },
            "/v1/events": {
                "post": {
                    "summary": "Report reward events (idempotent by event id)",
                    "requestBody": _body({
                        "type": "object", "additionalProperties": False, "required": ["events"],
                        "properties": {"events": {"type": "array", "maxItems": MAX_EVENTS,
                                                  "items": _EVENT}},
                    }),
                    "responses": {
                        **_ok({"type": "object",
                               "required": ["accepted", "duplicates", "rejected"],
                               "properties": {
                                   "accepted": {"type": "integer"},
                                   "duplicates": {"type": "integer"},
                                   "rejected": {"type": "array", "items": {
                                       "type": "object", "required": ["index", "error"],
                                       "properties": {"index": {"type": "integer"},
                                                      "error": {"type": "string"}}}}}}),
                        **_errors(400, 413, 422, 503),
                    },
                },
            },
            "/v1/experiments/{id}/stats": {
                "parameters": [*_PATH_ID,
                               {"name": "threshold", "in": "query", "required": False,
                                "schema": {"type": "number", "minimum": 0.5, "maximum": 1},
                                "description": "P(best) a winner needs (default 0.95)"},
                               {"name": "max_loss", "in": "query", "required": False,
                                "schema": {"type": "number", "minimum": 0},
                                "description": "largest expected loss of a winner, in reward "
                                               "units (default 1% of the best mean)"}],
                "get": {
                    "summary": "Per-arm statistics, shares, a winner call and serving health",
                    "responses": {**_ok({"type": "object", "properties": {
                        "arms": {
                            "type": "array", "items": {"type": "object", "properties": {
                                "arm": _ID, "state": {"enum": ["active", "paused"]},
                                "n": _NUMBER, "served": {"type": "integer"},
                                "mean": {"type": ["number", "null"]},
                                "ci95": {"type": "array",
                                         "items": {"type": ["number", "null"]}},
                                "p_best": {"type": ["number", "null"]},
                                "expected_loss": {"type": ["number", "null"]},
                                "share": _NUMBER}}},
                        "winner": {"type": ["object", "null"], "properties": {
                            "arm": _ID, "p_best": _NUMBER, "expected_loss": _NUMBER,
                            "threshold": _NUMBER, "max_loss": _NUMBER}},
                        "call_rule": {"type": "object", "required": ["threshold", "max_loss"],
                                      "description": "what a winner call needs (also when "
                                                     "there is no winner)",
                                      "properties": {"threshold": _NUMBER,
                                                     "max_loss": _NUMBER}},
                        "health": {"type": "object", "properties": {
                            "sample_ratio": {"type": ["object", "null"], "description":
                                             "chi-square test of decisions served against "
                                             "the propensities, interval by interval"},
                            "rewards": {"type": ["object", "null"], "description":
                                        "when rewards last arrived; stalled if decisions "
                                        "kept being served without them"}}}}}),
                        **_errors(404, 422, 503)},
                },
            },
            "/v1/experiments/{id}/history": {
                "parameters": [*_PATH_ID,
                               {"name": "since", "in": "query", "required": False,
                                "schema": {"type": "number", "minimum": 0},
                                "description": "only samples after this epoch time"},
                               {"name": "limit", "in": "query", "required": False,
                                "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
                                "description": "at most this many of the newest samples"}],
                "get": {
                    "summary": "Allocation shares, posteriors and traffic sampled over time",
                    "responses": {**_ok({"type": "object",
                                         "required": ["experiment", "interval_s", "samples"],
                                         "properties": {"experiment": _ID,
                                                        "interval_s": _NUMBER,
                                                        "samples": {"type": "array",
                                                                    "items": _HISTORY_SAMPLE}}}),
                                  **_errors(404, 422, 503)},
                },
            },
            "/v1/experiments/{id}/audit": {
                "parameters": _PATH_ID,
                "get": {
                    "summary": "Configuration changes, oldest first (who, when, old and new)",
                    "responses": {**_ok({"type": "object", "required": ["experiment", "entries"],
                                         "properties": {"experiment": _ID, "entries": {
                                             "type": "array", "items": _AUDIT_ENTRY}}}),
                                  **_errors(404, 422, 503)},
                },
            },
            "/v1/experiments/{id}/advise": {
                "parameters": _PATH_ID,
                "post": {
                    "summary": "Tuning advisor: forecast the current settings against a "
                               "proposed change (nothing is changed)",
                    "requestBody": _body({
                        "type": "object", "additionalProperties": False,
                        "properties": {
                            "exploration": _EXPLORATION,
                            "arms": _ARM_CHANGES,
                            "decisions": {"type": "integer", "minimum": 10,
                                          "maximum": 1_000_000,
                                          "description": "horizon; default an hour of traffic"},
                            "traffic_per_s": {"type": "number", "exclusiveMinimum": 0,
                                              "maximum": 1e7,
                                              "description": "default: measured"},
                            "reward_delay_s": {"type": "number", "minimum": 0,
                                               "maximum": 2_592_000,
                                               "description": "default: measured"},
                            "reps": {"type": "integer", "minimum": 10, "maximum": 2000},
                            "seed": {"type": "integer", "minimum": 0},
                            "threshold": {"type": "number", "minimum": 0.5, "maximum": 1},
                            "max_loss": {"type": "number", "minimum": 0},
                        },
                    }, required=False),
                    "responses": {**_ok(_ADVICE), **_errors(400, 404, 413, 422, 503)},
                },
            },
            "/": {"get": {"summary": "The operator dashboard",
                          "responses": {"200": {"description": "HTML page"}}}},
            "/dashboard/{name}": {
                "parameters": [{"name": "name", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "get": {"summary": "The dashboard's scripts and styles",
                        "responses": {"200": {"description": "a static file"},
                                      **_errors(404)}}},
            "/metrics": {"get": {"summary": "Prometheus metrics",
                                 "responses": {"200": {"description": "text exposition"}}}},
            "/healthz": {"get": {"summary": "Liveness", "responses": _ok({"type": "object"})}},
            "/readyz": {"get": {"summary": "Readiness (Redis reachable)",
                                "responses": {**_ok({"type": "object"}),
                                              "503": {"description": "not ready"}}}},
            "/openapi.json": {"get": {"summary": "This document",
                                      "responses": _ok({"type": "object"})}},
        },
    }
