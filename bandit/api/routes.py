"""The route table: every route's method, path, handler, the key scope it needs and what it
answers. The application registers the routes and checks their scopes from it, and the OpenAPI
document describes them from it, so none of these is written twice."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bandit.api import handlers
from bandit.api.auth import SCOPES
from bandit.api.schemas import (
    ID,
    closed_object,
    errors_for,
    json_body,
    ok,
    ref,
    text,
)
from bandit.inputs import DEFAULT_LIST_PAGE, MAX_LIST_PAGE
from bandit.serving.history import MAX_LIMIT as MAX_HISTORY_SAMPLES

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: What an operation answers besides its common errors; a function of ``keys`` (whether the
#: service enforces API keys) where the answer depends on it.
Responses = dict[str, Any] | Callable[[bool], dict[str, Any]]

#: Scopes besides the three key scopes: any valid key, or no key at all.
ANY_KEY, PUBLIC = "any", None


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    #: A key scope (``decide``, ``read``, ``admin``), ``ANY_KEY`` or ``PUBLIC``.
    scope: str | None
    summary: str
    responses: Responses
    body: dict[str, Any] | None = None
    #: Query parameters (path parameters come from the path).
    query: tuple[dict[str, Any], ...] = ()
    #: Whether the operation talks to Redis (and so may answer 503).
    redis: bool = True


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def _whoami(keys: bool) -> dict[str, Any]:
    return ok(closed_object(["name", "scopes", "auth"], {
        "name": {"type": "string", "description": "the key's name (`anonymous` when open)"},
        "scopes": {"type": "array", "uniqueItems": True, "items": {"enum": list(SCOPES)}},
        "auth": {"const": "keys" if keys else "open",
                 "description": "`open`: the service runs without API keys"}}))


_STALE = {"X-Bandit-Stale": {
    "description": "seconds since the posteriors were refreshed, when they are stale (Redis "
                   "unreachable)",
    "schema": {"type": "string", "pattern": "^[0-9]+\\.[0-9]$"}}}
_READY = {**ok(closed_object(["status"], {"status": {"const": "ready"}})),
          "503": {"description": "Redis cannot be reached",
                  "content": {"application/json": {"schema": closed_object(
                      ["status", "reason"], {"status": {"const": "unavailable"},
                                             "reason": {"type": "string"}})}}}}

#: In the order aiohttp tries them under a prefix: the hot routes first.
ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/experiments/{id}/allocate", handlers.allocate, "decide",
          "Decisions: arms (or ranked slates of k arms) with propensities",
          {**ok(ref("Allocation"), headers=_STALE), **errors_for(404, 422)},
          body={"required": False,
                "content": {"application/json": {"schema": ref("AllocateRequest")}}}),
    Route("POST", "/v1/events", handlers.events, "decide",
          "Report reward events (idempotent by event id)",
          {**ok(ref("EventResult")), **errors_for(422)}, body=json_body(ref("EventBatch"))),
    Route("POST", "/v1/assign", handlers.assign, "decide",
          "Assign a unit (or a batch of units) in every layer: the experiment it is in or the "
          "default, its decision, P(in the experiment) and P(arm | experiment)",
          {**ok(ref("Assignment"), headers=_STALE), **errors_for(422)},
          body=json_body(ref("AssignRequest"))),
    Route("POST", "/v1/experiments", handlers.create_experiment, "admin",
          "Create an experiment",
          {**ok(ref("Experiment"), 201, "created"), **errors_for(409, 422)},
          body=json_body(ref("NewExperiment"))),
    Route("GET", "/v1/experiments", handlers.list_experiments, "read",
          "List experiments, a page at a time in id order",
          {**ok(ref("ExperimentList")), **errors_for(422)},
          query=(_query("after", ID, "the `next` of the page before"),
                 _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIST_PAGE},
                        f"experiments per page (default {DEFAULT_LIST_PAGE})"),
                 _query("summary", {"type": "boolean"},
                        "true: each experiment at a glance (`summary`: leader, winner, the "
                        "leader's lift, health flags, decisions in the last hour), computed "
                        "as the stats are"))),
    Route("GET", "/v1/experiments/{id}", handlers.show_experiment, "read",
          "Show an experiment", {**ok(ref("Experiment")), **errors_for(404, 422)}),
    Route("PATCH", "/v1/experiments/{id}", handlers.patch_experiment, "admin",
          "Change settings, add, pause or resume arms (audited)",
          {**ok(ref("ChangedExperiment"), description="the changed experiment and what "
                                                      "changed"),
           **errors_for(404, 409, 422)},
          body=json_body(ref("ExperimentChange"))),
    Route("DELETE", "/v1/experiments/{id}", handlers.archive_experiment, "admin",
          "Archive an experiment: it stops serving, its data is kept (audited; archiving "
          "twice is no change)",
          {**ok(ref("ArchiveState")), **errors_for(404, 422)}),
    Route("POST", "/v1/experiments/{id}/unarchive", handlers.unarchive_experiment, "admin",
          "Serve an archived experiment again, from the posteriors it had (audited; an "
          "active experiment is no change)",
          {**ok(ref("ArchiveState")), **errors_for(404, 422)}),
    Route("GET", "/v1/experiments/{id}/stats", handlers.stats, "read",
          "Per-arm statistics, shares, a winner call and serving health",
          {**ok(ref("Stats")), **errors_for(404, 422)},
          query=(_query("threshold", {"type": "number", "minimum": 0.5, "maximum": 1},
                        "P(best) a winner needs (default 0.95)"),
                 _query("max_loss", {"type": "number", "minimum": 0},
                        "largest expected loss of a winner, in reward units (default 1% of "
                        "the best mean)"))),
    Route("GET", "/v1/experiments/{id}/audit", handlers.audit, "read",
          "Configuration changes, oldest first (who, when, old and new)",
          {**ok(ref("Audit")), **errors_for(404, 422)}),
    Route("GET", "/v1/experiments/{id}/history", handlers.history, "read",
          "Allocation shares, posteriors and traffic sampled over time",
          {**ok(ref("History")), **errors_for(404, 422)},
          query=(_query("since", {"type": "number", "minimum": 0},
                        "only samples after this epoch time"),
                 _query("limit", {"type": "integer", "minimum": 1,
                                  "maximum": MAX_HISTORY_SAMPLES},
                        "at most this many of the newest samples"))),
    Route("GET", "/v1/experiments/{id}/log", handlers.decision_log, "read",
          "The decision log's entries as stored (JSON lines; `bandit log export` joins them "
          "into rows)",
          {**text(["application/x-ndjson"], "a first line `{\"experiment\": {...}}` (its "
                  "configuration), then one line per log entry: `{\"kind\": \"d\" or "
                  "\"r\", \"records\": lines}`"), **errors_for(404, 422)},
          query=(_query("since", {"type": "number", "minimum": 0, "maximum": 1e11},
                        "entries stored from this epoch time (default: the oldest)"),
                 _query("until", {"type": "number", "minimum": 0, "maximum": 1e11},
                        "entries stored until this epoch time (default: the newest)"))),
    # A forecast costs seconds of CPU: only for keys that may apply the change too.
    Route("POST", "/v1/experiments/{id}/advise", handlers.advise, "admin",
          "Tuning advisor: forecast the current settings against a proposed change (nothing "
          "is changed)", {**ok(ref("Advice")), **errors_for(404, 422)},
          body=json_body(ref("AdviseRequest"))),
    Route("POST", "/v1/layers", handlers.create_layer, "admin",
          "Create a layer: experiments sharing a surface, each owning disjoint bucket ranges "
          "(audited)", {**ok(ref("Layer"), 201, "created"), **errors_for(409, 422)},
          body=json_body(ref("NewLayer"))),
    Route("GET", "/v1/layers", handlers.list_layers, "read", "Every layer, in id order",
          ok(ref("LayerList"))),
    Route("GET", "/v1/layers/{id}", handlers.show_layer, "read",
          "Show a layer: who owns which buckets, and the shares",
          {**ok(ref("Layer")), **errors_for(404, 422)}),
    Route("PATCH", "/v1/layers/{id}", handlers.change_layer, "admin",
          "Change a layer's ranges (grow, shrink, add or remove an experiment) or default "
          "(audited, versioned)",
          {**ok(ref("ChangedLayer")), **errors_for(404, 409, 422)},
          body=json_body(ref("LayerChange"))),
    Route("GET", "/v1/layers/{id}/audit", handlers.layer_audit, "read",
          "A layer's changes, oldest first (who, when, old and new)",
          {**ok(ref("LayerAudit")), **errors_for(404, 422)}),
    Route("GET", "/v1/whoami", handlers.whoami, ANY_KEY, "The API key's name and scopes",
          _whoami, redis=False),
    Route("GET", "/metrics", handlers.metrics, "read", "Prometheus metrics",
          text(["text/plain"], "text exposition format"), redis=False),
    # Probes, the API description and the dashboard's files carry no data: open.
    Route("GET", "/healthz", handlers.healthz, PUBLIC, "Liveness",
          ok(closed_object(["status"], {"status": {"const": "ok"}})), redis=False),
    Route("GET", "/readyz", handlers.readyz, PUBLIC, "Readiness (Redis reachable)", _READY,
          redis=False),
    Route("GET", "/openapi.json", handlers.openapi_document, PUBLIC, "This document",
          ok({"type": "object"}), redis=False),
    Route("GET", "/", handlers.dashboard, PUBLIC, "The operator dashboard",
          text(["text/html"], "the dashboard's page"), redis=False),
    Route("GET", "/dashboard/{name}", handlers.dashboard, PUBLIC,
          "The dashboard's scripts, styles and images",
          {**text(["text/html", "text/javascript", "text/css", "image/svg+xml"],
                  "a static file"), **errors_for(404)}, redis=False),
)
