"""The asyncio client: an aiohttp session, and a background task for rewards."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from types import TracebackType
from typing import Unpack

import aiohttp

from bandit_client._common import ClientBase, DecisionOptions
from bandit_client._decisions import CIRCUIT_OPEN, Decision
from bandit_client._events import EVENTS_PATH, Batch

logger = logging.getLogger("bandit_client")


class AsyncBanditClient(ClientBase):
    """An asyncio client, for one event loop. See ``ClientBase.__init__`` for the options.

    ``reward()`` is a plain method (it only buffers); call it, like everything else, on the
    loop's thread. ::

        async with AsyncBanditClient("http://127.0.0.1:8080") as client:
            decision = await client.decide("hero", fallback="control")
            client.reward("hero", decision.arm, 1.0, decision_id=decision.decision_id)
        # leaving the block flushes the buffer (aclose)
    """

    def _setup(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._sender: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._pipeline.on_progress = self._progress.set

    async def __aenter__(self) -> AsyncBanditClient:
        self._open_session()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.aclose()

    # -- decisions --------------------------------------------------------------------------

    async def decide(self, experiment: str, **options: Unpack[DecisionOptions]) -> Decision:
        """One decision; as ``BanditClient.decide``."""
        return (await self.allocate(experiment, 1, **options))[0]

    async def allocate(self, experiment: str, n: int = 1,
                       **options: Unpack[DecisionOptions]) -> list[Decision]:
        """``n`` decisions in one call; as ``BanditClient.allocate``."""
        call = self._decision_call(experiment, n, **options)
        if not self._breaker.allow():
            return call.fall_back(CIRCUIT_OPEN)
        session = self._open_session()
        try:
            # asyncio.timeout bounds the whole exchange, reading the body included.
            async with asyncio.timeout(call.timeout), session.post(
                    self._origin + call.path, data=call.body, allow_redirects=False) as response:
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            return call.unanswered(error)
        return call.answered(response.status, body, "X-Bandit-Stale" in response.headers)

    # -- rewards ----------------------------------------------------------------------------

    async def flush(self, timeout: float | None = None) -> bool:
        """Send what is buffered now; as ``BanditClient.flush``."""
        target = self._request_flush()
        if target is None:
            return True
        try:
            async with asyncio.timeout(timeout):
                while not self._pipeline.flushed(target):
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            return False
        return True

    async def aclose(self, timeout: float | None = None) -> None:
        """Deliver what is buffered, then stop; as ``BanditClient.close``."""
        if self._closed:
            return
        wait = self._start_closing(timeout)
        if self._sender is not None:
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._sender), wait)
            except TimeoutError:
                logger.error("the reward sender did not stop in time")
                self._sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._sender
        if self._session is not None:
            await self._session.close()

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                connector=aiohttp.TCPConnector(limit=self.max_connections))
        return self._session

    def _wake_sender(self) -> None:
        if self._sender is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError as error:
                raise RuntimeError("AsyncBanditClient: call reward() on the event loop's "
                                   "thread (use BanditClient from other threads)") from error
            self._open_session()
            self._sender = loop.create_task(self._run(), name="bandit-client-rewards")
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                step = self._pipeline.next_step()
                if step is None:
                    return
                if isinstance(step, Batch):
                    await self._send(step)
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(None if step == math.inf else step):
                        await self._wake.wait()
                self._wake.clear()
            except Exception:  # a bug must not silently stop delivery
                logger.exception("reward sender failed; going on")
                await asyncio.sleep(1.0)

    async def _send(self, batch: Batch) -> None:
        assert self._session is not None
        try:
            async with asyncio.timeout(batch.timeout), self._session.post(
                    self._origin + self._prefix + EVENTS_PATH, data=batch.body,
                    allow_redirects=False) as response:
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            self._pipeline.failed(batch, error)
            return
        self._pipeline.answered(batch, response.status, response.headers.get("Retry-After"),
                                body)
