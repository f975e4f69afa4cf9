"""Soak: mixed load at fixed rates for ten minutes; latency, memory and dedup memory over time.

Starts its own redis-server (no persistence), several `bandit serve` processes on separate
ports, and a load generator in a separate process (aiohttp, open loop: requests leave at fixed
rates whatever the answers do, and latency is measured from when a request was due, so a stall
shows up in the percentiles instead of slowing the load down). The mix, per second by default:

- 300 decisions n=1, 50 sticky decisions (units from a pool of 2,000), 10 of n=100;
- 10 batches of 100 reward events (about a third naming a decision served moments before);
  5% of the batches are resent exactly and must come back as duplicates;
- 2 stats reads; and a PATCH toggling epsilon every 2.5 s, from two operators who each remember
  the version they last saw, so some PATCHes answer 409 (counted apart from errors).

Every interval (a minute by default) it prints requests, errors, 409s and p50/p99 latency per
kind, the resident memory (VmRSS) of every service process, Redis' used_memory and the dedup
memory (number of remembered ids and MEMORY USAGE of the dedup sets). The baseline is the first
interval: at the end it prints p99 of the last interval / p99 of the first per kind, the RSS
growth of each process from the end of the first interval, and the dedup bytes per remembered
id against the figure expected from the design in `bandit/store/keys.py` and
`bandit/store/scripts.py`.
The dedup window is short (120 s, --dedup-window) so the dedup sets reach their steady size
within the run.

Usage: python -m benchmarks.bench_soak [--duration 600] [--interval 60] [--services 2]
       [--dedup-window 120] [--png bench_soak.png]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis

from bandit.store.embedded import free_port
from tests.support.redis import RedisServer

PREFIX = "bandit"  # the services' default key prefix
EXPERIMENT = "soak"
ARMS = [f"arm{i}" for i in range(10)]
KINDS = ("decide", "decide_sticky", "decide_n100", "events", "stats", "patch")
#: Requests per second of each kind (the PATCH rate is the two operators' together).
RATES = {"decide": 300.0, "decide_sticky": 50.0, "decide_n100": 10.0, "events": 10.0,
         "stats": 2.0, "patch": 0.4}
EVENTS_PER_BATCH = 100
RESEND_SHARE = 0.05
STICKY_UNITS = 2000
MAX_IN_FLIGHT = 256


# -- the load generator (a separate process: `bench_soak.py --generate ...`) ------------------


@dataclass
class Interval:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    conflicts: int = 0
    resent_not_duplicate: int = 0
    fresh_events: int = 0
    decision_rewards: int = 0
    error_samples: list[str] = field(default_factory=list)

    def report(self, index: int, elapsed: float) -> dict[str, Any]:
        kinds = {}
        for kind in KINDS:
            values = np.array(self.latencies.get(kind, [])) * 1000
            kinds[kind] = {
                "requests": int(values.size) + self.errors.get(kind, 0),
                "errors": self.errors.get(kind, 0),
                "p50_ms": float(np.percentile(values, 50)) if values.size else math.nan,
                "p99_ms": float(np.percentile(values, 99)) if values.size else math.nan,
            }
        return {"interval": index, "elapsed_s": elapsed, "kinds": kinds,
                "conflicts": self.conflicts, "resent_not_duplicate": self.resent_not_duplicate,
                "fresh_events": self.fresh_events, "decision_rewards": self.decision_rewards,
                "error_samples": self.error_samples[:3]}


class Generator:
    def __init__(self, urls: list[str], interval_s: float) -> None:
        import aiohttp

        self.urls = urls
        self.interval_s = interval_s
        self.current = Interval()
        self.random = random.Random(1)
        self.run_id = secrets.token_hex(3)
        self.batches = 0
        self.recent_decisions: deque[tuple[str, str]] = deque(maxlen=5000)
        self.sent_batches: deque[list[dict[str, Any]]] = deque(maxlen=50)
        self.in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=MAX_IN_FLIGHT),
            timeout=aiohttp.ClientTimeout(total=30))
        self.turn = 0

    def url(self) -> str:
        self.turn += 1
        return self.urls[self.turn % len(self.urls)]

    async def request(self, kind: str, due: float, method: str, url: str,
                      body: Any = None) -> tuple[int, Any]:
        """Send one request; record its latency from ``due`` or count it as an error."""
        try:
            async with self.in_flight, self.session.request(method, url, json=body) as response:
                payload = await response.json(content_type=None)
                status = response.status
        except Exception as error:
            status, payload = 0, repr(error)
        interval = self.current
        if 200 <= status < 300:
            interval.latencies[kind].append(time.perf_counter() - due)
        elif status == 409:
            interval.conflicts += 1
            interval.latencies[kind].append(time.perf_counter() - due)
        else:
            interval.errors[kind] += 1
            interval.error_samples.append(f"{kind} {status}: {str(payload)[:200]}")
        return status, payload

    async def decide(self, due: float, body: dict[str, Any], kind: str) -> None:
        status, payload = await self.request(
            kind, due, "POST", f"{self.url()}/v1/experiments/{EXPERIMENT}/allocate", body)
        if status == 200 and kind != "decide_n100":
            for decision in payload["decisions"]:
                self.recent_decisions.append((decision["decision_id"], decision["arm"]))

    async def events(self, due: float) -> None:
        interval = self.current
        if self.sent_batches and self.random.random() < RESEND_SHARE:
            batch = self.random.choice(self.sent_batches)  # a client retry: the same events
            resent = True
        else:
            self.batches += 1
            batch = []
            for i in range(EVENTS_PER_BATCH):
                event: dict[str, Any] = {"id": f"{self.run_id}-{self.batches:x}-{i}",
                                         "experiment": EXPERIMENT,
                                         "arm": self.random.choice(ARMS),
                                         "reward": int(self.random.random() < 0.1)}
                if self.recent_decisions and self.random.random() < 0.33:
                    decision_id, arm = self.recent_decisions.popleft()
                    event.update(decision_id=decision_id, arm=arm)
                    interval.decision_rewards += 1
                batch.append(event)
            self.sent_batches.append(batch)
            interval.fresh_events += len(batch)
            resent = False
        status, payload = await self.request("events", due, "POST", f"{self.url()}/v1/events",
                                             {"events": batch})
        if status == 200 and payload["rejected"]:
            interval.errors["events"] += 1
            interval.error_samples.append(f"events rejected: {payload['rejected'][:2]}")
        if status == 200 and resent and payload["duplicates"] != len(batch):
            interval.resent_not_duplicate += len(batch) - payload["duplicates"]

    async def stats(self, due: float) -> None:
        await self.request("stats", due, "GET",
                           f"{self.url()}/v1/experiments/{EXPERIMENT}/stats")

    async def operator(self, index: int, start: float, stop: float) -> None:
        """PATCH epsilon every 2/rate seconds with the version this operator last saw."""
        url = self.urls[index % len(self.urls)]
        version = None
        period = 2 / RATES["patch"]
        due = start + index * period / 2
        while due < stop:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            if version is None:
                _, shown = await self.request(
                    "patch", time.perf_counter(), "GET", f"{url}/v1/experiments/{EXPERIMENT}")
                version = shown.get("version") if isinstance(shown, dict) else None
            epsilon = 0.05 if self.random.random() < 0.5 else 0.1
            status, payload = await self.request(
                "patch", due, "PATCH", f"{url}/v1/experiments/{EXPERIMENT}",
                {"version": version, "exploration": {"epsilon": epsilon}, "reason": "soak"})
            version = payload["version"] if status == 200 else None  # 409: reload, then retry
            due += period

    async def stream(self, kind: str, start: float, stop: float) -> None:
        """Fire ``kind`` at its fixed rate (each request its own task: open loop)."""
        rate = RATES[kind]
        tasks: set[asyncio.Task[None]] = set()
        sequence = 0
        while True:
            due = start + sequence / rate
            if due >= stop:
                break
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            sequence += 1
            if kind == "events":
                coroutine = self.events(due)
            elif kind == "stats":
                coroutine = self.stats(due)
            elif kind == "decide_sticky":
                unit = f"unit{self.random.randrange(STICKY_UNITS)}"
                coroutine = self.decide(due, {"unit": unit, "sticky": True}, kind)
            elif kind == "decide_n100":
                coroutine = self.decide(due, {"n": 100}, kind)
            else:
                coroutine = self.decide(due, {}, kind)
            task = asyncio.create_task(coroutine)
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks)

    async def run(self, duration_s: float) -> None:
        start = time.perf_counter() + 0.5
        print(json.dumps({"start_epoch": time.time() + 0.5}), flush=True)
        stop = start + duration_s
        streams = [asyncio.create_task(self.stream(kind, start, stop))
                   for kind in KINDS if kind != "patch"]
        streams += [asyncio.create_task(self.operator(i, start, stop)) for i in range(2)]
        index = 0
        while True:
            index += 1
            boundary = start + index * self.interval_s
            if boundary > stop + 1e-6:
                break
            await asyncio.sleep(max(0.0, boundary - time.perf_counter()))
            finished, self.current = self.current, Interval()
            print(json.dumps(finished.report(index, boundary - start)), flush=True)
        await asyncio.gather(*streams)
        await self.session.close()


async def _generate(urls: list[str], duration_s: float, interval_s: float) -> None:
    await Generator(urls, interval_s).run(duration_s)


# -- the monitor (the parent process) -----------------------------------------------------------


def vm_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _usable(request: int) -> int:
    """glibc malloc_usable_size of a request (this redis-server is built with malloc=libc)."""
    return max(24, (request + 8 + 15) // 16 * 16 - 8)


def _sds_header(length: int) -> int:
    """Bytes of an sds string's header: sdshdr5 below 32 bytes, sdshdr8 below 256."""
    return 1 if length < 32 else 3 if length < 256 else 5


def dedup_memory(client: redis.Redis) -> dict[str, float]:
    """Members and MEMORY USAGE of every dedup set, and the bytes the design predicts.

    A set of strings in Redis 6.2 is a hash table: per member a 24-byte dictEntry, the member's
    sds string (1- or 3-byte header + text + NUL, rounded up by the allocator) and its share of the
    bucket array (8 bytes per slot, slots the next power of two at or above the member count);
    plus a small per-key overhead. Member lengths are sampled (SRANDMEMBER).
    """
    members = used = expected = 0.0
    keys = 0
    for key in client.scan_iter(match=f"{PREFIX}:{{*}}:dedup:*", count=1000):
        size = int(client.scard(key))
        if not size:
            continue
        keys += 1
        members += size
        used += int(client.memory_usage(key, samples=0) or 0)
        sample: list[bytes] = client.srandmember(key, 200)  # type: ignore[assignment]
        lengths = [len(member) for member in sample]
        per_member = 24 + sum(_usable(_sds_header(n) + n + 1) for n in lengths) / len(lengths)
        slots = 1 << max(2, math.ceil(math.log2(size)))
        expected += per_member * size + 8 * slots + 100
    return {"keys": keys, "members": members, "bytes": used, "expected_bytes": expected}


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service at {url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"service at {url} not ready after {timeout_s} s")


def _post(url: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(url, method="POST", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request).read()


def _ratio(last: float, first: float) -> str:
    return f"{last / first:.2f}x" if first > 0 and math.isfinite(first * last) else "n/a"


def _plot(rows: list[dict[str, Any]], pids: list[int], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [row["elapsed_s"] / 60 for row in rows]
    figure, (latency, services, store) = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    for kind in KINDS:
        latency.plot(minutes, [row["kinds"][kind]["p99_ms"] for row in rows], marker="o",
                     label=kind)
    latency.set_ylabel("p99 latency (ms)")
    latency.set_yscale("log")
    latency.legend(fontsize="small", ncol=3)
    latency.set_title("bench_soak: p99 latency and memory per interval")
    for position in range(len(pids)):
        services.plot(minutes, [row["rss_mib"][position] for row in rows], marker="o",
                      label=f"service {position} VmRSS")
    services.set_ylabel("MiB")
    services.legend(fontsize="small")
    store.plot(minutes, [row["redis_used_mib"] for row in rows], marker="s",
               label="Redis used_memory")
    store.plot(minutes, [row["dedup"]["bytes"] / 2**20 for row in rows], marker="^",
               label="dedup sets (MEMORY USAGE)")
    store.set_ylabel("MiB")
    store.set_xlabel("minutes")
    store.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _print_row(row: dict[str, Any]) -> None:
    kinds = row["kinds"]
    print(f"-- interval {row['interval']} (t = {row['elapsed_s']:.0f} s): "
          f"409 conflicts {row['conflicts']}, resent events not counted as duplicates "
          f"{row['resent_not_duplicate']}")
    print(f"   {'kind':14} {'requests':>9} {'errors':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for kind in KINDS:
        k = kinds[kind]
        print(f"   {kind:14} {k['requests']:9d} {k['errors']:7d} {k['p50_ms']:8.2f} "
              f"{k['p99_ms']:8.2f}")
    rss = ", ".join(f"{value:.1f}" for value in row["rss_mib"])
    dedup = row["dedup"]
    print(f"   RSS MiB per service: {rss}; Redis used_memory {row['redis_used_mib']:.1f} MiB; "
          f"dedup {dedup['keys']} sets, {dedup['members']:.0f} ids, "
          f"{dedup['bytes'] / 2**20:.2f} MiB")
    services = ", ".join(f"{value:.0f}%" for value in row["cpu_percent"][:-2])
    print(f"   CPU: services {services}, Redis {row['cpu_percent'][-2]:.0f}%, load generator "
          f"{row['cpu_percent'][-1]:.0f}%; machine load average (1 min) {row['load_1m']:.2f} "
          f"on {os.cpu_count()} cores")
    for sample in row["error_samples"]:
        print(f"   error: {sample}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--interval", type=float, default=60.0,
                        help="report interval in seconds (default 60; the first is the baseline)")
    parser.add_argument("--services", type=int, default=2, help="service processes (default 2)")
    parser.add_argument("--dedup-window", type=float, default=120.0,
                        help="BANDIT_DEDUP_WINDOW_S of the services (default 120)")
    parser.add_argument("--png", default="bench_soak.png", help="where to write the plot")
    parser.add_argument("--generate", nargs="+", metavar="URL", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.generate:
        asyncio.run(_generate(arguments.generate, arguments.duration, arguments.interval))
        return
    if arguments.duration < 2 * arguments.interval:
        parser.error("--duration must cover at least two intervals (the first is the baseline)")
    workdir = Path(tempfile.mkdtemp(prefix="bandit-soak-"))
    redis_server = RedisServer(workdir / "redis")
    redis_server.start()
    assert redis_server.process is not None
    redis_port, redis_url = redis_server.port, redis_server.url
    processes: list[subprocess.Popen[bytes]] = [redis_server.process]
    client = redis.Redis(port=redis_port)
    try:
        env = {**os.environ, "BANDIT_DEDUP_WINDOW_S": repr(arguments.dedup_window)}
        env.pop("BANDIT_REDIS_URL", None)
        urls, services = [], []
        for position in range(arguments.services):
            port = free_port()
            log = open(workdir / f"service{position}.log", "wb")  # noqa: SIM115 (closed below)
            services.append(subprocess.Popen(
                [sys.executable, "-m", "bandit", "serve", "--port", str(port), "--redis",
                 redis_url, "--workers", "1", "--log-level", "WARNING"],
                env=env, stdout=log, stderr=log))
            log.close()
            urls.append(f"http://127.0.0.1:{port}")
        processes += services
        for url, process in zip(urls, services, strict=True):
            _wait_ready(url, process)
        _post(f"{urls[0]}/v1/experiments",
              {"id": EXPERIMENT, "arms": ARMS, "reward": "bernoulli"})
        pids = [process.pid for process in services]
        print(f"bench_soak: {arguments.services} service processes (pids {pids}), redis-server "
              f"{client.info('server')['redis_version']}, load generator in its own process")
        print(f"rates per second: {RATES} (events: batches of {EVENTS_PER_BATCH}, "
              f"{RESEND_SHARE:.0%} resent)")
        print(f"dedup window {arguments.dedup_window:g} s (BANDIT_DEDUP_WINDOW_S, short so the "
              f"dedup sets reach steady state); {arguments.duration:g} s in intervals of "
              f"{arguments.interval:g} s; the first interval is the baseline\n", flush=True)
        generator = subprocess.Popen(
            [sys.executable, __file__, "--generate", *urls, "--duration",
             str(arguments.duration), "--interval", str(arguments.interval)],
            stdout=subprocess.PIPE, text=True)
        processes.append(generator)  # type: ignore[arg-type]
        rows = []
        assert generator.stdout is not None
        started = json.loads(generator.stdout.readline())["start_epoch"]
        watched = [*pids, processes[0].pid, generator.pid]  # services, Redis, generator
        cpu_before, clock_before = [cpu_seconds(pid) for pid in watched], time.monotonic()
        width = arguments.dedup_window / 4
        for line in generator.stdout:
            row = json.loads(line)
            # The dedup sets now hold the ids of the current bucket and the four before it
            # (bucket n expires when bucket n + 5 starts): the span of load they cover.
            now = time.time()
            row["dedup_span_s"] = now - max(started, (math.floor(now / width) - 4) * width)
            row["rss_mib"] = [vm_rss_mib(pid) for pid in pids]
            # CPU share of each process, and the machine's load: the cores are shared, and a
            # latency spike with a load above what this benchmark makes came from elsewhere.
            cpu, clock = [cpu_seconds(pid) for pid in watched], time.monotonic()
            row["cpu_percent"] = [100 * (after - before) / (clock - clock_before)
                                  for before, after in zip(cpu_before, cpu, strict=True)]
            cpu_before, clock_before = cpu, clock
            row["load_1m"] = float(Path("/proc/loadavg").read_text().split()[0])
            row["redis_used_mib"] = int(client.info("memory")["used_memory"]) / 2**20
            row["dedup"] = dedup_memory(client)
            rows.append(row)
            _print_row(row)
            sys.stdout.flush()
        if generator.wait() != 0:
            raise RuntimeError("the load generator failed")
        _summary(rows, pids, arguments)
        _plot(rows, pids, arguments.png)
        print(f"\nplot: {arguments.png}")
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
        client.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _summary(rows: list[dict[str, Any]], pids: list[int], arguments: argparse.Namespace) -> None:
    first, last = rows[0], rows[-1]
    errors = sum(k["errors"] for row in rows for k in row["kinds"].values())
    requests = sum(k["requests"] for row in rows for k in row["kinds"].values())
    conflicts = sum(row["conflicts"] for row in rows)
    wrong_duplicates = sum(row["resent_not_duplicate"] for row in rows)
    print("\n== summary ==")
    print(f"requests {requests}, errors {errors} (non-2xx other than 409, failed requests, or "
          f"events rejected), 409 conflicts {conflicts}, resent events not reported as "
          f"duplicates {wrong_duplicates}")
    print(f"{'kind':14} {'p99 first ms':>13} {'p99 last ms':>12} {'last/first':>11}")
    for kind in KINDS:
        before, after = first["kinds"][kind]["p99_ms"], last["kinds"][kind]["p99_ms"]
        print(f"{kind:14} {before:13.2f} {after:12.2f} {_ratio(after, before):>11}")
    for position, pid in enumerate(pids):
        start, end = first["rss_mib"][position], last["rss_mib"][position]
        print(f"service {position} (pid {pid}) RSS: {start:.1f} MiB after the first interval, "
              f"{end:.1f} MiB at the end: {100 * (end - start) / start:+.1f}%")
    print(f"Redis used_memory: {first['redis_used_mib']:.1f} MiB after the first interval, "
          f"{last['redis_used_mib']:.1f} MiB at the end")
    # Fresh ids per second joining the dedup sets: every new event id, and one `@decision:arm`
    # member per event that names a decision. Ids live in quarter-window buckets kept for
    # five buckets, so between 1 and 1.25 windows of them are remembered at any moment.
    elapsed = last["elapsed_s"] - rows[-2]["elapsed_s"]
    rate = (last["fresh_events"] + last["decision_rewards"]) / elapsed
    window = arguments.dedup_window
    dedup = last["dedup"]
    expected_ids = rate * last["dedup_span_s"]
    print(f"dedup at the end: {dedup['members']:.0f} ids remembered, expected "
          f"{expected_ids:.0f} = {rate:.0f} new ids/s x {last['dedup_span_s']:.0f} s (ids are "
          f"kept 1 to 1.25 windows of {window:g} s: the current quarter-window bucket and the "
          f"four before it); ratio {dedup['members'] / expected_ids:.2f}x")
    if dedup["members"]:
        per_id = dedup["bytes"] / dedup["members"]
        expected = dedup["expected_bytes"] / dedup["members"]
        print(f"dedup bytes per remembered id: {per_id:.1f} (MEMORY USAGE), expected "
              f"{expected:.1f} from the set layout (ratio {per_id / expected:.2f}x)")


if __name__ == "__main__":
    main()
