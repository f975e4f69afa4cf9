"""The aiohttp application: the route table served, with authentication, origin checks, error
translation and request metrics around every handler.

``create_app(settings)`` builds an app for the given settings; the Redis client, the cache
refresher, the change feed, the served-count flusher, the history sampler, the alert check
(when webhooks are set) and the keys reloader are owned by ``cleanup_ctx``: created on start,
cancelled and awaited on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable
from time import perf_counter

from aiohttp import web, web_response

from bandit import policy, tokens
from bandit.api import handlers
from bandit.api.auth import KEYS_RELOAD_S, OPEN, KeysFileError, KeysSource, authorize
from bandit.api.bodies import json_response
from bandit.api.context import KEYS, METRICS, ORIGINS, PRINCIPAL, SERVICE, SETTINGS
from bandit.api.metrics import Metrics
from bandit.api.origins import OriginPolicy
from bandit.api.routes import ANY_KEY, PUBLIC, ROUTES, Handler
from bandit.errors import BanditError, Unauthorized
from bandit.serving.alerts import Alerts
from bandit.serving.history import HistorySampler
from bandit.serving.service import BanditService
from bandit.settings import Settings
from bandit.store.redis_store import RedisStore

__all__ = ["SERVICE", "create_app"]

logger = logging.getLogger(__name__)

#: What the ``Server`` header says: no versions to look vulnerabilities up by.
SERVER_NAME = "bandit"


def _error_response(error: Exception) -> web.Response:
    if isinstance(error, BanditError):
        headers = {"Retry-After": "1"} if error.status == 503 else None
        if isinstance(error, Unauthorized):
            headers = {"WWW-Authenticate": 'Bearer realm="bandit"'}
        return json_response(error.to_json(), error.status, headers)
    if isinstance(error, web.HTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            error.status, "http_error")
        return json_response({"error": {"code": code, "message": error.reason}}, error.status,
                             {k: v for k, v in error.headers.items() if k == "Allow"})
    return json_response({"error": {"code": "internal", "message": "internal error"}}, 500)


def _endpoint(route: str, handler: Handler, scope: str | None = PUBLIC) -> Handler:
    """Authentication, origin checks, error translation and request metrics around one
    handler.

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
    for route in ROUTES:
        app.router.add_route(route.method, route.path,
                             _endpoint(route.path, route.handler, route.scope))
    app.router.add_route("OPTIONS", "/{tail:.*}", _endpoint("preflight", handlers.preflight))
    app.router.add_route("*", "/{tail:.*}", _endpoint("unmatched", handlers.unmatched))
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
        groups = service.rewards.groups
        app[METRICS].event_groups = lambda: (groups.calls, groups.requests)
        log = service.decisions.log
        app[METRICS].log_counts = lambda: (log.written_total, log.dropped_total, log.buffered)
        sampler = HistorySampler(store, service.cache, settings,
                                 service.decisions.take_served_recently)
        tasks = [asyncio.create_task(service.feed.run(), name="change-feed"),
                 asyncio.create_task(service.cache.run(), name="cache-refresh"),
                 asyncio.create_task(service.decisions.run_served_flusher(), name="served-flush"),
                 asyncio.create_task(log.run(), name="decision-log"),
                 asyncio.create_task(sampler.run(), name="history-sampler"),
                 asyncio.create_task(_reload_keys(app[KEYS]), name="keys-reload")]
        if settings.alert_webhook_list:
            alerts = Alerts(service, settings, app[METRICS].count_alert)
            tasks.append(asyncio.create_task(alerts.run(), name="alerts"))
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(BanditError):
            await service.flush_served()
        with contextlib.suppress(BanditError):
            await log.flush()
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
