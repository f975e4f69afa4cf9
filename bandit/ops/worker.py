"""``bandit worker --stream NAME``: apply reward events written to a Redis Stream.

Producers ``XADD`` entries with a field ``event`` (the JSON of one reward event, as an item of
``POST /v1/events``) or ``events`` (a JSON list of them); workers of one consumer group apply
each event's effect once. ``bandit.ops.stream`` describes the entry format, the dead-letter stream
and the guarantees; this module is the process around it: options, signals, the read / claim
loop with backoff, the periodic throughput line and the Prometheus endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from redis import exceptions as redis_errors

from bandit import policy, tokens
from bandit.errors import BanditError, StoreUnavailable
from bandit.inputs import MAX_EVENTS
from bandit.ops.stream import Outcome, StreamConsumer
from bandit.ops.stream_entries import Entry, Lag, StreamConfig, sibling_key
from bandit.serving.service import BanditService
from bandit.settings import Settings, SettingsError, environ
from bandit.store.deployment import check_deployment
from bandit.store.redis_store import RedisStore

logger = logging.getLogger("bandit.ops.worker")

#: Upper bounds of the batch-apply latency buckets, in seconds.
APPLY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
#: Backoff after a failure: doubles from the first value up to the second.
BACKOFF_S = (0.05, 5.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stream", required=True, metavar="NAME",
                        help="the stream producers XADD reward events to")
    parser.add_argument("--group", default="bandit", help="consumer group (default bandit)")
    parser.add_argument("--consumer", help="this consumer's name (default hostname-pid); reuse "
                                           "a name to take over its pending entries at once")
    parser.add_argument("--redis", dest="redis_url", metavar="URL",
                        help="the service's store (or BANDIT_REDIS_URL); there is no embedded "
                             "Redis for the worker")
    parser.add_argument("--batch", type=int, default=500, help="entries per read (default 500)")
    parser.add_argument("--block-ms", type=int, default=1000,
                        help="how long a read waits for new entries (default 1000)")
    parser.add_argument("--claim-idle-ms", type=int, default=30_000,
                        help="take over entries pending this long, e.g. a crashed consumer's "
                             "(XAUTOCLAIM; default 30000)")
    parser.add_argument("--max-deliveries", type=int, default=5,
                        help="deliveries of an entry before it is dead-lettered (default 5)")
    parser.add_argument("--dead-letter", metavar="NAME",
                        help="dead-letter stream (default {STREAM}:dead, in the stream's hash "
                             "slot)")
    parser.add_argument("--metrics-port", type=int, default=0,
                        help="serve Prometheus /metrics on 127.0.0.1:PORT (default 0 = off)")
    parser.add_argument("--log-interval", type=float, default=10.0, metavar="SECONDS",
                        help="seconds between throughput log lines (default 10)")
    parser.add_argument("--log-level", default="INFO")


def run(arguments: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env(environ(), redis_url=arguments.redis_url)
        config = _config(arguments, settings)
        asyncio.run(check_deployment(settings))
    except SettingsError as error:
        print(f"bandit worker: {error}", file=sys.stderr)
        return 2
    return asyncio.run(_main(settings, config, arguments.metrics_port, arguments.log_interval))


def _config(arguments: argparse.Namespace, settings: Settings) -> StreamConfig:
    if settings.redis_url is None:
        raise SettingsError("redis_url: the worker applies events to an existing store: pass "
                            "--redis URL or set BANDIT_REDIS_URL")
    checks = [("batch", arguments.batch, 1 <= arguments.batch <= MAX_EVENTS),
              ("block_ms", arguments.block_ms,
               0 < arguments.block_ms < settings.redis_timeout_s * 1000),
              ("claim_idle_ms", arguments.claim_idle_ms, arguments.claim_idle_ms >= 1),
              ("max_deliveries", arguments.max_deliveries, arguments.max_deliveries >= 1),
              ("metrics_port", arguments.metrics_port, 0 <= arguments.metrics_port <= 65535),
              ("log_interval", arguments.log_interval, arguments.log_interval > 0)]
    for name, value, ok in checks:
        if not ok:
            hint = (f" (a blocked read must end before the Redis timeout, "
                    f"redis_timeout_s={settings.redis_timeout_s:g})" if name == "block_ms" else "")
            raise SettingsError(f"{name}: {value!r} is not a valid value{hint}")
    return StreamConfig(
        stream=arguments.stream, group=arguments.group,
        consumer=arguments.consumer or f"{socket.gethostname()}-{os.getpid()}",
        dead_letter=arguments.dead_letter or sibling_key(arguments.stream, "dead"),
        batch=arguments.batch, block_ms=arguments.block_ms,
        claim_idle_ms=arguments.claim_idle_ms, max_deliveries=arguments.max_deliveries)


class StreamMetrics:
    """The worker's Prometheus metrics: plain counters, turned into families when scraped."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events: defaultdict[str, int] = defaultdict(int)
        self.entries: defaultdict[str, int] = defaultdict(int)
        self.dead_letters: defaultdict[str, int] = defaultdict(int)
        self.batches = self.deferred = self.retries = 0
        self._apply_buckets = [0] * (len(APPLY_BUCKETS) + 1)
        self._apply_total = 0.0
        self.lag: Lag | None = None
        self.events_per_second = 0.0
        self.registry.register(self)

    def add(self, source: str, entries: int, outcome: Outcome, seconds: float) -> None:
        self.batches += 1
        self.entries[source] += entries
        self.events["applied"] += outcome.applied
        self.events["duplicate"] += outcome.duplicates
        self.events["rejected"] += outcome.rejected
        self.deferred += outcome.deferred
        for kind, count in outcome.dead.items():
            self.dead_letters[kind] += count
        self._apply_buckets[bisect.bisect_left(APPLY_BUCKETS, seconds)] += 1
        self._apply_total += seconds

    @property
    def events_total(self) -> int:
        return sum(self.events.values())

    def collect(self) -> Iterator[Metric]:
        def counter(name: str, documentation: str, label: str,
                    values: dict[str, int]) -> CounterMetricFamily:
            family = CounterMetricFamily(name, documentation, labels=[label])
            for key, value in sorted(values.items()):
                family.add_metric([key], value)
            return family

        yield counter("bandit_stream_events", "Reward events handled, by outcome", "outcome",
                      self.events)
        yield counter("bandit_stream_entries", "Stream entries handled, by how they came "
                      "(new, claimed from another consumer, recovered after a restart)",
                      "source", self.entries)
        yield counter("bandit_stream_dead_letters", "Items written to the dead-letter stream, "
                      "by kind (malformed, rejected, max_deliveries, expired)", "kind",
                      self.dead_letters)
        yield CounterMetricFamily("bandit_stream_batches", "Batches applied", value=self.batches)
        yield CounterMetricFamily("bandit_stream_deferred", "Entries left pending because "
                                  "their experiment does not exist yet", value=self.deferred)
        yield CounterMetricFamily("bandit_stream_retries", "Backoffs after Redis was "
                                  "unreachable", value=self.retries)
        histogram = HistogramMetricFamily("bandit_stream_apply_seconds",
                                          "Time to apply and acknowledge one batch")
        cumulative, buckets = 0, []
        for bound, count in zip((*APPLY_BUCKETS, float("inf")), self._apply_buckets,
                                strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
        histogram.add_metric([], buckets, self._apply_total)
        yield histogram
        yield GaugeMetricFamily("bandit_stream_events_per_second", "Events handled per second "
                                "over the last log interval", value=self.events_per_second)
        lag = self.lag
        if lag is not None:
            yield GaugeMetricFamily("bandit_stream_lag_entries", "Entries not yet delivered to "
                                    "the group (capped on Redis < 7, see "
                                    "bandit_stream_lag_capped)", value=lag.entries)
            yield GaugeMetricFamily("bandit_stream_lag_capped", "1 when lag_entries is a lower "
                                    "bound (the count stopped at its cap)", value=int(lag.capped))
            yield GaugeMetricFamily("bandit_stream_lag_seconds", "Age of the oldest entry not "
                                    "yet delivered to the group", value=lag.seconds)
            yield GaugeMetricFamily("bandit_stream_pending_entries", "Entries delivered but not "
                                    "acknowledged (group-wide)", value=lag.pending)
            yield GaugeMetricFamily("bandit_stream_oldest_pending_seconds", "Age of the oldest "
                                    "pending entry", value=lag.oldest_pending_seconds)

    async def refresh_lag(self, consumer: StreamConsumer) -> None:
        try:
            self.lag = await consumer.lag()
        except (BanditError, redis_errors.ResponseError) as error:
            logger.warning("could not measure the stream lag: %s", error)


#: Seconds each step of a stop (a background task, the metrics server, the store) may take.
CLEANUP_S = 5.0


async def _main(settings: Settings, config: StreamConfig, metrics_port: int,
                log_interval: float) -> int:
    await asyncio.to_thread(policy.warm_up_kernels)
    await asyncio.to_thread(tokens.warm_up)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    store = RedisStore.from_settings(settings)
    service = BanditService(store, settings)
    consumer = StreamConsumer(service, config)
    metrics = StreamMetrics()
    tasks: list[asyncio.Task[None]] = []
    runner: web.AppRunner | None = None
    try:
        if not await _start(consumer, stopping):
            return 2
        tasks = [asyncio.create_task(service.feed.run(), name="change-feed"),
                 asyncio.create_task(service.cache.run(), name="cache-refresh"),
                 asyncio.create_task(_log_throughput(consumer, metrics, log_interval),
                                     name="throughput-log")]
        if metrics_port:
            runner = await _serve_metrics(consumer, metrics, metrics_port)
        logger.info("consumer %r of group %r reading stream %r (dead letters to %r)",
                    config.consumer, config.group, config.stream, config.dead_letter)
        await _consume(consumer, metrics, stopping)
        logger.info("stopped: %d events applied, %d duplicates, %d rejected",
                    metrics.events["applied"], metrics.events["duplicate"],
                    metrics.events["rejected"])
        return 0
    finally:
        for task in tasks:
            task.cancel()
        # Bounded: a stop must not wait on a connection left in a bad state by an outage (a
        # worker once outlived its 20 s stop window after a Redis pause, in a test run).
        # (asyncio.wait, not wait_for: that would wait for a stuck step's cancellation too.)
        steps = [*tasks, *([asyncio.create_task(runner.cleanup())] if runner is not None
                           else []), asyncio.create_task(store.close())]
        for step in steps:
            done, _ = await asyncio.wait({step}, timeout=CLEANUP_S)
            if not done:
                logger.warning("stopping: %s did not finish within %g s; going on",
                               step.get_name(), CLEANUP_S)
            elif not step.cancelled() and step.exception() is not None:
                logger.warning("stopping: %s failed: %s", step.get_name(), step.exception())


async def _start(consumer: StreamConsumer, stopping: asyncio.Event) -> bool:
    """Check the keys and create the group, waiting for Redis as long as it takes."""
    config = consumer.config
    delay = BACKOFF_S[0]
    while not stopping.is_set():
        try:
            for name in (config.stream, config.dead_letter):
                kind = await consumer.client.type(name)
                if kind not in ("none", "stream"):
                    logger.error("%r holds a %s, not a stream", name, kind)
                    return False
            await consumer.ensure_group()
            return True
        except (StoreUnavailable, redis_errors.ConnectionError,
                redis_errors.TimeoutError) as error:
            logger.warning("waiting for Redis: %s", error)
            delay = await _pause(delay, stopping)
    return True


async def _pause(delay: float, stopping: asyncio.Event) -> float:
    """Sleep ``delay`` (cut short by a stop); the next, doubled delay."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), delay)
    return min(delay * 2, BACKOFF_S[1])


async def _consume(consumer: StreamConsumer, metrics: StreamMetrics,
                   stopping: asyncio.Event) -> None:
    """Until stopped: this consumer's own pending entries first (a restart), then new ones,
    and every so often entries idle past ``claim_idle_ms`` (XAUTOCLAIM, paging the cursor)."""
    config = consumer.config
    claim_every = min(max(config.claim_idle_ms / 2000, 0.05), 5.0)
    recover_after: str | None = "0"
    # Re-reads of this consumer's own entries caused by an outage, per entry: they count as
    # deliveries in Redis but are not the entry's fault, so they are taken off again.
    outage_reads: Counter[str] = Counter()
    after_outage = False
    cursor, next_claim = "0-0", 0.0
    delay = BACKOFF_S[0]
    while not stopping.is_set():
        try:
            entries: list[Entry] = []
            source = "new"
            if recover_after is not None:
                entries, source = await consumer.read_own(recover_after), "recovered"
                recover_after = entries[-1].entry_id if entries else None
                if after_outage:
                    outage_reads.update(entry.entry_id for entry in entries)
                    entries = [entry._replace(deliveries=max(
                        1, entry.deliveries - outage_reads[entry.entry_id])) for entry in entries]
                if recover_after is None:
                    after_outage = False
                    outage_reads.clear()
            elif time.monotonic() >= next_claim:
                entries, cursor = await consumer.claim(cursor)
                source = "claimed"
                if cursor == "0-0":
                    next_claim = time.monotonic() + claim_every
            if not entries:
                entries, source = await consumer.read_new(), "new"
            if entries:
                await _handle(consumer, metrics, entries, source, stopping)
            delay = BACKOFF_S[0]
        except StoreUnavailable as error:
            metrics.retries += 1
            logger.warning("Redis unavailable, retrying in %.2f s: %s", delay, error)
            delay = await _pause(delay, stopping)
            # Entries delivered to this consumer may not have reached it (the reply was lost)
            # or not been acknowledged (the batch failed half-way): read its own pending
            # entries again first, instead of leaving them to a claim after claim_idle_ms.
            recover_after, after_outage = "0", True
        except redis_errors.ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            logger.warning("the group or stream was deleted; creating it again")
            await consumer.ensure_group()


async def _handle(consumer: StreamConsumer, metrics: StreamMetrics, entries: list[Entry],
                  source: str, stopping: asyncio.Event) -> None:
    """Apply a batch; while Redis is unreachable, retry it in place (an outage is not the
    entries' fault, so it does not spend their deliveries)."""
    delay = BACKOFF_S[0]
    while True:
        started = time.perf_counter()
        try:
            outcome = await consumer.handle(entries)
        except StoreUnavailable as error:
            metrics.retries += 1
            if stopping.is_set():
                logger.warning("stopping with %d entries unacknowledged (Redis unavailable); "
                               "they will be delivered again", len(entries))
                return
            logger.warning("Redis unavailable while applying %d entries, retrying in "
                           "%.2f s: %s", len(entries), delay, error)
            delay = await _pause(delay, stopping)
            continue
        except Exception as error:
            # A bug or a Redis error reply: leave the entries pending. They come back by
            # XAUTOCLAIM after claim_idle_ms and go to the dead-letter stream with this reason
            # after max_deliveries.
            logger.exception("could not apply %d entries; left pending", len(entries))
            with contextlib.suppress(BanditError):
                await consumer.record_failure(entries, f"{type(error).__name__}: {error}")
            return
        metrics.add(source, len(entries), outcome, time.perf_counter() - started)
        return


async def _log_throughput(consumer: StreamConsumer, metrics: StreamMetrics,
                          interval: float) -> None:
    last_total, last_time = metrics.events_total, time.monotonic()
    while True:
        await asyncio.sleep(interval)
        now, total = time.monotonic(), metrics.events_total
        metrics.events_per_second = (total - last_total) / (now - last_time)
        last_total, last_time = total, now
        await metrics.refresh_lag(consumer)
        lag = metrics.lag
        logger.info(
            "%.0f events/s (applied %d, duplicates %d, rejected %d, dead letters %d in all); "
            "lag %s%s entries, %.1f s; pending %s", metrics.events_per_second,
            metrics.events["applied"], metrics.events["duplicate"], metrics.events["rejected"],
            sum(metrics.dead_letters.values()),
            "?" if lag is None else lag.entries, "+" if lag is not None and lag.capped else "",
            0.0 if lag is None else lag.seconds, "?" if lag is None else lag.pending)


async def _serve_metrics(consumer: StreamConsumer, metrics: StreamMetrics,
                         port: int) -> web.AppRunner:
    async def endpoint(request: web.Request) -> web.Response:
        # Measured when scraped: three small Redis commands and a capped XRANGE.
        await metrics.refresh_lag(consumer)
        return web.Response(body=generate_latest(metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", endpoint)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    logger.info("metrics on http://127.0.0.1:%d/metrics", port)
    return runner
