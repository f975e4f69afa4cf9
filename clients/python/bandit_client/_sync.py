"""The blocking client: urllib3 connection pools, and a background thread for rewards."""

from __future__ import annotations

import atexit
import logging
import math
import threading
import time
from types import TracebackType
from typing import Unpack

import urllib3
from urllib3.exceptions import HTTPError

from bandit_client._common import ClientBase, DecisionOptions
from bandit_client._decisions import CIRCUIT_OPEN, Decision
from bandit_client._events import EVENTS_PATH, Batch

logger = logging.getLogger("bandit_client")

#: Connecting to the service is quick or it is down: a batch does not wait longer for it.
EVENTS_CONNECT_TIMEOUT_S = 2.0


class BanditClient(ClientBase):
    """A thread-safe, blocking client. See ``ClientBase.__init__`` for the options.

    ::

        client = BanditClient("http://127.0.0.1:8080", fallbacks={"hero": "control"})
        decision = client.decide("hero", unit="user-42")
        client.reward("hero", decision.arm, 1.0, decision_id=decision.decision_id)
        client.close()  # also on interpreter exit, and at the end of a ``with`` block
    """

    def _setup(self) -> None:
        # Decisions and rewards have pools of their own: a slow reward batch never holds a
        # connection a decision is waiting for. block=False: a burst opens extra
        # connections rather than queueing behind the pool.
        self._decisions = urllib3.connection_from_url(
            self._origin, maxsize=self.max_connections, block=False, headers=self._headers)
        self._events = urllib3.connection_from_url(self._origin, maxsize=1,
                                                   headers=self._headers)
        self._wake = threading.Event()
        self._progress = threading.Condition()
        self._pipeline.on_progress = self._notify_progress
        self._sender: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def __enter__(self) -> BanditClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # -- decisions --------------------------------------------------------------------------

    def decide(self, experiment: str, **options: Unpack[DecisionOptions]) -> Decision:
        """One decision for ``experiment``; see ``DecisionOptions`` for the options.

        Returns the caller's fallback (``fallback=True``) when the service cannot answer
        within the timeout, answers 5xx, or is unreachable; raises a ``RequestError`` when it
        refuses the request (4xx), and ``Unavailable`` when it fails and there is no fallback.
        """
        return self.allocate(experiment, 1, **options)[0]

    def allocate(self, experiment: str, n: int = 1,
                 **options: Unpack[DecisionOptions]) -> list[Decision]:
        """``n`` decisions in one call (1 to 10,000); otherwise as ``decide()``."""
        call = self._decision_call(experiment, n, **options)
        if not self._breaker.allow():
            return call.fall_back(CIRCUIT_OPEN)
        try:
            response = self._decisions.urlopen(
                "POST", call.path, body=call.body, timeout=urllib3.Timeout(total=call.timeout),
                retries=False, redirect=False)
        except (HTTPError, OSError) as error:
            return call.unanswered(error)
        return call.answered(response.status, response.data,
                             "X-Bandit-Stale" in response.headers)

    # -- rewards ----------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Send what is buffered now; True once all of it is delivered or refused.

        False when ``timeout`` seconds passed first (the sender keeps trying).
        """
        target = self._request_flush()
        if target is None:
            return True
        with self._progress:
            return self._progress.wait_for(lambda: self._pipeline.flushed(target), timeout)

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is buffered (for ``timeout``, default ``close_timeout``), then stop.

        Events still undelivered then are counted as ``undelivered`` and passed to
        ``on_rejected``. Idempotent.
        """
        if self._closed:
            return
        wait = self._start_closing(timeout)
        if self._sender is not None:
            self._wake.set()
            self._sender.join(wait)
            if self._sender.is_alive():
                logger.error("the reward sender did not stop in time")
        atexit.unregister(self.close)
        self._decisions.close()
        self._events.close()

    def _wake_sender(self) -> None:
        if self._sender is None:
            with self._start_lock:
                if self._sender is None:
                    # A daemon thread, so it never keeps a process alive; atexit closes the
                    # client (flushing the buffer) before daemon threads are stopped.
                    self._sender = threading.Thread(target=self._run, daemon=True,
                                                    name="bandit-client-rewards")
                    self._sender.start()
                    atexit.register(self.close)
        self._wake.set()

    def _run(self) -> None:
        while True:
            try:
                step = self._pipeline.next_step()
                if step is None:
                    return
                if isinstance(step, Batch):
                    self._send(step)
                    continue
                self._wake.wait(None if step == math.inf else step)
                self._wake.clear()
            except Exception:  # a bug must not silently stop delivery
                logger.exception("reward sender failed; going on")
                time.sleep(1.0)

    def _send(self, batch: Batch) -> None:
        timeout = urllib3.Timeout(connect=min(EVENTS_CONNECT_TIMEOUT_S, batch.timeout),
                                  read=batch.timeout)
        try:
            response = self._events.urlopen("POST", self._prefix + EVENTS_PATH, body=batch.body,
                                            timeout=timeout, retries=False, redirect=False)
        except (HTTPError, OSError) as error:
            self._pipeline.failed(batch, error)
            return
        self._pipeline.answered(batch, response.status, response.headers.get("Retry-After"),
                                response.data)

    def _notify_progress(self) -> None:
        with self._progress:
            self._progress.notify_all()
