"""The OpenAPI 3.1 document served at ``/openapi.json``: the API as it really is.

Its operations come from the route table (``bandit.api.routes``), which the application serves
from too, and its schemas from ``bandit.api.schemas`` and ``bandit.api.report_schemas``, whose
limits and patterns come from the modules that enforce them; ``tests/test_schemathesis.py``
fuzzes a real service against it.

Two variants: with API keys configured every ``/v1`` operation and ``/metrics`` declare the
bearer scheme, the scope they need (``x-scopes``) and their 401/403 answers; a service running
open (no keys) declares none of that, because it answers every request without looking at
credentials.
"""

from __future__ import annotations

from typing import Any

import orjson

from bandit import __version__
from bandit.api import layer_schemas, report_schemas, schemas
from bandit.api.routes import ANY_KEY, ROUTES, Route
from bandit.api.schemas import ERROR_CLASSES, ID, closed_object, errors_for

_BEARER = "bearerAuth"
_WHY = {
    400: "the body is not JSON, is empty where one is needed, or did not arrive whole",
    401: "no valid API key (`Authorization: Bearer KEY`)",
    403: "the API key lacks the scope this operation needs; or the request comes from a web "
         "page of another origin (`Origin` not the service's own nor in BANDIT_CORS_ORIGINS); "
         "or, on a service without keys, it names a `Host` the service does not answer",
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
#: What a path parameter is.
_PATH_PARAMETERS = {
    "id": {"name": "id", "in": "path", "required": True, "schema": ID},
    "name": {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
             "description": "a file name, e.g. `app.js`"},
}


_LAYER_ID = {**_PATH_PARAMETERS["id"], "schema": {**ID, "description": "layer id"}}


def _error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _WHY[status],
        "content": {"application/json": {"schema": closed_object(["error"], {
            "error": closed_object(["code", "message"], {
                "code": {"const": ERROR_CLASSES[status].code},
                "message": {"type": "string", "description": "what is wrong, for people"}})})}},
    }
    if status in _HEADERS:
        response["headers"] = _HEADERS[status]
    return response


def _operation(route: Route, keys: bool) -> dict[str, Any]:
    """A route as an operation; its scope decides its security and 401/403 answers."""
    result: dict[str, Any] = {"summary": route.summary}
    if route.query:
        result["parameters"] = list(route.query)
    responses = route.responses(keys) if callable(route.responses) else dict(route.responses)
    if route.body is not None:
        result["requestBody"] = route.body
        responses = {**responses, **errors_for(400, 413, 415)}
    if route.redis:
        responses = {**responses, **errors_for(503)}
    scope = route.scope
    if scope is not None and keys:
        result["security"] = [{_BEARER: [] if scope == ANY_KEY else [scope]}]
        result["x-scopes"] = [] if scope == ANY_KEY else [scope]
        result["description"] = ("Needs an API key." if scope == ANY_KEY else
                                 f"Needs an API key with the `{scope}` scope.")
        responses = {**responses, **errors_for(401)}
    else:
        result["security"] = []
    # Scopes aside, every route refuses foreign origins and (open) unknown Host names.
    responses = {**responses, **errors_for(403)}
    result["responses"] = dict(sorted(responses.items()))
    return result


def document(*, keys: bool = True) -> dict[str, Any]:
    """The API description; ``keys``: whether the service enforces API keys."""
    paths: dict[str, Any] = {}
    for route in ROUTES:
        item = paths.setdefault(route.path, {})
        names = [name for name in _PATH_PARAMETERS if f"{{{name}}}" in route.path]
        if names:
            item["parameters"] = [_LAYER_ID if route.path.startswith("/v1/layers/") and
                                  name == "id" else _PATH_PARAMETERS[name] for name in names]
        item[route.method.lower()] = _operation(route, keys)
    result: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Adaptive allocation service", "version": __version__,
                 "description": "Errors are `{error: {code, message}}`. " + (
                     "Every /v1 operation and /metrics need `Authorization: Bearer KEY`."
                     if keys else "This service runs without API keys: nothing needs one.")},
        "paths": paths,
        "components": {
            "schemas": {**schemas.COMPONENTS, **report_schemas.COMPONENTS,
                        **layer_schemas.COMPONENTS},
            "responses": {error.__name__: _error_response(status)
                          for status, error in ERROR_CLASSES.items()
                          if keys or status != 401},
        },
    }
    if keys:
        result["components"]["securitySchemes"] = {_BEARER: {
            "type": "http", "scheme": "bearer",
            "description": "an API key from `bandit keys new`; each key has scopes: "
                           "`decide` (allocate, events, assign), `read` (show, list, stats, "
                           "history, audit, the log, metrics; layers: list, show, audit), "
                           "`admin` (create, change, archive, advise; layers: create, "
                           "change)"}}
    # A copy (a JSON round trip is the fast deep copy): the schemas above are shared module
    # constants, and callers may change what they get.
    copied: dict[str, Any] = orjson.loads(orjson.dumps(result))
    return copied
