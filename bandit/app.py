"""The aiohttp application: routes, thin handlers, error translation.

``create_app(settings)`` builds an app for the given settings; the Redis client, the cache
refresher and the served-count flusher are owned by ``cleanup_ctx``: created on start,
cancelled and awaited on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from bandit import openapi, policy
from bandit.errors import BanditError, MalformedRequest, PayloadTooLarge
from bandit.metrics import Metrics
from bandit.service import BanditService
from bandit.settings import Settings
from bandit.store import RedisStore

logger = logging.getLogger(__name__)

SERVICE = web.AppKey("service", BanditService)
METRICS = web.AppKey("metrics", Metrics)
SETTINGS = web.AppKey("settings", Settings)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers,
                        content_type="application/json")


async def _body(request: web.Request, *, optional: bool = False) -> Any:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as error:
        raise PayloadTooLarge(
            f"request body over {request.app[SETTINGS].max_body_bytes} bytes"
        ) from error
    if not raw:
        if optional:
            return None
        raise MalformedRequest("request body is empty; expected a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise MalformedRequest(f"request body is not valid JSON: {error}") from error


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except BanditError as error:
        status = error.status
        headers = {"Retry-After": "1"} if status == 503 else None
        return _json(error.to_json(), status, headers)
    except web.HTTPException as error:
        status = error.status
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            status, "http_error")
        return _json({"error": {"code": code, "message": error.reason}}, status,
                     {k: v for k, v in error.headers.items() if k == "Allow"})
    except Exception:
        logger.exception("unexpected error on %s %s", request.method, request.path)
        return _json({"error": {"code": "internal", "message": "internal error"}}, 500)
    finally:
        request.app[METRICS].observe_request(name, status, time.perf_counter() - started)


async def create_experiment(request: web.Request) -> web.Response:
    return _json(await request.app[SERVICE].create_experiment(await _body(request)), 201)


async def list_experiments(request: web.Request) -> web.Response:
    return _json({"experiments": await request.app[SERVICE].list_experiments()})


async def show_experiment(request: web.Request) -> web.Response:
    return _json(await request.app[SERVICE].show(request.match_info["id"]))


async def patch_experiment(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    return _json(await service.patch(request.match_info["id"], await _body(request)))


async def archive_experiment(request: web.Request) -> web.Response:
    return _json(await request.app[SERVICE].archive(request.match_info["id"]))


async def allocate(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    experiment_id = request.match_info["id"]
    result = await service.allocate(experiment_id, await _body(request, optional=True))
    metrics = request.app[METRICS]
    metrics.count_decisions(experiment_id, len(result["decisions"]))
    if service.stale:
        metrics.stale.inc(len(result["decisions"]))
        return _json(result, headers={"X-Bandit-Stale": f"{service.cache.age:.1f}"})
    return _json(result)


async def events(request: web.Request) -> web.Response:
    result = await request.app[SERVICE].apply_events(await _body(request))
    metrics = request.app[METRICS]
    metrics.events.labels("accepted").inc(result["accepted"])
    metrics.events.labels("duplicate").inc(result["duplicates"])
    metrics.events.labels("rejected").inc(len(result["rejected"]))
    return _json(result)


async def stats(request: web.Request) -> web.Response:
    return _json(await request.app[SERVICE].stats(request.match_info["id"]))


async def metrics_endpoint(request: web.Request) -> web.Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    metrics = request.app[METRICS]
    metrics.cache_age.set(request.app[SERVICE].cache.age)
    return web.Response(body=generate_latest(metrics.registry),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    try:
        await service.store.ping()
    except BanditError as error:
        return _json({"status": "unavailable", "reason": error.message}, 503)
    return _json({"status": "ready"})


async def openapi_document(request: web.Request) -> web.Response:
    return _json(openapi.document())


def create_app(settings: Settings, *, seed: int | None = None) -> web.Application:
    """An application serving the API against ``settings.redis_url`` (which must be set)."""
    if settings.redis_url is None:
        raise ValueError("create_app needs settings.redis_url; `bandit serve` starts Redis")
    app = web.Application(middlewares=[_errors], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app.cleanup_ctx.append(_lifecycle(settings, seed))
    app.add_routes([
        web.post("/v1/experiments", create_experiment),
        web.get("/v1/experiments", list_experiments),
        web.get("/v1/experiments/{id}", show_experiment),
        web.patch("/v1/experiments/{id}", patch_experiment),
        web.delete("/v1/experiments/{id}", archive_experiment),
        web.post("/v1/experiments/{id}/allocate", allocate),
        web.get("/v1/experiments/{id}/stats", stats),
        web.post("/v1/events", events),
        web.get("/metrics", metrics_endpoint),
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/openapi.json", openapi_document),
    ])
    return app


def _lifecycle(settings: Settings,
               seed: int | None) -> Callable[[web.Application], AsyncIterator[None]]:
    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        assert settings.redis_url is not None
        # Compile (or load from numba's cache) before the first request, not during it.
        await asyncio.to_thread(policy.warm_up_kernels)
        store = RedisStore.from_url(settings.redis_url, settings.key_prefix,
                                    timeout_s=settings.redis_timeout_s,
                                    max_connections=settings.redis_max_connections)
        service = BanditService(store, settings, seed=seed)
        app[SERVICE] = service
        tasks = [asyncio.create_task(service.cache.run(), name="cache-refresh"),
                 asyncio.create_task(service.run_served_flusher(), name="served-flush")]
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
