"""JSON Schemas of layers, targeting rules, fixed experiments' weights and assignment (the
``/v1/layers`` and ``/v1/assign`` operations), for the OpenAPI document.

Limits come from the modules that enforce them (``bandit.layers``, ``bandit.targeting``,
``bandit.inputs``), so the document follows them when they change.
"""

from __future__ import annotations

from bandit.api.schemas import (
    CHANGES,
    CONTEXT,
    ID,
    SHARE,
    SHOWN,
    VERSION,
    Schema,
    anchored,
    audit_log,
    closed_object,
    nullable,
)
from bandit.assignment import BUCKETS
from bandit.inputs import (
    MAX_ASSIGN_UNITS,
    MAX_ATTRIBUTE_LENGTH,
    MAX_ATTRIBUTES,
    MAX_UNIT_LENGTH,
    UNIT_PATTERN,
)
from bandit.layers import MAX_EXPERIMENTS, MAX_RANGES
from bandit.patches import MAX_REASON_LENGTH
from bandit.serving.layers import ARCHIVED, MISSING, TARGETING, UNASSIGNED

__all__ = ["COMPONENTS"]

_RANGE: Schema = {"type": "array", "minItems": 2, "maxItems": 2,
                  "items": {"type": "integer", "minimum": 0, "maximum": BUCKETS},
                  "description": f"[start, end): buckets start to end - 1, 0 <= start < end <= "
                                 f"{BUCKETS}"}
_RANGES: Schema = {"type": "array", "minItems": 1, "maxItems": MAX_RANGES, "items": _RANGE}


def _by_experiment(value: Schema, description: str) -> Schema:
    return {"type": "object", "maxProperties": MAX_EXPERIMENTS,
            "propertyNames": {"pattern": ID["pattern"]}, "additionalProperties": value,
            "description": description}


_SALT: Schema = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": SHOWN,
                 "description": "hashed with each unit id into its bucket (default: the id); "
                                "fixed at create"}
_DEFAULT: Schema = {"type": ["string", "null"], "minLength": 1, "maxLength": 64,
                    "pattern": SHOWN,
                    "description": "what a unit in no experiment of the layer gets"}
_REASON: Schema = {"type": ["string", "null"], "maxLength": MAX_REASON_LENGTH,
                   "description": "recorded in the audit log"}
_NEW_LAYER: Schema = closed_object(["id"], {
    "id": {**ID, "description": "layer id"}, "salt": _SALT, "default": _DEFAULT,
    "ranges": _by_experiment(_RANGES, "experiment id -> its bucket ranges (disjoint from "
                                      "the others'; each experiment must exist and be in no "
                                      "other layer)"),
    "reason": _REASON})
_LAYER_CHANGE: Schema = closed_object(["version"], {
    "version": {"type": "integer", "minimum": 1, "maximum": 2**53,
                "description": "the version the change is based on (409 if not current)"},
    "ranges": _by_experiment(nullable(_RANGES), "experiment id -> its new ranges (replacing "
                                                "its old ones), or null to take the "
                                                "experiment out of the layer"),
    "add": _by_experiment(_RANGES, "buckets given to an experiment (growing it moves nobody "
                                   "already in)"),
    "remove": _by_experiment(_RANGES, "buckets taken from an experiment (only the units in "
                                      "them leave it)"),
    "default": _DEFAULT, "reason": _REASON})
_LAYER_PROPERTIES: dict[str, Schema] = {
    "id": ID, "salt": _SALT, "default": _DEFAULT, "version": VERSION,
    "ranges": _by_experiment(_RANGES, "experiment id -> its bucket ranges"),
    "shares": _by_experiment(SHARE, "experiment id -> P(a unit is in it): its buckets / "
                                    f"{BUCKETS}"),
    "free": {"type": "array", "maxItems": MAX_EXPERIMENTS * MAX_RANGES + 1, "items": _RANGE,
             "description": "the ranges no experiment owns (their units get the default)"},
}
_LAYER: Schema = closed_object(list(_LAYER_PROPERTIES), _LAYER_PROPERTIES)
_CHANGED_LAYER: Schema = closed_object([*_LAYER_PROPERTIES, "changes", "changed"], {
    **_LAYER_PROPERTIES, "changes": {**CHANGES, "description": "what changed: `default`, "
                                                               "`ranges.<experiment>`"},
    "changed": {"type": "boolean", "description": "false when the request changed nothing"}})
_LAYER_LIST: Schema = closed_object(["layers"], {"layers": {"type": "array", "items": _LAYER}})
_LAYER_AUDIT: Schema = audit_log("layer", ["create", "update"])

_UNIT: Schema = {"type": "string", "minLength": 1, "maxLength": MAX_UNIT_LENGTH,
                 "pattern": anchored(UNIT_PATTERN),
                 "description": "the unit (user, session...) hashed into each layer's buckets"}
_ATTRIBUTES: Schema = {
    "type": ["object", "null"], "maxProperties": MAX_ATTRIBUTES,
    "additionalProperties": {"anyOf": [{"type": "string", "maxLength": MAX_ATTRIBUTE_LENGTH},
                                       {"type": ["number", "boolean", "null"]}]},
    "description": "what targeting rules read (country, app_version, ...)"}
_UNIT_FIELDS: dict[str, Schema] = {
    "unit": _UNIT, "attributes": _ATTRIBUTES,
    "context": {**CONTEXT, "description": "feature values for the contextual experiments the "
                                          "unit is in"}}
_ASSIGN: Schema = {
    "type": "object", "additionalProperties": False,
    "properties": {
        **_UNIT_FIELDS,
        "units": {"type": "array", "minItems": 1, "maxItems": MAX_ASSIGN_UNITS,
                  "items": closed_object(["unit"], _UNIT_FIELDS),
                  "description": "the batch form: many units, answered in `results`"},
        "sticky": {"type": "boolean", "description": "a bandit experiment's unit keeps the arm "
                                                     "it first received (a fixed experiment's "
                                                     "always does)"},
        "layers": {"type": ["array", "null"], "minItems": 1, "maxItems": 1000, "items": ID,
                   "description": "only these layers (default, or null: every layer)"},
    },
    "oneOf": [{"required": ["unit"], "not": {"required": ["units"]}},
              {"required": ["units"], "not": {"anyOf": [
                  {"required": [name]} for name in _UNIT_FIELDS]}}],
}
_ASSIGNED_DECISION: Schema = closed_object(["decision_id", "arm", "propensity"], {
    "decision_id": {"type": "string"}, "arm": ID,
    "propensity": {**SHARE, "description": "P(arm | experiment)"},
    "sticky": {"const": True, "description": "the unit's arm every time"}})
_ENTRY: Schema = closed_object(["layer", "bucket", "experiment", "reason"], {
    "layer": ID,
    "bucket": {"type": "integer", "minimum": 0, "maximum": BUCKETS - 1},
    "experiment": {**ID, "type": ["string", "null"],
                   "description": "the experiment the unit is in (null: the default)"},
    "reason": {"enum": ["assigned", UNASSIGNED, TARGETING, ARCHIVED, MISSING],
               "description": "assigned; or why the default: the bucket is in no range, the "
                              "unit failed the experiment's targeting, the experiment is "
                              "archived or missing"},
    "default": _DEFAULT,
    "in_experiment": {**SHARE, "description": "P(in the experiment): its share of the "
                                              "buckets"},
    "decision": _ASSIGNED_DECISION,
    "propensity": {**SHARE, "description": "P(in the experiment) x P(arm | experiment): for "
                                           "comparisons across the layer"}})
_UNIT_ASSIGNMENT: Schema = closed_object(["unit", "assignments"], {
    "unit": _UNIT, "assignments": {"type": "array", "items": _ENTRY,
                                   "description": "one per layer, in layer id order"}})
_ASSIGNMENT: Schema = {"oneOf": [
    _UNIT_ASSIGNMENT,
    closed_object(["results"], {"results": {"type": "array", "items": _UNIT_ASSIGNMENT,
                                            "minItems": 1, "maxItems": MAX_ASSIGN_UNITS}})]}

#: The named schemas of this module, for the document's ``components``.
COMPONENTS: dict[str, Schema] = {
    "NewLayer": _NEW_LAYER, "LayerChange": _LAYER_CHANGE, "Layer": _LAYER,
    "ChangedLayer": _CHANGED_LAYER, "LayerList": _LAYER_LIST, "LayerAudit": _LAYER_AUDIT,
    "AssignRequest": _ASSIGN, "Assignment": _ASSIGNMENT,
}
