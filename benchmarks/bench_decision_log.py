"""What the decision log costs, against baselines measured in the same run.

Parts (``--only``):

- http: allocate n=1 (and n=100) on a service with the log on, alternating with an otherwise
  identical service with it off (``BANDIT_DECISION_LOG=false``), both one process on one
  redis-server, driven by wrk: median of 4 pairs, in alternating order (target >= 0.9x). Also reward
  batches of 1,000 events with and without the log (the reward scripts append what they
  apply).
- export: 1,000,000 decisions served (batches of 1,000, a reward for every tenth), then
  ``bandit log export`` into Parquet: rows/s (target >= 500k) against a plain XRANGE read of
  the same stream in the same process (what any export has to do).
- memory: Redis ``used_memory`` per logged decision, context-free and with a 10-feature
  context (its JSON text), and per logged reward.

Usage: python -m benchmarks.bench_decision_log [--seconds 5] [--only http,export,memory]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from aiohttp.test_utils import TestClient, TestServer

from bandit.api.app import SERVICE, create_app
from bandit.ops.log_export import export, write
from bandit.settings import Settings
from bandit.store.embedded import free_port, wait_port
from bandit.store.redis_store import RedisStore
from benchmarks.bench_http import Run, Target, _median_pair, _worker_pids, events_script, wrk
from tests.support.redis import RedisServer

PARTS = ("http", "export", "memory")
ARMS = [f"arm{i}" for i in range(10)]
CONTEXT = {"region": "eu", "device": "mobile", **{f"score{i}": 0.5 for i in range(8)}}
TEN_FEATURES = {"type": "linear", "features": [
    {"name": "region", "type": "categorical", "values": ["eu", "us", "apac"]},
    {"name": "device", "type": "categorical", "values": ["mobile", "desktop"]},
    *({"name": f"score{i}", "type": "numeric", "scale": [0, 1]} for i in range(8))]}


def _post(url: str, body: dict[str, Any]) -> Any:
    import urllib.request

    request = urllib.request.Request(url, method="POST", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())


@contextmanager
def _service(redis_server: RedisServer, log: bool) -> Iterator[Target]:
    port = free_port()
    env = None if log else {**__import__("os").environ, "BANDIT_DECISION_LOG": "false"}
    process = subprocess.Popen([sys.executable, "-m", "bandit", "serve", "--redis",
                                redis_server.url, "--port", str(port), "--log-level",
                                "WARNING"], env=env)
    try:
        wait_port(port)
        assert redis_server.process is not None
        yield Target(f"http://127.0.0.1:{port}", _worker_pids(process, 1),
                     redis_server.process.pid)
    finally:
        process.terminate()
        process.wait()


def _row(label: str, run: Run, items: int = 1) -> None:
    print(f"  {label:<34} {run.rps:>9,.0f} req/s {run.rps * items:>11,.0f} items/s  "
          f"p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms  CPU {run.cpu[0]:.2f}  "
          f"redis {run.redis_cpu:.2f}")


def bench_http(seconds: int, redis_server: RedisServer) -> None:
    with _service(redis_server, True) as logged, _service(redis_server, False) as unlogged:
        for service in (logged, unlogged):
            experiment = f"bench{service.url.rsplit(':', 1)[1]}"
            _post(f"{service.url}/v1/experiments", {"id": experiment, "arms": ARMS,
                                                    "reward": "bernoulli"})
        on_path = f"/v1/experiments/bench{logged.url.rsplit(':', 1)[1]}/allocate"
        off_path = f"/v1/experiments/bench{unlogged.url.rsplit(':', 1)[1]}/allocate"
        wrk(logged, on_path, 2, 16, 1, body="{}")
        wrk(unlogged, off_path, 2, 16, 1, body="{}")
        print("\nallocate, one service process each, 16 connections:")
        for n in (1, 100):
            body = "{}" if n == 1 else json.dumps({"n": n})
            # Each pair's order alternates: an A/A run (both services with the log off)
            # found the second run of a pair 9% slower, whichever service it was.
            pairs = []
            for turn in range(4):
                if turn % 2 == 0:
                    off_run = wrk(unlogged, off_path, seconds, 16, 1, body=body)
                    on_run = wrk(logged, on_path, seconds, 16, 1, body=body)
                else:
                    on_run = wrk(logged, on_path, seconds, 16, 1, body=body)
                    off_run = wrk(unlogged, off_path, seconds, 16, 1, body=body)
                pairs.append((off_run, on_run))
            (off, on), ratios = _median_pair(pairs)
            _row(f"n={n}, log off", off, n)
            _row(f"n={n}, log on", on, n)
            goal = "; target >= 0.9x" if n == 1 else ""
            mean = sum(b.rps / a.rps for a, b in pairs) / len(pairs)
            print(f"  log on / off, n={n}: {mean:.2f}x, the mean of the pairs, two in each "
                  f"order (pairs: {ratios}){goal}")
        print("\nreward events, batches of 1000, 4 connections:")
        runs: dict[str, Run] = {}
        for name, service in (("off", unlogged), ("on", logged)):
            experiment = f"bench{service.url.rsplit(':', 1)[1]}"
            event = ("""string.format('{"id":"$run-%d-%d-%d","experiment":"EXP",'
                     .. '"arm":"arm%d","reward":%d}', thread_id, counter, i, i % 10, i % 2)"""
                     .replace("EXP", experiment))
            for label in ("warm", "run"):
                run = f"{name}{label}{time.time_ns()}"
                runs[name] = wrk(service, "/v1/events", 1 if label == "warm" else seconds, 4, 1,
                                 script=events_script(1000, run, event))
            if runs[name].duplicates:
                raise RuntimeError(f"{name}: {runs[name].duplicates} duplicates reported")
            _row(f"events, log {name}", runs[name], 1000)
        print(f"  events log on / off: {runs['on'].rps / runs['off'].rps:.2f}x")


async def _serve_decisions(redis_url: str, experiment: str, total: int,
                           model: dict[str, Any] | None = None, batch_size: int = 1000) -> None:
    """``total`` decisions in batches of ``batch_size`` (a reward for every tenth), all
    flushed; a contextual experiment's requests each carry their own context."""
    settings = Settings(redis_url=redis_url, log_max_records=10 * total,
                        log_buffer_records=max(100_000, total))
    async with TestClient(TestServer(create_app(settings, seed=1))) as client:
        body: dict[str, Any] = {"id": experiment, "arms": ARMS, "reward": "bernoulli"}
        if model is not None:
            body["model"] = model
        assert (await client.post("/v1/experiments", json=body)).status == 201
        log = client.app[SERVICE].decisions.log
        pending: list[dict[str, Any]] = []
        for batch in range(total // batch_size):
            context = {**CONTEXT, "score0": batch / total}
            request: dict[str, Any] = {"n": batch_size}
            if model is not None:
                request["context"] = context
            response = await client.post(f"/v1/experiments/{experiment}/allocate", json=request)
            decisions = (await response.json())["decisions"]
            pending += [{"id": f"{batch}-{i}", "experiment": experiment, "arm": d["arm"],
                         "reward": 1, "decision_id": d["decision_id"],
                         **({} if model is None else {"context": context})}
                        for i, d in enumerate(decisions) if (batch * batch_size + i) % 10 == 0]
            if len(pending) < 100 and batch < total // batch_size - 1:
                continue
            events, pending = pending, []
            answer = await (await client.post("/v1/events", json={"events": events})).json()
            assert answer["accepted"] == len(events), answer
        await log.flush()


async def bench_export(redis_server: RedisServer, total: int) -> None:
    await _serve_decisions(redis_server.url, "exported", total)
    store = RedisStore.from_url(redis_server.url, "bandit", timeout_s=30, max_connections=4)
    try:
        # Baseline: the stream read alone, XRANGE in the same pages.
        started = time.perf_counter()
        records = 0
        async for _, lines in store.read_log("exported", 0, None):
            records += lines.count("\n")
        read_s = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as directory:
            out = Path(directory) / "log.parquet"
            started = time.perf_counter()
            rows = await export(store, "exported", 0, time.time() + 1)
            joined_s = time.perf_counter() - started
            write(rows, "parquet", out)
            total_s = time.perf_counter() - started
            size = out.stat().st_size
    finally:
        await store.close()
    print(f"\nexport of {rows.count:,} decision rows ({rows.rewarded:,} with a reward; "
          f"{records:,} log records) to Parquet ({size / 1e6:.1f} MB):")
    print(f"  XRANGE of the stream alone: {read_s:.2f} s ({records / read_s:,.0f} records/s)")
    print(f"  export (read, parse, join): {joined_s:.2f} s; with the Parquet write: "
          f"{total_s:.2f} s = {rows.count / total_s:,.0f} rows/s; target >= 500,000: "
          f"{rows.count / total_s / 500_000:.2f}x of target; against the XRANGE alone: "
          f"{read_s / total_s:.2f}x")


async def bench_memory(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    print("\nRedis memory per log record (used_memory; a reward for every tenth decision):")
    for name, model, total, batch in (
            ("context-free, batches of 1,000", None, 100_000, 1000),
            ("context-free, single decisions", None, 20_000, 1),
            ("10-feature context, single decisions (each its own)", TEN_FEATURES, 20_000, 1),
            ("10-feature context, batches of 100", TEN_FEATURES, 100_000, 100)):
        experiment = f"memory-{len(name)}-{batch}"
        before = int(client.info("memory")["used_memory"])
        await _serve_decisions(redis_server.url, experiment, total, model, batch)
        client.delete(*(f"bandit:{{{experiment}}}:{k}" for k in ("stats", "served", "draws")))
        keys = list(client.scan_iter(f"bandit:{{{experiment}}}:dedup:*"))
        client.delete(*keys)
        after = int(client.info("memory")["used_memory"])
        stream = client.memory_usage(f"bandit:{{{experiment}}}:log", samples=0) or 0
        records = total * 11 // 10
        print(f"  {name}: {(after - before) / records:.0f} bytes per record (used_memory); "
              f"the stream alone: {stream / records:.0f} bytes per record "
              f"(MEMORY USAGE, {stream / 1e6:.1f} MB)")
    client.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=1_000_000, help="decisions to export")
    parser.add_argument("--only", default=",".join(PARTS))
    arguments = parser.parse_args(argv)
    parts = set(arguments.only.split(","))
    if unknown := parts - set(PARTS):
        parser.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    with tempfile.TemporaryDirectory() as directory, RedisServer(Path(directory)) as server:
        if "http" in parts:
            bench_http(arguments.seconds, server)
        if "export" in parts:
            asyncio.run(bench_export(server, arguments.rows))
        if "memory" in parts:
            asyncio.run(bench_memory(server))


if __name__ == "__main__":
    main()
