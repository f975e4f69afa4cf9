"""Webhook delivery: a JSON body POSTed with an HMAC signature, retried with backoff.

The ``X-Bandit-Signature`` header is ``t=<unix seconds>,v1=<hex>``, where ``<hex>`` is the
HMAC-SHA256, keyed with the shared secret, of ``<t>.`` followed by the raw body (Stripe's and
Slack's scheme): a receiver recomputes it and refuses a body older than a few minutes, so a
captured request cannot be replayed later. Each attempt is signed afresh.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time

import aiohttp

from bandit.settings import Settings, redacted_webhook

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Bandit-Signature"
#: The longest wait between two attempts, however many there are.
MAX_BACKOFF_S = 60.0


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, *, tolerance_s: float = 300.0,
           now: float | None = None) -> bool:
    """Whether ``header`` signs ``body`` with ``secret``, sent within ``tolerance_s`` of now
    (the check a receiver makes; ``docs/alerts.md`` shows it standalone)."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body).rpartition("v1=")[2]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def target_id(url: str) -> str:
    """A webhook's name in Redis: a hash, never the URL (whose path is often a secret)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


class Webhooks:
    """The configured webhooks, and how hard each delivery tries."""

    def __init__(self, urls: list[str], secret: str | None, *, attempts: int,
                 backoff_s: float, timeout_s: float) -> None:
        self.urls = urls
        self.targets = {target_id(url): url for url in urls}
        self._secret = secret
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    @classmethod
    def from_settings(cls, settings: Settings) -> Webhooks:
        return cls(settings.alert_webhook_list, settings.alert_secret,
                   attempts=settings.alert_attempts, backoff_s=settings.alert_backoff_s,
                   timeout_s=settings.alert_timeout_s)

    def waits(self) -> list[float]:
        """The pauses between attempts."""
        return [min(self._backoff_s * 2 ** i, MAX_BACKOFF_S) for i in range(self._attempts - 1)]

    @property
    def longest_delivery_s(self) -> float:
        """How long one delivery can take, every attempt timing out."""
        total = self._timeout.total
        assert total is not None
        return self._attempts * total + sum(self.waits())

    async def post(self, session: aiohttp.ClientSession, url: str, body: bytes) -> bool:
        """POST ``body`` until a 2xx answer or the attempts run out; True when delivered."""
        for attempt, wait in enumerate([*self.waits(), None], start=1):
            headers = {"Content-Type": "application/json"}
            if self._secret is not None:
                headers[SIGNATURE_HEADER] = signature(self._secret, int(time.time()), body)
            try:
                async with session.post(url, data=body, headers=headers, timeout=self._timeout,
                                        allow_redirects=False) as response:
                    await response.read()
                    if 200 <= response.status < 300:
                        return True
                    problem = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as error:
                # Some errors quote the URL, whose path may be the webhook's secret.
                problem = f"{type(error).__name__} {error}".replace(url, redacted_webhook(url))
            logger.warning("alert webhook %s, attempt %d of %d: %s", redacted_webhook(url),
                           attempt, self._attempts, problem)
            if wait is not None:
                await asyncio.sleep(wait)
        return False
