"""Cost against the number of experiments: idle CPU, allocate latency and memory of one
`bandit serve` process holding 100, 10,000 and 100,000 experiments in its cache.

Before the change feed, every refresh (every 0.2 s) read the change counter of every cached
experiment: 20,000 kept an idle process at 99% of a core and allocate p99 at 406 ms. Targets:
idle CPU at most 5% of a core at 100,000 experiments, allocate p99 within 2x of 100.

For each size: a fresh redis-server (no persistence), the experiments created through
``RedisStore.create``, one `bandit serve` process, and every experiment brought into its cache
by event batches naming 1,000 experiments each. Those events changed every experiment, which
the history sampler records within the next minute (once each); the measures start after
``--settle`` seconds (75), when that is done:

- idle CPU: the process's user + system CPU time over ``--idle`` seconds, as a share of one
  core (from /proc, so it includes the numba threads);
- allocate: ``--requests`` single decisions from 16 concurrent connections, each for an
  experiment drawn at random from all of them (every one is cached); p50 and p99 latency;
- RSS of the service process.

Ratios are against the first size (100 experiments), measured in the same run.

Usage: python -m benchmarks.bench_scale [--sizes 100,10000,100000] [--idle 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bandit.model import parse_new_experiment
from bandit.store.embedded import free_port, stop_process, wait_port
from bandit.store.redis_store import RedisStore
from tests.support.redis import RedisServer

IDLE_TARGET = 0.05
P99_TARGET = 2.0


async def _create(url: str, count: int) -> list[str]:
    connections = 64
    store = RedisStore.from_url(url, "bandit", timeout_s=30, max_connections=connections)
    ids = [f"exp-{i:06d}" for i in range(count)]
    entry = {"version": 1, "at": 0.0, "actor": "bench", "action": "create", "changes": {},
             "reason": None}
    # No more at once than there are connections: on a loaded machine, creations waiting for
    # a connection past the pool timeout failed the run ("every Redis connection ... is busy").
    for start in range(0, count, connections):
        await asyncio.gather(*(store.create(parse_new_experiment(
            {"id": i, "arms": ["a", "b"], "reward": "bernoulli"}, 0.0), entry)
            for i in ids[start:start + connections]))
    await store.close()
    return ids


async def _warm(base: str, ids: list[str]) -> None:
    async with aiohttp.ClientSession() as session:
        for start in range(0, len(ids), 1000):
            batch = [{"id": f"w{i}", "experiment": experiment, "arm": "a", "reward": 0}
                     for i, experiment in enumerate(ids[start:start + 1000], start)]
            async with session.post(f"{base}/v1/events", json={"events": batch}) as response:
                body = await response.json()
                assert body["accepted"] == len(batch), body


async def _allocate(base: str, ids: list[str], requests: int) -> list[float]:
    latencies: list[float] = []
    rng = random.Random(1)
    remaining = requests

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            experiment = rng.choice(ids)
            started = time.perf_counter()
            async with session.post(f"{base}/v1/experiments/{experiment}/allocate") as reply:
                await reply.read()
                assert reply.status == 200
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=16)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(16)))
    return latencies


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(size: int, arguments: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    port = free_port()
    redis_server = RedisServer(workdir / "redis")
    redis_server.start()
    service = None
    try:
        url = redis_server.url
        started = time.monotonic()
        ids = asyncio.run(_create(url, size))
        created_s = time.monotonic() - started
        service = subprocess.Popen(
            [sys.executable, "-m", "bandit", "serve", "--port", str(port), "--redis", url,
             "--log-level", "WARNING"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port, timeout_s=120)
        base = f"http://127.0.0.1:{port}"
        asyncio.run(_allocate(base, ids[:10], 200))  # JIT and signer warm
        asyncio.run(_warm(base, ids))
        time.sleep(arguments.settle)
        before = _cpu_seconds(service.pid)
        time.sleep(arguments.idle)
        idle = (_cpu_seconds(service.pid) - before) / arguments.idle
        latencies = sorted(asyncio.run(_allocate(base, ids, arguments.requests)))
        return {"size": size, "created_s": created_s, "idle_cpu": idle,
                "p50_ms": 1000 * statistics.median(latencies),
                "p99_ms": 1000 * latencies[int(0.99 * len(latencies))],
                "rss_mb": _rss_mb(service.pid)}
    finally:
        if service is not None:
            stop_process(service)
        redis_server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,10000,100000")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle measured")
    parser.add_argument("--settle", type=float, default=75.0,
                        help="seconds after warming before measuring")
    parser.add_argument("--requests", type=int, default=5000)
    arguments = parser.parse_args()
    rows = [measure(int(size), arguments) for size in arguments.sizes.split(",")]
    base = rows[0]
    print(f"{'experiments':>11} {'idle CPU':>9} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'p99 / first':>11} {'RSS MB':>7} {'created in':>10}")
    for row in rows:
        print(f"{row['size']:>11,} {row['idle_cpu']:>8.1%} {row['p50_ms']:>7.2f} "
              f"{row['p99_ms']:>7.2f} {row['p99_ms'] / base['p99_ms']:>10.2f}x "
              f"{row['rss_mb']:>7.0f} {row['created_s']:>9.1f}s")
    last = rows[-1]
    print(f"targets at {last['size']:,}: idle CPU {last['idle_cpu']:.1%} "
          f"(<= {IDLE_TARGET:.0%}: {'met' if last['idle_cpu'] <= IDLE_TARGET else 'MISSED'}), "
          f"p99 {last['p99_ms'] / base['p99_ms']:.2f}x the first size (<= {P99_TARGET:g}x: "
          f"{'met' if last['p99_ms'] / base['p99_ms'] <= P99_TARGET else 'MISSED'})")


if __name__ == "__main__":
    main()
