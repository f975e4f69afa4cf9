"""How long the largest requests one client may send hold the event loop of a service process.

One request used to freeze a process for 10 s (n=10,000 slates of k=1,000 long arm ids). The
target is that no request holds the loop for more than about 50 ms. Measured from outside: a
probe sends ``GET /healthz`` on its own connection every 2 ms and records how late each answer
is; while a request is being served, the probe's worst delay is how long the loop was held.

Rows, each repeated ``--repeat`` times on one `bandit serve` process (own redis-server, no
persistence), an experiment of 1,000 arms of 64 characters:

- idle: no request (the baseline: the probe's own delay);
- allocate n=10,000 single decisions;
- allocate n=10 slates of k=1,000 (10,000 placements, the cap);
- events: 10,000 events in one batch, and a batch naming 1,000 experiments not cached yet;
- list: a page of 1,000 experiments;
- contextual: allocate with a new 63-feature context on 1,000 arms x 64 columns (decided in a
  worker thread), and 10,000 events with 63-feature contexts in one batch (8.7 MB; bodies
  built before the probe starts, so the client's own loop is not what is measured).

Prints the worst probe delay per row and its ratio to idle.

Usage: python -m benchmarks.bench_loop [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from random import Random
from typing import Any

import aiohttp
import orjson

from bandit.store.embedded import free_port, stop_process, wait_port
from tests.support.redis import RedisServer

ARMS = [f"{i:04d}" + "x" * 60 for i in range(1000)]
#: A contextual model of 64 columns: an intercept and 63 numeric features.
FEATURES = [{"name": f"f{i}", "type": "numeric", "scale": [0, 1]} for i in range(63)]
TARGET_MS = 50.0


async def _probe(base: str, stop: asyncio.Event) -> float:
    """The worst delay of /healthz answers until ``stop``, in ms."""
    worst = 0.0
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            started = time.perf_counter()
            async with session.get(f"{base}/healthz") as response:
                await response.read()
            worst = max(worst, time.perf_counter() - started)
            await asyncio.sleep(0.002)
    return 1000 * worst


async def _during(base: str, request: Callable[[aiohttp.ClientSession], Awaitable[Any]],
                  repeat: int) -> float:
    worst = 0.0
    async with aiohttp.ClientSession() as session:
        for _ in range(repeat):
            stop = asyncio.Event()
            probe = asyncio.create_task(_probe(base, stop))
            await asyncio.sleep(0.05)
            await request(session)
            await asyncio.sleep(0.05)
            stop.set()
            worst = max(worst, await probe)
    return worst


async def _run(base: str, repeat: int) -> list[tuple[str, float]]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/v1/experiments", json={
                "id": "wide", "arms": ARMS, "reward": "bernoulli"}) as response:
            assert response.status == 201
        for i in range(1000):
            async with session.post(f"{base}/v1/experiments", json={
                    "id": f"many-{i:04d}", "arms": ["a", "b"], "reward": "bernoulli"}) as reply:
                assert reply.status == 201
        async with session.post(f"{base}/v1/experiments/wide/allocate") as response:
            assert response.status == 200  # cached, signer loaded
        for experiment_id, arms in (("wide-ctx", ARMS), ("narrow-ctx", ["a", "b"])):
            async with session.post(f"{base}/v1/experiments", json={
                    "id": experiment_id, "arms": arms, "reward": "bernoulli",
                    "model": {"type": "linear", "features": FEATURES}}) as response:
                assert response.status == 201
    counter = iter(range(10**9))
    random = Random(1)

    def context() -> dict[str, float]:
        return {f"f{i}": round(random.random(), 4) for i in range(len(FEATURES))}

    contextual_events = iter([orjson.dumps({"events": [
        {"id": f"c{batch}-{i}", "experiment": "narrow-ctx", "arm": "a", "reward": 1,
         "context": context()} for i in range(10_000)]}) for batch in range(repeat)])
    contexts = iter([orjson.dumps({"context": context()}) for _ in range(repeat)])

    def post_bytes(path: str, bodies: Iterator[bytes]
                   ) -> Callable[[aiohttp.ClientSession], Awaitable[Any]]:
        async def send(session: aiohttp.ClientSession) -> Any:
            async with session.post(f"{base}{path}", data=next(bodies),
                                    headers={"Content-Type": "application/json"}) as response:
                assert response.status == 200, await response.text()
                return await response.read()
        return send

    def post(path: str, body: Any) -> Callable[[aiohttp.ClientSession], Awaitable[Any]]:
        async def send(session: aiohttp.ClientSession) -> Any:
            payload = body() if callable(body) else body
            async with session.post(f"{base}{path}", json=payload) as response:
                assert response.status == 200, await response.text()
                return await response.read()
        return send

    async def listing(session: aiohttp.ClientSession) -> Any:
        async with session.get(f"{base}/v1/experiments?limit=1000") as response:
            assert response.status == 200
            return await response.read()

    def events_one() -> Any:
        batch = next(counter)
        return {"events": [{"id": f"e{batch}-{i}", "experiment": "wide", "arm": ARMS[i % 1000],
                            "reward": 1} for i in range(10_000)]}

    def events_many() -> Any:
        batch = next(counter)
        return {"events": [{"id": f"m{batch}-{i}", "experiment": f"many-{i:04d}", "arm": "a",
                            "reward": 1} for i in range(1000)]}

    rows: list[tuple[str, Callable[[aiohttp.ClientSession], Awaitable[Any]]]] = [
        ("idle", lambda session: asyncio.sleep(0.2)),
        ("allocate n=10,000", post("/v1/experiments/wide/allocate", {"n": 10_000})),
        ("allocate n=10 slates of k=1,000", post("/v1/experiments/wide/allocate",
                                                 {"n": 10, "k": 1000})),
        ("events: 10,000 in one batch", post("/v1/events", events_one)),
        ("events: 1,000 experiments (first batch uncached)", post("/v1/events", events_many)),
        ("list: a page of 1,000", listing),
        ("allocate, new context, 1,000 arms x 64 columns",
         post_bytes("/v1/experiments/wide-ctx/allocate", contexts)),
        ("events: 10,000 with 63-feature contexts", post_bytes("/v1/events",
                                                               contextual_events)),
    ]
    return [(name, await _during(base, request, repeat)) for name, request in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    arguments = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    port = free_port()
    redis_server = RedisServer(workdir / "redis")
    redis_server.start()
    service = None
    try:
        service = subprocess.Popen(
            [sys.executable, "-m", "bandit", "serve", "--port", str(port), "--redis",
             redis_server.url, "--log-level", "WARNING"])
        wait_port(port, timeout_s=120)
        rows = asyncio.run(_run(f"http://127.0.0.1:{port}", arguments.repeat))
    finally:
        if service is not None:
            stop_process(service)
        redis_server.stop()
    idle = rows[0][1]
    print(f"{'request':50} {'worst /healthz delay':>21} {'vs idle':>8}")
    for name, worst in rows:
        print(f"{name:50} {worst:18.1f} ms {worst / idle:7.1f}x")
    worst = max(value for _, value in rows[1:])
    print(f"the loop was held at most {worst:.1f} ms (target about {TARGET_MS:g} ms: "
          f"{'met' if worst <= TARGET_MS else 'MISSED'})")


if __name__ == "__main__":
    main()
