"""Freshness: how long a change made through one `bandit serve` process takes to show on the
others, against the refresh interval (the baseline) and the target of 1 s.

Starts its own redis-server (no persistence) and ``--processes`` (3) `bandit serve` processes
on free ports, each with ``BANDIT_REFRESH_INTERVAL_S=--refresh`` (0.2 s). Each trial uses a new
experiment, loaded into every process's cache first (so what is measured is the refresh, not a
first read), and a random pause before the change so it falls at any phase of the refresh loops:

- reward: a batch of 200 events (``--events``) that makes arm ``a`` clearly better than ``b``
  is POSTed to process A; from the moment A answered 200, process B's
  ``GET /v1/experiments/{id}/stats`` is polled until the allocation probability (``share``) of
  ``a`` has moved from 0.5 to above 0.9: B's decisions have changed;
- setting: arm ``c`` of three is paused by a PATCH to A; from A's 200, every other process is
  polled with ``allocate n=100`` until its answer carries the new version *and* none of its
  100 decisions is ``c`` (at a share of 1/3 that happens by chance with probability 2e-18); the
  time is that of the last process. An answer with the new version that still serves ``c`` is
  counted as a violation.

Each poll is a request on a kept-alive connection followed by a ``--poll-ms`` (2 ms) sleep; a
delay is counted up to the arrival of the first answer that shows the change, so it is late by
at most one poll interval plus one request (the table prints both, measured).

Usage: python -m benchmarks.bench_freshness [--trials 50] [--processes 3] [--refresh 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

from bandit.store.embedded import free_port, wait_port
from tests.support.redis import RedisServer

TARGET_S = 1.0
#: A share of arm ``a`` above this on B means B's allocation took the rewards in.
CHANGED_SHARE = 0.9
#: Polls give up after this long: the change is then reported as never seen.
GIVE_UP_S = 30.0




@contextmanager
def _deployment(processes: int, refresh_s: float) -> Iterator[list[str]]:
    """A redis-server and ``processes`` services on it; yields the services' base URLs."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-freshness-"))
    redis_server = RedisServer(workdir / "redis")
    redis_server.start()
    assert redis_server.process is not None
    started = [redis_server.process]
    environment = {**os.environ, "BANDIT_REFRESH_INTERVAL_S": repr(refresh_s)}
    try:
        ports = [free_port() for _ in range(processes)]
        for port in ports:
            started.append(subprocess.Popen(
                [sys.executable, "-m", "bandit", "serve", "--port", str(port), "--redis",
                 redis_server.url, "--log-level", "WARNING"],
                env=environment))
        for port in ports:
            wait_port(port)
        yield [f"http://127.0.0.1:{port}" for port in ports]
    finally:
        for process in reversed(started):
            process.terminate()
            process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


class _Poller:
    """Requests in a loop with a fixed sleep between them; keeps the round-trip times."""

    def __init__(self, session: aiohttp.ClientSession, poll_s: float) -> None:
        self.session = session
        self.poll_s = poll_s
        self.round_trips: list[float] = []

    async def request(self, method: str, url: str, body: Any = None) -> Any:
        async with self.session.request(method, url, json=body) as response:
            answer = await response.json()
            if response.status >= 300:
                raise RuntimeError(f"{method} {url}: {response.status} {answer}")
            return answer

    async def poll_stats(self, url: str, since: float) -> float:
        """Seconds from ``since`` until arm ``a``'s share on this process passes the mark."""
        while time.perf_counter() - since < GIVE_UP_S:
            sent = time.perf_counter()
            stats = await self.request("GET", url)
            arrived = time.perf_counter()
            self.round_trips.append(arrived - sent)
            if stats["arms"][0]["share"] > CHANGED_SHARE:
                return arrived - since
            await asyncio.sleep(self.poll_s)
        return float("inf")

    async def poll_allocate(self, url: str, since: float, version: int,
                            violations: list[int]) -> float:
        """Seconds from ``since`` until this process answers with ``version`` and obeys it."""
        while time.perf_counter() - since < GIVE_UP_S:
            sent = time.perf_counter()
            answer = await self.request("POST", url, {"n": 100})
            arrived = time.perf_counter()
            self.round_trips.append(arrived - sent)
            paused_served = any(d["arm"] == "c" for d in answer["decisions"])
            if answer["version"] >= version:
                if not paused_served:
                    return arrived - since
                violations.append(1)
            await asyncio.sleep(self.poll_s)
        return float("inf")


async def _reward_trial(poller: _Poller, services: list[str], name: str,
                        events: int, pause_s: float) -> float:
    first, second = services[0], services[1]
    await poller.request("POST", f"{first}/v1/experiments",
                         {"id": name, "arms": ["a", "b"], "reward": "bernoulli"})
    stats_url = f"{second}/v1/experiments/{name}/stats"
    before = await poller.request("GET", stats_url)  # now in B's cache
    assert before["arms"][0]["share"] < CHANGED_SHARE, before
    batch = [{"id": f"{name}-{i}", "experiment": name, "arm": "ab"[i % 2],
              "reward": 1 - i % 2} for i in range(events)]
    await asyncio.sleep(pause_s)
    answer = await poller.request("POST", f"{first}/v1/events", {"events": batch})
    since = time.perf_counter()
    assert answer["accepted"] == events, answer
    return await poller.poll_stats(stats_url, since)


async def _setting_trial(pollers: list[_Poller], services: list[str], name: str,
                         pause_s: float, violations: list[int]) -> float:
    first = services[0]
    created = await pollers[0].request("POST", f"{first}/v1/experiments", {
        "id": name, "arms": ["a", "b", "c"], "reward": "bernoulli"})
    for poller, service in zip(pollers, services, strict=True):
        await poller.request("POST", f"{service}/v1/experiments/{name}/allocate", {})
    await asyncio.sleep(pause_s)
    patched = await pollers[0].request("PATCH", f"{first}/v1/experiments/{name}", {
        "version": created["version"], "arms": {"pause": ["c"]}})
    since = time.perf_counter()
    delays = await asyncio.gather(*(
        poller.poll_allocate(f"{service}/v1/experiments/{name}/allocate", since,
                             patched["version"], violations)
        for poller, service in zip(pollers[1:], services[1:], strict=True)))
    return max(delays)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def _run(services: list[str], arguments: argparse.Namespace) -> None:
    poll_s = arguments.poll_ms / 1000
    refresh = arguments.refresh
    rng = random.Random(arguments.seed)
    sessions = [aiohttp.ClientSession() for _ in services]
    try:
        pollers = [_Poller(session, poll_s) for session in sessions]
        violations: list[int] = []
        # Warm-up (not recorded): every process's first recompute, pools, connections.
        await _reward_trial(pollers[1], services, "warm-reward", arguments.events, 0.0)
        await _setting_trial(pollers, services, "warm-setting", 0.0, violations)
        for poller in pollers:
            poller.round_trips.clear()
        violations.clear()
        reward_delays: list[float] = []
        setting_delays: list[float] = []
        for trial in range(arguments.trials):
            reward_delays.append(await _reward_trial(
                pollers[1], services, f"reward-{trial}", arguments.events,
                rng.uniform(0, refresh)))
            setting_delays.append(await _setting_trial(
                pollers, services, f"setting-{trial}", rng.uniform(0, refresh), violations))
        round_trips = [t for poller in pollers for t in poller.round_trips]
    finally:
        for session in sessions:
            await session.close()
    print(f"\n{len(services)} processes, refresh interval {refresh:g} s, {arguments.trials} "
          f"trials, {os.cpu_count()} cores")
    print(f"polling: {arguments.poll_ms:g} ms sleep between requests; request round trip "
          f"p50 {statistics.median(round_trips) * 1000:.1f} ms, "
          f"p99 {_quantile(round_trips, 0.99) * 1000:.1f} ms: delays are late by at most "
          "one sleep plus one round trip")
    print(f"{'change':40} {'p50 s':>7} {'p99 s':>7} {'max s':>7} {'p99/refresh':>12} "
          f"{'p99/target':>11}")
    rows = [("reward on A -> share moved on B", reward_delays),
            (f"pause on A -> last of {len(services) - 1} obeys", setting_delays)]
    for label, delays in rows:
        p99 = _quantile(delays, 0.99)
        print(f"{label:40} {statistics.median(delays):7.3f} {p99:7.3f} {max(delays):7.3f} "
              f"{p99 / refresh:11.2f}x {p99 / TARGET_S:10.2f}x")
    print(f"target: p99 <= {TARGET_S:g} s (p99/target <= 1); answers with the new version "
          f"that still served the paused arm: {len(violations)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--refresh", type=float, default=0.2,
                        help="BANDIT_REFRESH_INTERVAL_S of the services (seconds)")
    parser.add_argument("--poll-ms", type=float, default=2.0)
    parser.add_argument("--events", type=int, default=200, help="events per reward batch")
    parser.add_argument("--seed", type=int, default=1)
    arguments = parser.parse_args()
    if arguments.processes < 2:
        parser.error("--processes: at least 2")
    with _deployment(arguments.processes, arguments.refresh) as services:
        asyncio.run(_run(services, arguments))


if __name__ == "__main__":
    main()
