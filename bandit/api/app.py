"""The aiohttp application: routes, thin handlers, error translation.

``create_app(settings)`` builds an app for the given settings; the Redis client, the cache
refresher and the served-count flusher are owned by ``cleanup_ctx``: created on start,
cancelled and awaited on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from time import perf_counter
from typing import Any

import orjson
from aiohttp import web, web_response

from bandit import policy, tokens
from bandit.api import openapi
from bandit.api.auth import KEYS_RELOAD_S, OPEN, KeysFileError, KeysSource, Principal, authorize
from bandit.api.metrics import Metrics
from bandit.api.origins import OriginPolicy
from bandit.errors import (
    BanditError,
    MalformedRequest,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from bandit.serving.history import HistorySampler
from bandit.serving.service import BanditService
from bandit.settings import Settings
from bandit.store.redis_store import RedisStore

logger = logging.getLogger(__name__)

SERVICE = web.AppKey("service", BanditService)
METRICS = web.AppKey("metrics", Metrics)
SETTINGS = web.AppKey("settings", Settings)
KEYS = web.AppKey("keys", KeysSource)
ORIGINS = web.AppKey("origins", OriginPolicy)
PRINCIPAL = web.RequestKey("principal", Principal)

#: What the ``Server`` header says: no versions to look vulnerabilities up by.
SERVER_NAME = "bandit"

#: Route scopes besides the three key scopes: any valid key, or no key at all.
ANY_KEY, PUBLIC = "any", None

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers,
                        content_type="application/json")


#: What ``_body_now`` returns while the body is still arriving.
_NOT_YET = object()


def _body_now(request: web.Request, *, optional: bool = False) -> Any:
    """The parsed body if all of it has arrived (any small request), else ``_NOT_YET``.

    No await: request.read() measured 1-2 us more per request (benchmarks/bench_layers.py);
    most of what a body costs is aiohttp consuming it, either way."""
    payload = request.content
    if not payload.is_eof():
        return _NOT_YET
    return _parse_body(request, payload.read_nowait(), optional)


async def _body(request: web.Request, *, optional: bool = False) -> Any:
    body = _body_now(request, optional=optional)
    if body is not _NOT_YET:
        return body
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raw = None
    return _parse_body(request, raw, optional)


def _parse_body(request: web.Request, raw: bytes | None, optional: bool) -> Any:
    """The JSON in ``raw`` (None: over the size limit)."""
    limit = request.app[SETTINGS].max_body_bytes
    if raw is None or len(raw) > limit:
        raise PayloadTooLarge(f"request body over {limit} bytes")
    if not raw:
        if optional:
            return None
        raise MalformedRequest("request body is empty; expected a JSON object")
    media_type = request.headers.get("Content-Type", "")
    if media_type != "application/json" and not _is_json(media_type):
        # A page on another site can send text/plain or a form to us without asking first;
        # application/json takes a CORS preflight, which bandit.api.origins refuses.
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, got {media_type or 'none'!r} (with curl: "
            "-H 'Content-Type: application/json')")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise MalformedRequest(f"request body is not valid JSON: {error}") from error


def _is_json(media_type: str) -> bool:
    return media_type.split(";", 1)[0].strip().lower() == "application/json"


def _error_response(error: Exception) -> web.Response:
    if isinstance(error, BanditError):
        headers = {"Retry-After": "1"} if error.status == 503 else None
        if isinstance(error, Unauthorized):
            headers = {"WWW-Authenticate": 'Bearer realm="bandit"'}
        return _json(error.to_json(), error.status, headers)
    if isinstance(error, web.HTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            error.status, "http_error")
        return _json({"error": {"code": code, "message": error.reason}}, error.status,
                     {k: v for k, v in error.headers.items() if k == "Allow"})
    return _json({"error": {"code": "internal", "message": "internal error"}}, 500)


def _endpoint(route: str, handler: Handler, scope: str | None = PUBLIC) -> Handler:
    """Authentication, error translation and request metrics around one handler.

    A decorator per route rather than an aiohttp middleware: aiohttp rebuilds the middleware
    chain on every request, which costs about a quarter of a small request's time.
    """

    needs = scope if scope is not None and scope != ANY_KEY else None

    async def endpoint(request: web.Request) -> web.StreamResponse:
        started = perf_counter()
        app = request.app
        cors = None
        try:
            headers = request.headers
            origins = app[ORIGINS]
            if origins.allowed_hosts is not None or "Origin" in headers:
                cors = origins.check(headers.get("Origin"), headers.get("Host"))
            if scope is not None:
                ring = app[KEYS].ring
                principal = (ring.authenticate(request.headers.get("Authorization"))
                             if ring.enabled else OPEN)
                if needs is not None and needs not in principal.scopes:
                    authorize(principal, needs, f"{request.method} {route}")  # raises
                request[PRINCIPAL] = principal
            response = await handler(request)
        except Exception as error:
            if not isinstance(error, BanditError | web.HTTPException):
                logger.exception("unexpected error on %s %s", request.method, request.path)
            response = _error_response(error)
        if cors is not None:
            response.headers.update(_cors_headers(cors))
        app[METRICS].observe_request(route, response.status, perf_counter() - started)
        return response

    return endpoint


def _cors_headers(origin: str) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
            "Access-Control-Expose-Headers": "Retry-After, X-Bandit-Stale"}


async def _preflight(request: web.Request) -> web.Response:
    """A CORS preflight: allowed origins (checked in ``_endpoint``) may send JSON and keys."""
    if "Origin" not in request.headers:
        return await _unmatched(request)
    return web.Response(status=204, headers={
        "Access-Control-Allow-Methods": "GET, POST, PATCH, DELETE",
        "Access-Control-Allow-Headers": "Authorization, Content-Type",
        "Access-Control-Max-Age": "600"})


async def _unmatched(request: web.Request) -> web.Response:
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


async def create_experiment(request: web.Request) -> web.Response:
    return _json(await request.app[SERVICE].create_experiment(
        await _body(request), actor=request[PRINCIPAL].name), 201)


async def list_experiments(request: web.Request) -> web.Response:
    return _json(await request.app[SERVICE].list_experiments(request.query.get("after"),
                                                             request.query.get("limit")))


async def show_experiment(request: web.Request) -> web.Response:
    return _json(await request.app[SERVICE].show(request.match_info["id"]))


async def patch_experiment(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    return _json(await service.patch(request.match_info["id"], await _body(request),
                                     actor=request[PRINCIPAL].name))


async def archive_experiment(request: web.Request) -> web.Response:
    return _json(await request.app[SERVICE].archive(request.match_info["id"],
                                                    actor=request[PRINCIPAL].name))


async def whoami(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    return _json({"name": principal.name, "scopes": sorted(principal.scopes),
                  "auth": "keys" if request.app[KEYS].ring.enabled else "open"})


async def allocate(request: web.Request) -> web.Response:
    app = request.app
    service = app[SERVICE]
    experiment_id = request.match_info["id"]
    body = _body_now(request, optional=True)
    if body is _NOT_YET:
        body = await _body(request, optional=True)
    # Decisions from the cache need no await (most requests); the rest go the long way.
    result = service.decisions.allocate_cached(experiment_id, body) or await service.allocate(
        experiment_id, body)
    age = service.cache.age
    stale = age > service.settings.stale_after_s
    app[METRICS].count_decisions(experiment_id, len(result["decisions"]), stale=stale)
    if stale:
        return _json(result, headers={"X-Bandit-Stale": f"{age:.1f}"})
    return _json(result)


async def events(request: web.Request) -> web.Response:
    result = await request.app[SERVICE].apply_events(await _body(request))
    metrics = request.app[METRICS]
    metrics.events.labels("accepted").inc(result["accepted"])
    metrics.events.labels("duplicate").inc(result["duplicates"])
    metrics.events.labels("rejected").inc(len(result["rejected"]))
    return _json(result)


async def history(request: web.Request) -> web.Response:
    return _json(await request.app[SERVICE].history(
        request.match_info["id"], request.query.get("since"), request.query.get("limit")))


async def audit(request: web.Request) -> web.Response:
    return _json(await request.app[SERVICE].audit(request.match_info["id"]))


async def stats(request: web.Request) -> web.Response:
    return _json(await request.app[SERVICE].stats(
        request.match_info["id"], request.query.get("threshold"), request.query.get("max_loss")))


async def metrics_endpoint(request: web.Request) -> web.Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    metrics = request.app[METRICS]
    return web.Response(body=generate_latest(metrics.registry),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    try:
        await service.store.ping()
    except BanditError as error:
        # Public: the reason names no address; the log (for operators) does.
        logger.warning("not ready: %s", error.message)
        return _json({"status": "unavailable", "reason": "Redis is unreachable"}, 503)
    return _json({"status": "ready"})


async def openapi_document(request: web.Request) -> web.Response:
    # Without keys the service answers no 401 or 403: the document says so.
    return _json(openapi.document(keys=request.app[KEYS].ring.enabled))


async def advise(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    return _json(await service.advise(request.match_info["id"], await _body(request)))


#: The dashboard's files, shipped in the package (no build step, nothing fetched at run time).
DASHBOARD_DIR = Path(__file__).parent / "dashboard"
_DASHBOARD_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
                    ".svg": "image/svg+xml"}


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


#: The dashboard loads nothing but its own files and talks to nothing but this service, and no
#: other site may frame it (clickjacking a PATCH button).
_DASHBOARD_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def create_app(settings: Settings, *, seed: int | None = None) -> web.Application:
    """An application serving the API against ``settings.redis_url`` (which must be set)."""
    if settings.redis_url is None:
        raise ValueError("create_app needs settings.redis_url; `bandit serve` starts Redis")
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    # Read now, so a bad keys file stops the service before it binds (KeysFileError).
    app[KEYS] = KeysSource(settings.api_keys_file, settings.api_keys)
    app[ORIGINS] = OriginPolicy.of(
        keyed=app[KEYS].ring.enabled, bind_host=settings.host,
        cors_origins=settings.cors_origin_list, allowed_hosts=settings.allowed_host_list)
    app.cleanup_ctx.append(_lifecycle(settings, seed))
    routes: list[tuple[str, str, Handler, str | None]] = [
        # The hot routes first: aiohttp tries the routes under a prefix in this order.
        ("POST", "/v1/experiments/{id}/allocate", allocate, "decide"),
        ("POST", "/v1/events", events, "decide"),
        ("POST", "/v1/experiments", create_experiment, "admin"),
        ("GET", "/v1/experiments", list_experiments, "read"),
        ("GET", "/v1/experiments/{id}", show_experiment, "read"),
        ("PATCH", "/v1/experiments/{id}", patch_experiment, "admin"),
        ("DELETE", "/v1/experiments/{id}", archive_experiment, "admin"),
        ("GET", "/v1/experiments/{id}/stats", stats, "read"),
        ("GET", "/v1/experiments/{id}/audit", audit, "read"),
        ("GET", "/v1/experiments/{id}/history", history, "read"),
        # A forecast costs seconds of CPU: only for keys that may apply the change too.
        ("POST", "/v1/experiments/{id}/advise", advise, "admin"),
        ("GET", "/v1/whoami", whoami, ANY_KEY),
        ("GET", "/metrics", metrics_endpoint, "read"),
        # Probes, the API description and the dashboard's files carry no data: open.
        ("GET", "/healthz", healthz, PUBLIC),
        ("GET", "/readyz", readyz, PUBLIC),
        ("GET", "/openapi.json", openapi_document, PUBLIC),
        ("GET", "/", dashboard, PUBLIC),
        ("GET", "/dashboard/{name}", dashboard, PUBLIC),
    ]
    for method, path, handler, scope in routes:
        app.router.add_route(method, path, _endpoint(path, handler, scope))
    app.router.add_route("OPTIONS", "/{tail:.*}", _endpoint("preflight", _preflight))
    app.router.add_route("*", "/{tail:.*}", _endpoint("unmatched", _unmatched))
    return app


def _lifecycle(settings: Settings,
               seed: int | None) -> Callable[[web.Application], AsyncIterator[None]]:
    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        assert settings.redis_url is not None
        # aiohttp names itself and Python's version in every answer's Server header, even its
        # own 400s for unparseable requests, where no handler of ours runs: the one place to
        # change that is the module default it falls back to.
        setattr(web_response, "SERVER_SOFTWARE", SERVER_NAME)  # noqa: B010 (not exported)
        # Compile (or load from numba's cache) before the first request, not during it.
        await asyncio.to_thread(policy.warm_up_kernels)
        await asyncio.to_thread(tokens.warm_up)
        # What start-up made (numba's compiler, modules, kernels) lives as long as the
        # process: frozen out of the collector, a full collection triggered by a large request
        # no longer walks it (it held the event loop for tens of milliseconds).
        gc.collect()
        gc.freeze()
        store = RedisStore.from_settings(settings)
        service = BanditService(store, settings, seed=seed)
        app[SERVICE] = service
        app[METRICS].cache_age = lambda: service.cache.age
        sampler = HistorySampler(store, service.cache, settings,
                                 service.decisions.take_served_recently)
        tasks = [asyncio.create_task(service.feed.run(), name="change-feed"),
                 asyncio.create_task(service.cache.run(), name="cache-refresh"),
                 asyncio.create_task(service.decisions.run_served_flusher(), name="served-flush"),
                 asyncio.create_task(sampler.run(), name="history-sampler"),
                 asyncio.create_task(_reload_keys(app[KEYS]), name="keys-reload")]
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(BanditError):
            await service.flush_served()
        await store.close()

    return lifecycle


async def _reload_keys(source: KeysSource) -> None:
    while True:
        await asyncio.sleep(KEYS_RELOAD_S)
        try:
            if source.reload():
                logger.info("API keys reloaded from %s: %s", source.path,
                            ", ".join(source.ring.names))
        except KeysFileError as error:
            logger.error("API keys: %s; every request that needs a key is refused (401) "
                         "until the keys file is fixed", error)
