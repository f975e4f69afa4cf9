"""The handlers: parse, call the service, answer. ``bandit.api.routes`` says which route each
serves and what key scope it needs; authentication and errors are ``bandit.api.app``'s."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from bandit.api.bodies import NOT_YET, body, body_now, json_response
from bandit.api.context import KEYS, METRICS, PRINCIPAL, SERVICE
from bandit.errors import BanditError
from bandit.inputs import parse_allocate
from bandit.serving.service import BanditService

logger = logging.getLogger(__name__)

#: The dashboard's files, shipped in the package (no build step, nothing fetched at run time).
DASHBOARD_DIR = Path(__file__).parent / "dashboard"
_DASHBOARD_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
                    ".svg": "image/svg+xml"}
#: The dashboard loads nothing but its own files and talks to nothing but this service, and no
#: other site may frame it (clickjacking a PATCH button).
_DASHBOARD_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def create_experiment(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].create_experiment(
        await body(request), actor=request[PRINCIPAL].name), 201)


async def list_experiments(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].list_experiments(
        request.query.get("after"), request.query.get("limit"), request.query.get("summary")))


async def show_experiment(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].show(request.match_info["id"]))


async def patch_experiment(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].patch(
        request.match_info["id"], await body(request), actor=request[PRINCIPAL].name))


async def archive_experiment(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].archive(
        request.match_info["id"], actor=request[PRINCIPAL].name))


async def unarchive_experiment(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].unarchive(
        request.match_info["id"], actor=request[PRINCIPAL].name))


async def whoami(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    return json_response({"name": principal.name, "scopes": sorted(principal.scopes),
                          "auth": "keys" if request.app[KEYS].ring.enabled else "open"})


async def allocate(request: web.Request) -> web.Response:
    app = request.app
    service = app[SERVICE]
    experiment_id = request.match_info["id"]
    raw = body_now(request, optional=True)
    if raw is NOT_YET:
        raw = await body(request, optional=True)
    wanted = parse_allocate(raw)
    # Decisions from the cache need no await (most requests); the rest go the long way.
    decisions = service.decisions
    result = decisions.allocate_cached(experiment_id, wanted) or await decisions.allocate(
        experiment_id, wanted)
    age = _stale_age(service)
    app[METRICS].count_decisions(experiment_id, len(result["decisions"]), stale=age is not None)
    return _decided(result, age)


def _stale_age(service: BanditService) -> float | None:
    """Seconds since the posteriors decisions come from were confirmed with Redis, when that
    is over the stale limit (None: fresh)."""
    age: float = service.cache.age
    return age if age > service.settings.stale_after_s else None


def _decided(result: dict[str, Any], stale_age: float | None) -> web.Response:
    """Decisions answered, flagged ``X-Bandit-Stale`` when drawn from stale posteriors."""
    if stale_age is None:
        return json_response(result)
    return json_response(result, headers={"X-Bandit-Stale": f"{stale_age:.1f}"})


async def events(request: web.Request) -> web.Response:
    raw = body_now(request)
    if raw is NOT_YET:
        raw = await body(request)
    result = await request.app[SERVICE].apply_events(raw)
    request.app[METRICS].count_events(result["accepted"], result["duplicates"],
                                      len(result["rejected"]))
    return json_response(result)


async def history(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].history(
        request.match_info["id"], request.query.get("since"), request.query.get("limit")))


async def decision_log(request: web.Request) -> web.StreamResponse:
    """The first line: the experiment (``config``, as stored); then the log's entries."""
    experiment, entries = await request.app[SERVICE].log_entries(
        request.match_info["id"], request.query.get("since"), request.query.get("until"))
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    await response.write(orjson.dumps({"experiment": experiment.to_json()}) + b"\n")
    async for line in entries:
        await response.write(line)
    await response.write_eof()
    return response


async def audit(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].audit(request.match_info["id"]))


async def stats(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].stats(
        request.match_info["id"], request.query.get("threshold"), request.query.get("max_loss")))


async def advise(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].advise(request.match_info["id"],
                                                           await body(request)))


async def metrics(request: web.Request) -> web.Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return web.Response(body=generate_latest(request.app[METRICS].registry),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[SERVICE].store.ping()
    except BanditError as error:
        # Public: the reason names no address; the log (for operators) does.
        logger.warning("not ready: %s", error.message)
        return json_response({"status": "unavailable", "reason": "Redis is unreachable"}, 503)
    return json_response({"status": "ready"})


async def openapi_document(request: web.Request) -> web.Response:
    # Imported here: the document is built from the route table, which names these handlers.
    from bandit.api.openapi import document

    # Without keys the service answers no 401 or 403: the document says so.
    return json_response(document(keys=request.app[KEYS].ring.enabled))


async def dashboard(request: web.Request) -> web.StreamResponse:
    """``/`` and ``/dashboard/{name}``: the operator dashboard's static files."""
    name = request.match_info.get("name", "index.html")
    path = DASHBOARD_DIR / name
    # Only plain file names of known types: no directories, no traversal.
    if "/" in name or name.startswith(".") or path.suffix not in _DASHBOARD_TYPES \
            or not path.is_file():
        raise web.HTTPNotFound(reason=f"no dashboard file {name!r}")
    return web.Response(body=path.read_bytes(), content_type=_DASHBOARD_TYPES[path.suffix],
                        headers={"Cache-Control": "no-cache", **_DASHBOARD_HEADERS})


async def preflight(request: web.Request) -> web.Response:
    """A CORS preflight: allowed origins (checked around every handler) may send JSON and
    keys."""
    if "Origin" not in request.headers:
        return await unmatched(request)
    return web.Response(status=204, headers={
        "Access-Control-Allow-Methods": "GET, POST, PATCH, DELETE",
        "Access-Control-Allow-Headers": "Authorization, Content-Type",
        "Access-Control-Max-Age": "600"})


async def unmatched(request: web.Request) -> web.Response:
    """JSON 404 or 405 (with Allow) for what no route handles."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource.canonical == "/{tail}":
            continue
        _, methods = await resource.resolve(request)
        allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, sorted(allowed))
    raise web.HTTPNotFound(reason=f"no route {request.method} {request.path}")


async def assign(request: web.Request) -> web.Response:
    app = request.app
    service = app[SERVICE]
    raw = body_now(request)
    if raw is NOT_YET:
        raw = await body(request)
    result = await service.layers.assign(raw)
    age = _stale_age(service)
    app[METRICS].count_assignments(result.get("results", [result]), stale=age is not None)
    return _decided(result, age)


async def create_layer(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].layers.create(
        await body(request), actor=request[PRINCIPAL].name), 201)


async def list_layers(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].layers.list_all())


async def show_layer(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].layers.show(request.match_info["id"]))


async def change_layer(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].layers.change(
        request.match_info["id"], await body(request), actor=request[PRINCIPAL].name))


async def layer_audit(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].layers.audit(request.match_info["id"]))
