"""Stream ingestion: events/s of `bandit worker` draining a Redis Stream, and its lag under load.

Starts its own redis-server (no persistence) and creates 5 bernoulli experiments of 10 arms.

- baseline: the same events through `BanditService.apply_events` in this process, in batches
  of `--batch` (validation, dedup and the Lua script; no stream, no HTTP)
- drain: a producer fills a stream with `--events` single-event entries, then 1 worker (and, on a
  second stream, 2 workers of one group) drain it; events/s counts from the first delivery to
  the last acknowledgement, so process start-up is left out
- lag: a producer writes `--rate` events/s for `--seconds` while one worker drains; lag in
  entries and seconds (`bandit.stream.measure_lag`) is sampled every 0.25 s

Prints events/s and the ratios to the baseline measured in the same run.

Usage: python -m benchmarks.bench_stream [--events 200000] [--rate 20000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import redis

from bandit.ops.stream_entries import measure_lag
from bandit.serving.service import BanditService
from bandit.settings import Settings
from bandit.store.redis_store import RedisStore
from tests.support.redis import RedisServer

EXPERIMENTS = [f"bench{i}" for i in range(5)]
ARMS = [f"arm{i}" for i in range(10)]


def _events(count: int, prefix: str, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"id": f"{prefix}-{i}", "experiment": rng.choice(EXPERIMENTS),
             "arm": rng.choice(ARMS), "reward": rng.randint(0, 1)} for i in range(count)]


async def _setup_and_baseline(url: str, events: list[dict[str, Any]], batch: int) -> float:
    settings = Settings(redis_url=url)
    store = RedisStore.from_settings(settings)
    service = BanditService(store, settings, seed=1)
    for experiment in EXPERIMENTS:
        await service.create_experiment({"id": experiment, "arms": ARMS,
                                         "reward": "bernoulli"})
    await service.apply_events({"events": _events(batch, "warm-up", 0)})  # JIT, caches
    started = time.perf_counter()
    for start in range(0, len(events), batch):
        await service.apply_events({"events": events[start:start + batch]})
    elapsed = time.perf_counter() - started
    await store.close()
    return len(events) / elapsed


def _produce(client: redis.Redis, stream: str, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 5000):
        pipe = client.pipeline(transaction=False)
        for event in events[start:start + 5000]:
            pipe.xadd(stream, {"event": orjson.dumps(event)})
        pipe.execute()


def _group(client: redis.Redis, stream: str) -> dict[str, Any] | None:
    try:
        groups: Any = client.xinfo_groups(stream)
    except redis.ResponseError:
        return None
    return groups[0] if groups else None


def _worker(url: str, stream: str, batch: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bandit", "worker", "--stream", stream,
                             "--redis", url, "--batch", str(batch), "--log-level", "WARNING"])


def _drain(client: redis.Redis, url: str, stream: str, workers: int, batch: int) -> float:
    """Events/s of ``workers`` processes draining the filled stream."""
    total: Any = client.xlen(stream)
    processes = [_worker(url, stream, batch) for _ in range(workers)]
    try:
        while True:
            group = _group(client, stream)
            if group and group["last-delivered-id"] != "0-0":
                break
            time.sleep(0.005)
        started = time.perf_counter()
        info: Any = client.xinfo_stream(stream)
        last = info["last-generated-id"]
        while True:
            group = _group(client, stream)
            assert group is not None
            if group["last-delivered-id"] == last and group["pending"] == 0:
                break
            time.sleep(0.01)
        return int(total) / (time.perf_counter() - started)
    finally:
        for process in processes:
            process.terminate()
            process.wait()


async def _lag_under_load(client: redis.Redis, url: str, stream: str, rate: int,
                          seconds: float, batch: int) -> tuple[list[float], list[int], int]:
    process = _worker(url, stream, batch)
    store = RedisStore.from_settings(Settings(redis_url=url))
    lag_seconds: list[float] = []
    lag_entries: list[int] = []
    written = 0
    try:
        while _group(client, stream) is None:
            client.xadd(stream, {"event": orjson.dumps(_events(1, "lag-warm", 0)[0])})
            await asyncio.sleep(0.05)
        events = _events(int(rate * seconds), "lag", 7)
        tick = 0.02
        per_tick = max(1, int(rate * tick))
        started = time.perf_counter()
        next_sample = started
        while written < len(events):
            due = started + written / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            pipe = client.pipeline(transaction=False)
            for event in events[written:written + per_tick]:
                pipe.xadd(stream, {"event": orjson.dumps(event)})
            pipe.execute()
            written += per_tick
            if time.perf_counter() >= next_sample:
                lag = await measure_lag(store.client, stream, "bandit")
                lag_seconds.append(lag.seconds)
                lag_entries.append(lag.entries + lag.pending)
                next_sample += 0.25
        return lag_seconds, lag_entries, written
    finally:
        await store.close()
        process.terminate()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rate", type=int, default=20_000, help="events/s in the lag run")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the lag run")
    arguments = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bandit-bench-stream-"))
    server = RedisServer(workdir / "redis")
    server.start()
    url = server.url
    client = redis.Redis(port=server.port, decode_responses=True)
    try:
        baseline = asyncio.run(_setup_and_baseline(
            url, _events(arguments.events, "base", 1), arguments.batch))
        _produce(client, "one", _events(arguments.events, "one", 2))
        one = _drain(client, url, "one", 1, arguments.batch)
        _produce(client, "two", _events(arguments.events, "two", 3))
        two = _drain(client, url, "two", 2, arguments.batch)
        lag_seconds, lag_entries, written = asyncio.run(_lag_under_load(
            client, url, "lag", arguments.rate, arguments.seconds, arguments.batch))
        print(f"{arguments.events:,} events, 5 experiments x 10 arms, batches of "
              f"{arguments.batch}")
        print(f"{'path':44} {'events/s':>10} {'vs baseline':>12}")
        print(f"{'apply_events in-process (baseline)':44} {baseline:10,.0f} {1:12.2f}")
        print(f"{'stream, 1 worker':44} {one:10,.0f} {one / baseline:12.2f}")
        print(f"{'stream, 2 workers':44} {two:10,.0f} {two / baseline:12.2f}")
        print(f"2 workers / 1 worker: {two / one:.2f}x")
        print(f"lag while producing {arguments.rate:,} events/s for {arguments.seconds:g} s "
              f"({written:,} events, {len(lag_seconds)} samples): "
              f"seconds p50 {statistics.median(lag_seconds):.3f} max {max(lag_seconds):.3f}; "
              f"entries (undelivered + pending) p50 {statistics.median(lag_entries):.0f} "
              f"max {max(lag_entries)}")
    finally:
        client.close()
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
