"""Running the application on a socket, with a cap on open connections.

``web.run_app`` accepts connections until the process runs out of file descriptors; then
every accept fails with "Too many open files", asyncio logs a traceback for each (62,079 of them,
28 MB of log in 30 s in the adversarial run) and the service cannot open its own Redis
connections either. Here the accepting socket hands each connection to aiohttp only while
fewer than ``max_connections`` are open; beyond that it answers 503 and closes, and says so in
the log once per interval, not once per connection.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import signal
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bandit.settings import Settings

__all__ = ["connection_cap", "serve"]

logger = logging.getLogger(__name__)

#: File descriptors kept for everything but client connections: Redis pools, log and data
#: files, the embedded server's pipes.
FD_RESERVE = 256
#: Seconds between two log lines about refused connections or failing accepts.
LOG_INTERVAL_S = 10.0

_REFUSAL_BODY = (b'{"error":{"code":"overloaded",'
                 b'"message":"too many open connections to this process"}}')
_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Retry-After: 1\r\nConnection: close\r\nServer: bandit\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(_REFUSAL_BODY), _REFUSAL_BODY))


def connection_cap(settings: Settings) -> int:
    """``max_connections``, else the soft file-descriptor limit less the reserve."""
    if settings.max_connections is not None:
        return settings.max_connections
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 100_000
    return max(64, soft - FD_RESERVE - settings.redis_max_connections)


class _Throttled:
    """Counts occurrences and logs them at most once per ``LOG_INTERVAL_S``."""

    def __init__(self, message: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._message = message
        self._clock = clock
        self._last = -LOG_INTERVAL_S
        self._count = 0

    def __call__(self, *details: Any) -> None:
        self._count += 1
        now = self._clock()
        if now - self._last >= LOG_INTERVAL_S:
            logger.error(self._message, self._count, *details)
            self._last, self._count = now, 0


class _Refuse(asyncio.Protocol):
    """Answers one connection 503 and closes it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_REFUSAL)
        transport.close()


class _Capped:
    """The protocol factory of the listening socket: aiohttp's while under the cap."""

    def __init__(self, server: web.Server, cap: int) -> None:
        self._server = server
        self._cap = cap
        self._refused = _Throttled(
            f"refused %d connection(s) over the cap of {cap} open connections per process "
            "(BANDIT_MAX_CONNECTIONS; the file-descriptor limit is %s)")

    def __call__(self) -> asyncio.BaseProtocol:
        # aiohttp keeps its open connections in this dict; its public ``connections`` copies it
        # into a list on every call, which a flood of connections cannot afford.
        if len(self._server._connections) >= self._cap:
            self._refused(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
            return _Refuse()
        return self._server()


def _exception_handler(accept_failed: _Throttled) -> Callable[
        [asyncio.AbstractEventLoop, dict[str, Any]], None]:
    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if isinstance(error, OSError) and error.errno in (errno.EMFILE, errno.ENFILE):
            accept_failed(error.strerror)  # asyncio retries the accept after a pause
            return
        loop.default_exception_handler(context)

    return handle


async def serve(app: web.Application, settings: Settings,
                announce: Callable[[], None]) -> None:
    """Serve ``app`` on ``settings.host``/``port`` until SIGINT or SIGTERM, then shut down
    cleanly (the app's cleanup contexts flush what they hold)."""
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_exception_handler(_Throttled(
        "accepting connections failed %d time(s): %s; close idle clients or raise the "
        "file-descriptor limit")))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    assert runner.server is not None
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    server = await loop.create_server(
        _Capped(runner.server, connection_cap(settings)), settings.host, settings.port,
        reuse_port=settings.workers > 1, backlog=1024)
    try:
        announce()
        await stop.wait()
    finally:
        server.close()
        await runner.cleanup()
