"""Service settings: read once at start (flags, environment) into a frozen object.

Nothing here reads the environment at import time; ``Settings.from_env`` does, when called.
Errors name the setting and the bad value.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bandit import redisurl

DEFAULT_DEDUP_WINDOW_S = 3600.0


class SettingsError(ValueError):
    """A setting has a value the service cannot run with."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    #: ``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://`` or ``redis+sentinel://``
    #: URL (``bandit.redisurl``); ``None`` starts an embedded redis-server.
    redis_url: str | None = None
    workers: int = 1
    data_dir: Path = Path("bandit-data")
    #: Prefix of every Redis key, so several deployments can share one Redis.
    key_prefix: str = "bandit"
    #: How long a reward event id is remembered for deduplication.
    dedup_window_s: float = DEFAULT_DEDUP_WINDOW_S
    #: How often each process polls Redis for changed posteriors and settings.
    refresh_interval_s: float = 0.2
    #: How often each process flushes its served-decision counters to Redis.
    served_flush_interval_s: float = 1.0
    #: Append every decision served and every reward accepted to the experiment's decision log
    #: (a Redis Stream; ``bandit log export``).
    decision_log: bool = True
    #: Each process group-commits its decision records this often, or sooner once
    #: ``log_flush_records`` are waiting: a process killed before a flush loses at most this
    #: window (plus a flush under way).
    log_flush_interval_s: float = 0.05
    log_flush_records: int = 1000
    #: Decision records a process holds while Redis is slow or unreachable; past this the
    #: oldest are dropped (counted, in ``/metrics`` and the stats' ``log``), never a decision.
    log_buffer_records: int = 100_000
    #: Retention of each experiment's log: records older than this, and the oldest records
    #: beyond ``log_max_records``, are trimmed, in whole flushes.
    log_max_age_s: float = 7 * 86400.0
    log_max_records: int = 1_000_000
    #: Largest request body accepted, in bytes (413 above).
    max_body_bytes: int = 16 * 1024 * 1024
    #: Socket timeout for Redis commands; a slower answer is treated as Redis being unreachable.
    redis_timeout_s: float = 2.0
    redis_max_connections: int = 64
    #: How long a request waits for a free connection when all are busy, before a 503: a
    #: stuck or slow Redis makes requests fail fast instead of queueing without end.
    redis_pool_timeout_s: float = 0.5
    #: Acknowledge a write (events, sticky units, settings) only once this many replicas have
    #: it (Redis ``WAIT``), so a failover cannot lose it; 0 = as soon as the primary has it.
    redis_wait_replicas: int = 0
    #: How long a write waits for its replicas before answering 503 (retry-safe).
    redis_wait_timeout_ms: int = 1000
    #: Decisions served from a cache older than this are flagged stale.
    stale_after_s: float = 2.0
    #: Decisions keep coming from memory while Redis is unreachable for up to this long; after
    #: that allocation answers 503 too (the posteriors may have moved too far).
    max_stale_s: float = 3600.0
    #: Sticky-unit assignments remembered in process memory (they never change, so caching is safe).
    sticky_cache_size: int = 100_000
    #: How often allocation shares and posteriors are sampled into each experiment's history.
    history_interval_s: float = 60.0
    #: Samples kept per experiment (the oldest are dropped): a day at the default interval.
    history_max_samples: int = 1440
    #: How often samples go to a second, finer history list for recent plots; off when not
    #: shorter than ``history_interval_s``.
    history_fine_interval_s: float = 10.0
    #: How long the fine samples are kept (360 samples at the defaults; 0 = no fine list).
    history_fine_window_s: float = 3600.0
    #: Threads a tuning-advisor forecast may use (one forecast runs at a time per process).
    advisor_threads: int = 1
    #: ``appendfsync`` of the embedded Redis: ``always`` acknowledges nothing it has not fsynced.
    embedded_appendfsync: str = "always"
    #: Refuse reward events without a decision_id: every reward must name a signed decision
    #: this service served (see ``bandit.tokens``).
    require_decision_ids: bool = False
    #: Keys file (``bandit keys new`` writes it); with neither this nor ``api_keys`` the service
    #: runs open, which ``bandit serve`` allows on a loopback address only.
    api_keys_file: Path | None = None
    #: Keys-file lines given inline (``BANDIT_API_KEYS``), newline- or ``;``-separated.
    api_keys: str | None = None
    #: Comma-separated origins (``https://app.example``) whose web pages may call the API
    #: (CORS); any other page's requests are refused (``bandit.api.origins``).
    cors_origins: str | None = None
    #: Comma-separated host names a service without keys answers besides loopback names and
    #: its bind address (a check against DNS rebinding).
    allowed_hosts: str | None = None
    #: Open connections per process; more are answered 503 and closed. None: the file-
    #: descriptor limit less a reserve for Redis connections and files.
    max_connections: int | None = None
    #: Comma-separated webhook URLs (``http(s)://``) that alerts are posted to (Slack-compatible
    #: JSON, ``bandit.serving.alerts``); none: no alerts.
    alert_webhook_urls: str | None = None
    #: Secret the ``X-Bandit-Signature`` header of every alert is an HMAC-SHA256 with; none:
    #: alerts are sent unsigned.
    alert_secret: str | None = None
    #: How often each process checks the experiments it serves for alert conditions.
    alert_interval_s: float = 60.0
    #: Attempts per alert and check (the first included), ``alert_backoff_s`` apart, doubling.
    alert_attempts: int = 4
    alert_backoff_s: float = 1.0
    #: How long one delivery attempt may take.
    alert_timeout_s: float = 5.0
    #: The service's address as people reach it (``https://bandit.example``): alerts link to
    #: the experiment's page of the dashboard there.
    public_url: str | None = None

    def __post_init__(self) -> None:
        _check(self.port, "port", 0 <= self.port <= 65535)
        _check(self.workers, "workers", 1 <= self.workers <= 256)
        _check(self.dedup_window_s, "dedup_window_s", _positive(self.dedup_window_s))
        _check(self.refresh_interval_s, "refresh_interval_s", _positive(self.refresh_interval_s))
        _check(
            self.served_flush_interval_s,
            "served_flush_interval_s",
            _positive(self.served_flush_interval_s),
        )
        _check(self.log_flush_interval_s, "log_flush_interval_s",
               _positive(self.log_flush_interval_s) and self.log_flush_interval_s <= 60,
               "from above 0 to 60 seconds")
        _check(self.log_flush_records, "log_flush_records",
               1 <= self.log_flush_records <= 100_000, "from 1 to 100,000")
        _check(self.log_buffer_records, "log_buffer_records",
               self.log_flush_records <= self.log_buffer_records <= 100_000_000,
               f"from log_flush_records ({self.log_flush_records}) to 100,000,000")
        _check(self.log_max_age_s, "log_max_age_s",
               _positive(self.log_max_age_s) and self.log_max_age_s <= 10 * 365 * 86400,
               "from above 0 to 10 years (315,360,000 seconds)")
        _check(self.log_max_records, "log_max_records", 1 <= self.log_max_records <= 10**12,
               "from 1 to 10^12")
        _check(self.max_body_bytes, "max_body_bytes", self.max_body_bytes >= 1024)
        _check(self.redis_timeout_s, "redis_timeout_s", _positive(self.redis_timeout_s))
        _check(self.redis_max_connections, "redis_max_connections", self.redis_max_connections >= 1)
        _check(self.stale_after_s, "stale_after_s", _positive(self.stale_after_s))
        _check(self.max_stale_s, "max_stale_s", _positive(self.max_stale_s)
               and self.max_stale_s >= self.stale_after_s)
        _check(self.redis_pool_timeout_s, "redis_pool_timeout_s",
               _positive(self.redis_pool_timeout_s))
        _check(self.history_interval_s, "history_interval_s",
               _positive(self.history_interval_s))
        _check(self.history_max_samples, "history_max_samples", self.history_max_samples >= 1)
        _check(self.history_fine_interval_s, "history_fine_interval_s",
               _positive(self.history_fine_interval_s))
        _check(self.history_fine_window_s, "history_fine_window_s",
               math.isfinite(self.history_fine_window_s) and self.history_fine_window_s >= 0)
        _check(self.advisor_threads, "advisor_threads", 1 <= self.advisor_threads <= 64)
        _check(self.sticky_cache_size, "sticky_cache_size", self.sticky_cache_size >= 0)
        _check(
            self.embedded_appendfsync,
            "embedded_appendfsync",
            self.embedded_appendfsync in ("always", "everysec", "no"),
        )
        _check(self.key_prefix, "key_prefix", bool(self.key_prefix) and "{" not in self.key_prefix)
        _check(self.redis_wait_replicas, "redis_wait_replicas",
               0 <= self.redis_wait_replicas <= 16)
        _check(self.redis_wait_timeout_ms, "redis_wait_timeout_ms",
               1 <= self.redis_wait_timeout_ms <= 60_000)
        if self.max_connections is not None:
            _check(self.max_connections, "max_connections", self.max_connections >= 1)
        for name in ("cors_origins", "allowed_hosts"):
            for item in _items(getattr(self, name)):
                _check(item, name, " " not in item and "/" not in item.removeprefix("http://")
                       .removeprefix("https://").rstrip("/") and (
                           name == "allowed_hosts" or item.startswith(("http://", "https://"))))
        self._check_alerts()
        if self.redis_url is not None:
            try:
                redisurl.parse(self.redis_url)
            except redisurl.RedisUrlError as error:
                raise SettingsError(f"redis_url: {error}") from None

    def _check_alerts(self) -> None:
        for url in _items(self.alert_webhook_urls):
            _check_url(url, "alert_webhook_urls", redacted_webhook(url))
        if self.public_url is not None:
            _check_url(self.public_url, "public_url", self.public_url)
        _check(self.alert_secret, "alert_secret", self.alert_secret is None
               or bool(self.alert_secret.strip()))
        _check(self.alert_interval_s, "alert_interval_s", _positive(self.alert_interval_s))
        _check(self.alert_attempts, "alert_attempts", 1 <= self.alert_attempts <= 10)
        _check(self.alert_backoff_s, "alert_backoff_s",
               _positive(self.alert_backoff_s) and self.alert_backoff_s <= 60)
        _check(self.alert_timeout_s, "alert_timeout_s",
               _positive(self.alert_timeout_s) and self.alert_timeout_s <= 60)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        """Settings from ``BANDIT_<NAME>`` variables, then explicit overrides (flags) on top."""
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = environ.get(f"BANDIT_{field.name.upper()}")
            if raw is not None:
                values[field.name] = _convert(field.name, field.type, raw)
        values.update({name: value for name, value in overrides.items() if value is not None})
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @property
    def cors_origin_list(self) -> list[str]:
        return _items(self.cors_origins)

    @property
    def allowed_host_list(self) -> list[str]:
        return _items(self.allowed_hosts)

    @property
    def alert_webhook_list(self) -> list[str]:
        return _items(self.alert_webhook_urls)


def _items(text: str | None) -> list[str]:
    """The items of a comma-separated setting."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def _check_url(url: str, name: str, shown: str) -> None:
    """Refuse, at start, a URL no request could be sent to; ``shown``: the URL as the message
    may show it (a webhook's path is often its secret)."""
    problem = _url_problem(url)
    if problem is not None:
        raise SettingsError(f"BANDIT_{name.upper()}: {shown!r} is not a usable http(s) URL: "
                            f"{problem}")


def _url_problem(url: str) -> str | None:
    if any(c.isspace() for c in url):
        return "it contains a space"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a port out of range or not a number
    except ValueError as error:
        return str(error)
    if parts.scheme not in ("http", "https"):
        return "the scheme must be http or https"
    if not parts.hostname:
        return "it names no host"
    if port == 0:
        return "port 0"
    return None


def redacted_webhook(url: str) -> str:
    """Scheme and host only: a webhook's path is often its secret (Slack's are)."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        scheme, rest = "", url
    authority = rest.split("/", 1)[0].split("?", 1)[0]
    host = authority.rpartition("@")[2]
    return f"{scheme}{separator}{host}{'/...' if len(rest) > len(authority) else ''}"


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def _check(value: object, name: str, ok: bool, allowed: str | None = None) -> None:
    if not ok:
        raise SettingsError(f"{name}: {value!r} is not a valid value"
                            + (f" (allowed: {allowed})" if allowed else ""))


def _convert(name: str, annotation: object, raw: str) -> Any:
    kind = str(annotation)
    if kind == "bool":
        if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise SettingsError(f"BANDIT_{name.upper()}: {raw!r} is not true or false")
        return raw.lower() in ("1", "true", "yes")
    try:
        if "int" in kind:
            return int(raw)
        if "float" in kind:
            return float(raw)
        if "Path" in kind:
            return Path(raw)
    except ValueError as error:
        raise SettingsError(f"BANDIT_{name.upper()}: {raw!r} is not a valid value") from error
    return raw


def environ() -> Mapping[str, str]:
    """The process environment, read when called (never at import)."""
    return os.environ
