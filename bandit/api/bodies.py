"""Request bodies in, JSON answers out: the size limit, the media type and the JSON itself."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from bandit.api.context import SETTINGS
from bandit.errors import MalformedRequest, PayloadTooLarge, UnsupportedMediaType

#: What ``body_now`` returns while the body is still arriving.
NOT_YET = object()
#: How long a request body may take to arrive once its headers have.
BODY_TIMEOUT_S = 30.0


def json_response(data: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers,
                        content_type="application/json")


def body_now(request: web.Request, *, optional: bool = False) -> Any:
    """The parsed body if all of it has arrived (any small request), else ``NOT_YET``.

    No await: request.read() measured 1-2 us more per request (benchmarks/bench_layers.py);
    most of what a body costs is aiohttp consuming it, either way."""
    payload = request.content
    if not payload.is_eof():
        return NOT_YET
    return _parse(request, payload.read_nowait(), optional)


async def body(request: web.Request, *, optional: bool = False) -> Any:
    """The parsed body, once all of it has arrived (None: empty, when ``optional``).

    A body declared over the limit is refused before it is read; one that stops arriving
    for ``BODY_TIMEOUT_S``, or ends with the connection, is malformed (400), not an error
    of the service."""
    parsed = body_now(request, optional=optional)
    if parsed is not NOT_YET:
        return parsed
    limit = request.app[SETTINGS].max_body_bytes
    if (request.content_length or 0) > limit:
        raise PayloadTooLarge(f"request body over {limit} bytes "
                              f"(Content-Length: {request.content_length})")
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raw = None
    except TimeoutError:
        raise MalformedRequest(f"the request body did not arrive within {BODY_TIMEOUT_S:g} s "
                               "(is its Content-Length right?)") from None
    except ConnectionResetError:
        raise MalformedRequest("the connection closed before the request body ended") from None
    return _parse(request, raw, optional)


def _parse(request: web.Request, raw: bytes | None, optional: bool) -> Any:
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
