"""HTTP throughput of the service against baselines measured in the same run.

Starts its own redis-server and, for each worker count (`--workers`, default 1 and 2), a
`bandit serve --workers N` service (N > 1: SO_REUSEPORT, one port) and a no-op aiohttp JSON
server of as many processes on one port (reuse_port=True), and drives them with wrk (Debian
package `wrk`) from a separate process. The kernel spreads wrk's connections over the processes
per connection, not per request, so each row also shows every process's CPU share (and
redis-server's): a skewed split there explains a weak 2-process figure, and a busy Redis a
flat one. Rows (names for `--only`):

- noop: the no-op aiohttp JSON handler, the baseline for allocate n=1
- allocate-1, allocate-100, allocate-1000: POST allocate with n decisions per request
- slate-5: POST allocate with k=5 (a slate of 5 arms)
- events-1, events-100, events-1000: reward event batches, dedup on; every id is distinct
  across requests, wrk threads and connections and runs, and wrk counts the duplicates the
  service reports (it must be 0, or dedup did not do real work)
- beacons: one event per request over many connections (`--beacon-connections`, 64), as
  click beacons from browsers arrive, alternating with the no-op handler on as many
  connections (the row beacons-noop); the baseline for single events
- stats: GET /v1/experiments/bench/stats
- api-key: allocate n=1 on a service that enforces API keys (10 configured), alternating with
  the open one; 1 worker only
- pipeline: a plain redis-py pipeline of HINCRBYFLOAT for 1000-event batches (no dedup, no
  HTTP), one process, the baseline for events

For each worker count it prints a table of req/s, items/s, p50, p99 and CPU per process, then
the issue's targets as ratios (>= 1.00x meets it):

- allocate n=1 / no-op handler with as many processes: median of 3 alternating pairs
  (target >= 0.8x)
- allocate n=1000 decisions/s per process (target >= 1M)
- events/s per process with dedup (target >= 100k, for batches of 1000) and against the
  HINCRBYFLOAT pipeline
- allocate n=1 with / without API keys
- one event per request (beacons) / no-op handler on as many connections: median of 3
  alternating pairs (target >= 0.5x)
With both worker counts it ends with req/s of 2 processes over 1 per row.

Usage: python -m benchmarks.bench_http [--seconds 5] [--connections 16] [--threads 1]
                                       [--beacon-connections 64] [--workers 1,2]
                                       [--only allocate-1,events-1000,beacons,...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import string
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

from bandit.api.auth import key_line, new_key
from bandit.store.embedded import free_port, wait_port
from tests.support.redis import RedisServer

NOOP_SERVER = textwrap.dedent("""
    import sys
    import orjson
    from aiohttp import web

    async def noop(request):
        await request.read()
        return web.Response(body=orjson.dumps({"ok": True}), content_type="application/json")

    app = web.Application()
    app.add_routes([web.post("/noop", noop)])
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None,
                reuse_port=sys.argv[2] == "1")
""")

# $batch events per request. Ids are "$run-<thread>-<request>-<event>": $run is unique per
# wrk run, setup() numbers the wrk threads, and the request counter is shared by the connections
# of a thread (one Lua state per thread). done() prints the duplicates the service reported.
# $event is the Lua expression of event i (EVENT: one of experiment `bench`), after $prelude.
#: wrk's setup(): each thread numbered (``thread_id``), its Lua state kept in ``threads``.
NUMBERED_THREADS = textwrap.dedent("""
    local threads = {}
    function setup(thread)
      table.insert(threads, thread)
      thread:set("thread_id", #threads)
    end
""")
EVENTS_SCRIPT = string.Template(NUMBERED_THREADS + textwrap.dedent("""
    counter = 0
    duplicates = 0
    $prelude
    function request()
      counter = counter + 1
      local parts = {}
      for i = 1, $batch do
        parts[i] = $event
      end
      local body = '{"events":[' .. table.concat(parts, ",") .. ']}'
      return wrk.format("POST", "/v1/events", {["Content-Type"] = "application/json"}, body)
    end

    function response(status, headers, body)
      local found = string.match(body, '"duplicates":%s*(%d+)')
      if found then duplicates = duplicates + tonumber(found) end
    end

    function done(summary, latency, requests)
      local total = 0
      for _, thread in ipairs(threads) do total = total + thread:get("duplicates") end
      io.write(string.format("duplicates: %d\\n", total))
    end
"""))

EVENT = """string.format(
          '{"id":"$run-%d-%d-%d","experiment":"bench","arm":"arm%d","reward":%d}',
          thread_id, counter, i, i % 10, i % 2)"""


def events_script(batch: int, run: str, event: str = EVENT, prelude: str = "") -> str:
    """The wrk script sending ``batch`` events per request, ids unique to ``run``."""
    return EVENTS_SCRIPT.substitute(batch=batch, prelude=prelude,
                                    event=string.Template(event).substitute(run=run), run=run)


ROWS = {
    "noop": "no-op aiohttp JSON handler",
    "allocate-1": "allocate n=1",
    "api-key": "allocate n=1, API key",
    "allocate-100": "allocate n=100",
    "allocate-1000": "allocate n=1000",
    "slate-5": "allocate k=5 slate",
    "events-1": "events, batches of 1",
    "events-100": "events, batches of 100",
    "events-1000": "events, batches of 1000",
    "beacons-noop": "no-op handler, beacon conns",
    "beacons": "events, 1 per request, beacons",
    "stats": "stats",
    "pipeline": "redis-py HINCRBYFLOAT pipeline",
}
ALLOCATE_BODIES = {"allocate-100": '{"n": 100}', "allocate-1000": '{"n": 1000}',
                   "slate-5": '{"k": 5}'}
ITEMS = {"allocate-100": 100, "allocate-1000": 1000, "events-100": 100, "events-1000": 1000}
EVENT_BATCHES = {"events-1": 1, "events-100": 100, "events-1000": 1000}
DECISIONS_TARGET = 1_000_000
EVENTS_TARGET = 100_000
NOOP_TARGET = 0.8
BEACONS_TARGET = 0.5


@dataclass(frozen=True)
class Run:
    """One wrk run: rates, latency, and the CPU share (0..1) of each server process and of
    redis-server."""

    rps: float
    p50_ms: float
    p99_ms: float
    duplicates: int
    cpu: tuple[float, ...]
    redis_cpu: float


@dataclass(frozen=True)
class Target:
    """What wrk hits: a base URL, the server processes and the redis-server behind them."""

    url: str
    pids: tuple[int, ...]
    redis_pid: int




def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command name: state is field 3, utime 14 and stime 15 (1-based, man proc).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _worker_pids(process: subprocess.Popen[bytes], workers: int,
                 timeout_s: float = 60.0) -> tuple[int, ...]:
    """The processes serving: the process itself, or the workers its supervisor spawned."""
    if workers == 1:
        return (process.pid,)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        # multiprocessing's spawn start method may add a resource tracker: skip it.
        pids = tuple(int(child) for child in children
                     if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes())
        if len(pids) == workers:
            return pids
        time.sleep(0.2)
    raise RuntimeError(f"bandit serve did not start {workers} workers")


def wrk(target: Target, path: str, seconds: int, connections: int, threads: int, *,
        body: str | None = None, script: str | None = None, key: str | None = None,
        method: str = "POST") -> Run:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        if script is None:
            script = f"wrk.method = '{method}'\n"
            if method == "POST":
                script += (f"wrk.body = {json.dumps(body or '')}\n"
                           "wrk.headers['Content-Type'] = 'application/json'\n")
            if key is not None:
                script += f"wrk.headers['Authorization'] = 'Bearer {key}'\n"
        handle.write(script)
        script_path = handle.name
    cpu_before = [_cpu_seconds(pid) for pid in (*target.pids, target.redis_pid)]
    started = time.monotonic()
    try:
        output = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{max(connections, threads)}", f"-d{seconds}s",
             "--latency", "-s", script_path, target.url + path],
            capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script_path)
    elapsed = time.monotonic() - started
    *cpu, redis_cpu = ((_cpu_seconds(pid) - before) / elapsed
                       for pid, before in zip((*target.pids, target.redis_pid), cpu_before,
                                              strict=True))
    if "Non-2xx" in output:
        raise RuntimeError(f"errors during the run:\n{output}")

    def latency(label: str) -> float:
        match = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", output)
        assert match, output
        value, unit = float(match.group(1)), match.group(2)
        return value * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    requests = re.search(r"Requests/sec:\s+([\d.]+)", output)
    assert requests, output
    duplicates = re.search(r"duplicates: (\d+)", output)
    return Run(float(requests.group(1)), latency("50"), latency("99"),
               int(duplicates.group(1)) if duplicates else 0, tuple(cpu), redis_cpu)


async def pipeline_baseline(url: str, batches: int) -> float:
    """Events/s of a plain redis-py pipeline of HINCRBYFLOAT (no dedup, no HTTP)."""
    client = aioredis.Redis.from_url(url)
    started = time.perf_counter()
    for _ in range(batches):
        async with client.pipeline(transaction=False) as pipe:
            for i in range(1000):
                pipe.hincrbyfloat("baseline:{bench}:stats", f"{i % 10}:s", float(i % 2))
            await pipe.execute()
    elapsed = time.perf_counter() - started
    await client.aclose()
    return batches * 1000 / elapsed


def _median_pair(pairs: list[tuple[Run, Run]]) -> tuple[tuple[Run, Run], str]:
    """The pair with the median second/first ratio, and all ratios in the order measured.

    Pairs alternate the two runs, so a burst of load from elsewhere skews one pair, not the
    result.
    """
    ratios = ", ".join(f"{b.rps / a.rps:.2f}" for a, b in pairs)
    ordered = sorted(pairs, key=lambda pair: pair[1].rps / pair[0].rps)
    return ordered[len(ordered) // 2], ratios


@contextmanager
def _servers(workers: int, redis_url: str, redis_pid: int, keys_file: Path | None
             ) -> Iterator[tuple[Target, Target, Target | None]]:
    """The service, the no-op server and (with a keys file) a keyed service, each of
    ``workers`` processes on one port; stopped on exit."""
    service_port, noop_port, keyed_port = free_port(), free_port(), free_port()
    serve = [sys.executable, "-m", "bandit", "serve", "--redis", redis_url,
             "--log-level", "WARNING", "--workers", str(workers)]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        service = subprocess.Popen([*serve, "--port", str(service_port)])
        processes.append(service)
        noops = [subprocess.Popen([sys.executable, "-c", NOOP_SERVER, str(noop_port),
                                   "1" if workers > 1 else "0"]) for _ in range(workers)]
        processes.extend(noops)
        keyed = None
        if keys_file is not None:
            keyed = subprocess.Popen([*serve, "--port", str(keyed_port),
                                      "--api-keys", str(keys_file)])
            processes.append(keyed)
        for port in (service_port, noop_port) + ((keyed_port,) if keyed else ()):
            wait_port(port)
        yield (Target(f"http://127.0.0.1:{service_port}", _worker_pids(service, workers),
                      redis_pid),
               Target(f"http://127.0.0.1:{noop_port}", tuple(noop.pid for noop in noops),
                      redis_pid),
               Target(f"http://127.0.0.1:{keyed_port}", _worker_pids(keyed, workers),
                      redis_pid) if keyed else None)
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait()


def _create_experiment(service: str) -> None:
    request = urllib.request.Request(
        f"{service}/v1/experiments", method="POST",
        data=json.dumps({"id": "bench", "arms": [f"arm{i}" for i in range(10)],
                         "reward": "bernoulli"}).encode(),
        headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request).read()
    except urllib.error.HTTPError as error:
        if error.code != 409:  # already created for an earlier worker count
            raise


def measure(workers: int, only: set[str], arguments: argparse.Namespace, redis_url: str,
            redis_pid: int, keys_file: Path, key: str) -> tuple[dict[str, Run], dict[str, str]]:
    """Every selected row against ``workers`` service and no-op processes; runs and the
    ratios of the alternating pairs."""
    seconds, connections, threads = arguments.seconds, arguments.connections, arguments.threads
    runs: dict[str, Run] = {}
    pair_ratios: dict[str, str] = {}
    allocate = "/v1/experiments/bench/allocate"
    with_keys = "api-key" in only and workers == 1
    with _servers(workers, redis_url, redis_pid, keys_file if with_keys else None) as (
            service, noop, keyed):
        _create_experiment(service.url)
        # Warm-up: JIT paths, connection pools, caches, in every process.
        wrk(service, allocate, 2, connections, threads, body="{}")
        wrk(noop, "/noop", 2, connections, threads, body="{}")
        if "allocate-1" in only:
            pairs = [(wrk(noop, "/noop", seconds, connections, threads, body="{}"),
                      wrk(service, allocate, seconds, connections, threads, body="{}"))
                     for _ in range(3)]
            (runs["noop"], runs["allocate-1"]), pair_ratios["allocate-1"] = _median_pair(pairs)
        elif "noop" in only:
            runs["noop"] = wrk(noop, "/noop", seconds, connections, threads, body="{}")
        if keyed is not None:
            wrk(keyed, allocate, 2, connections, threads, body="{}", key=key)
            pairs = [(wrk(service, allocate, seconds, connections, threads, body="{}"),
                      wrk(keyed, allocate, seconds, connections, threads, body="{}", key=key))
                     for _ in range(3)]
            (runs["api-key-open"], runs["api-key"]), pair_ratios["api-key"] = _median_pair(
                pairs)
        for name, body in ALLOCATE_BODIES.items():
            if name in only:
                wrk(service, allocate, 1, connections, threads, body=body)
                runs[name] = wrk(service, allocate, seconds, connections, threads, body=body)
        for name, batch in EVENT_BATCHES.items():
            if name in only:
                # Fewer connections than for allocate: a batch keeps a process busy longer.
                events_connections = 4 * workers
                for label in ("warm", "run"):
                    script = events_script(batch, f"{label}{time.time_ns()}")
                    runs[name] = wrk(service, "/v1/events", 1 if label == "warm" else seconds,
                                     events_connections, threads, script=script)
                if runs[name].duplicates:
                    raise RuntimeError(f"{name}: the service reported "
                                       f"{runs[name].duplicates} duplicate ids")
        if "beacons" in only:
            # Browsers: many connections, one event each; the no-op handler on as many.
            beacons = arguments.beacon_connections
            wrk(service, "/v1/events", 1, beacons, threads,
                script=events_script(1, f"warm{time.time_ns()}"))
            wrk(noop, "/noop", 1, beacons, threads, body="{}")
            pairs = [(wrk(noop, "/noop", seconds, beacons, threads, body="{}"),
                      wrk(service, "/v1/events", seconds, beacons, threads,
                          script=events_script(1, f"beacons{time.time_ns()}")))
                     for _ in range(3)]
            duplicates = sum(run.duplicates for _, run in pairs)
            if duplicates:
                raise RuntimeError(f"beacons: the service reported {duplicates} duplicate ids")
            (runs["beacons-noop"], runs["beacons"]), pair_ratios["beacons"] = _median_pair(
                pairs)
        if "stats" in only:
            stats = "/v1/experiments/bench/stats"
            wrk(service, stats, 1, connections, threads, method="GET")
            runs["stats"] = wrk(service, stats, seconds, connections, threads, method="GET")
    return runs, pair_ratios


def report(workers: int, runs: dict[str, Run], pair_ratios: dict[str, str],
           baseline: float | None) -> None:
    print(f"\n{workers} service process{'es' if workers > 1 else ''} "
          f"(no-op handler: {workers} process{'es' if workers > 1 else ''})")
    print(f"{'endpoint':32} {'req/s':>10} {'items/s':>12} {'p50 ms':>8} {'p99 ms':>8}  "
          "CPU per process, Redis")
    for name, label in ROWS.items():
        if name in runs:
            run = runs[name]
            cpu = "/".join(f"{share:.0%}" for share in run.cpu)
            print(f"{label:32} {run.rps:10.0f} {run.rps * ITEMS.get(name, 1):12.0f} "
                  f"{run.p50_ms:8.2f} {run.p99_ms:8.2f}  {cpu}, {run.redis_cpu:.0%}")
    if baseline is not None:
        print(f"{ROWS['pipeline']:32} {'':10} {baseline:12.0f}  (1 process)")
    print()
    per = f" (/ {workers} processes)" if workers > 1 else ""
    if "noop" in runs and "allocate-1" in runs:
        ratio = runs["allocate-1"].rps / runs["noop"].rps
        print(f"allocate n=1 / no-op handler:          {ratio:.2f}x "
              f"(median of {pair_ratios['allocate-1']}; target >= {NOOP_TARGET}x: "
              f"{ratio / NOOP_TARGET:.2f}x of target)")
    if "allocate-1000" in runs:
        decisions = runs["allocate-1000"].rps * 1000 / workers
        print(f"allocate n=1000 decisions/s per process: {decisions:,.0f}{per}; "
              f"target >= {DECISIONS_TARGET:,}: {decisions / DECISIONS_TARGET:.2f}x of target")
    for name, batch in EVENT_BATCHES.items():
        if name in runs:
            events = runs[name].rps * batch / workers
            parts = [f"events/s per process, batches of {batch:<4}: {events:,.0f}{per}"]
            if batch == 1000:
                parts.append(f"target >= {EVENTS_TARGET:,}: {events / EVENTS_TARGET:.2f}x of "
                             "target")
            if baseline is not None:
                parts.append(f"{events / baseline:.2f}x the HINCRBYFLOAT pipeline")
            print("; ".join(parts))
    if "beacons" in runs:
        ratio = runs["beacons"].rps / runs["beacons-noop"].rps
        print(f"one event per request / no-op handler: {ratio:.2f}x "
              f"(median of {pair_ratios['beacons']}; target >= {BEACONS_TARGET}x: "
              f"{ratio / BEACONS_TARGET:.2f}x of target)")
    if "api-key" in runs:
        ratio = runs["api-key"].rps / runs["api-key-open"].rps
        print(f"allocate n=1 with / without API keys:  {ratio:.2f}x "
              f"(median of {pair_ratios['api-key']})")


def _names(text: str) -> set[str]:
    names = {name.strip() for name in text.split(",") if name.strip()}
    unknown = names - set(ROWS)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown rows {', '.join(sorted(unknown))}; choose from {', '.join(ROWS)}")
    return names


def _worker_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected e.g. 1,2, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"worker counts must be >= 1, got {text!r}")
    return counts


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=5, help="per measured wrk run")
    parser.add_argument("--connections", type=int, default=16,
                        help="wrk connections (events: 4 per worker process)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--beacon-connections", type=int, default=64,
                        help="wrk connections of the beacons row and its no-op baseline")
    parser.add_argument("--workers", type=_worker_counts, default=[1, 2],
                        help="comma-separated service process counts (default 1,2)")
    parser.add_argument("--only", type=_names, default=set(ROWS),
                        help=f"comma-separated rows: {', '.join(ROWS)}")
    arguments = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    only: set[str] = arguments.only
    workdir = Path(tempfile.mkdtemp(prefix="bandit-bench-"))
    keys = [new_key() for _ in range(10)]
    keys_file = workdir / "keys"
    keys_file.write_text("".join(key_line(f"key{i}", ["decide", "admin"], key) + "\n"
                                 for i, key in enumerate(keys)))
    redis_server = RedisServer(workdir / "redis")
    redis_server.start()
    assert redis_server.process is not None
    redis_url = redis_server.url
    try:
        results = {workers: measure(workers, only, arguments, redis_url,
                                     redis_server.process.pid, keys_file, keys[7])
                   for workers in arguments.workers}
        baseline = asyncio.run(pipeline_baseline(redis_url, 200)) if "pipeline" in only else None
        for workers, (runs, pair_ratios) in results.items():
            report(workers, runs, pair_ratios, baseline)
        if 1 in results and 2 in results:
            print("\nreq/s of 2 processes / 1 (the no-op handler shows what the machine allows):")
            for name, label in ROWS.items():
                if name in results[1][0] and name in results[2][0]:
                    print(f"  {label:32} {results[2][0][name].rps / results[1][0][name].rps:.2f}x")
    finally:
        redis_server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
