"""What one-call assignment (``POST /v1/assign``) costs, against baselines in the same run.

The surface: 20 layers of 5 experiments each, every experiment owning a fifth of its layer's
buckets (so a unit is in an experiment in every layer), half of them bandits of 10 arms, half
fixed A/B tests of 2 arms; every fourth experiment carries a targeting rule the units pass.

Parts (``--only``):

- inproc: one unit assigned in all 20 layers by the service object (``Layers.assign``, no
  HTTP), after a warm-up; microseconds per unit (target <= 25) against one in-process
  decision (``Decider.allocate_cached``, n=1) in the same run. Also membership alone (the 20
  buckets, experiments and targeting, no decisions) to say where the time goes.
- batch: the batch form, 1,000 units x 20 layers per call, in process: unit-layer assignments
  per second (target >= 200k) against decisions per second of allocate n=1,000.
- http: POST /v1/assign for one unit (a new unit id per request), one service process, driven
  by wrk, alternating with the no-op aiohttp handler (``benchmarks.bench_http``) sent the same
  requests: median of 3 pairs, for 1 layer and for all 20 (target >= 0.5x); allocate n=1 the
  same way, for reference.
- rules: targeting in process, what docs/layers.md states: the bench's rule (an ``in`` and a
  ``semver_gte``) per unit, and one regex condition per search of a random 1,000-character
  a/b attribute, for patterns whose automaton fits RE2's memory and patterns whose does not,
  against an ``eq`` condition (a set lookup) in the same run.

Usage: python -m benchmarks.bench_assign [--seconds 5] [--only inproc,batch,http,rules]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp.test_utils import TestClient, TestServer

from bandit.api.app import SERVICE, create_app
from bandit.inputs import AllocateRequest
from bandit.serving.service import BanditService
from bandit.settings import Settings
from bandit.store.embedded import free_port, wait_port
from bandit.targeting import Rule, parse_rule
from benchmarks.bench_http import (
    NOOP_SERVER,
    NUMBERED_THREADS,
    Run,
    Target,
    _median_pair,
    _worker_pids,
    wrk,
)
from tests.support.redis import RedisServer

PARTS = ("inproc", "batch", "http", "rules")
LAYERS, PER_LAYER = 20, 5
RULE = {"any": [{"all": [{"attribute": "country", "op": "in", "values": ["DE", "FR"]},
                         {"attribute": "app_version", "op": "semver_gte", "value": "2.0.0"}]}]}
ATTRIBUTES = {"country": "DE", "app_version": "2.3.1", "plan": "pro"}
TARGET_US, BATCH_TARGET, HTTP_TARGET = 25.0, 200_000.0, 0.5


async def _surface(client: TestClient[Any, Any]) -> None:
    """The 20 layers and their 100 experiments."""
    for layer in range(LAYERS):
        ranges = {}
        for slot in range(PER_LAYER):
            experiment = f"l{layer}-e{slot}"
            body: dict[str, Any] = {"id": experiment, "reward": "bernoulli"}
            if slot % 2:
                body.update(arms=["a", "b"], policy="fixed", weights={"a": 1, "b": 1})
            else:
                body["arms"] = [f"arm{i}" for i in range(10)]
            if (layer * PER_LAYER + slot) % 4 == 0:
                body["targeting"] = RULE
            response = await client.post("/v1/experiments", json=body)
            assert response.status == 201, await response.text()
            width = 10_000 // PER_LAYER
            ranges[experiment] = [[slot * width, (slot + 1) * width]]
        response = await client.post("/v1/layers", json={"id": f"layer-{layer:02d}",
                                                          "ranges": ranges})
        assert response.status == 201, await response.text()


async def _per_call(function: Any, seconds: float) -> float:
    """Seconds per call of a synchronous function, over about ``seconds``; the event loop
    gets a turn every 100 calls, so that what the calls leave to the service's background
    tasks (the decision log's flush of their records) is paid within the measurement, and
    the change feed is not starved."""
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(100):
            function()
        calls += 100
        await asyncio.sleep(0)
    return (time.perf_counter() - started) / calls


async def _per_await(function: Any, seconds: float) -> float:
    """Seconds per call of a coroutine function; the event loop gets a turn every 50 calls (a
    call that never waits would starve the service's background tasks, the log's flush)."""
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(50):
            await function()
        calls += 50
        await asyncio.sleep(0)
    return (time.perf_counter() - started) / calls


async def inproc_and_batch(redis_server: RedisServer, parts: set[str], seconds: float) -> None:
    settings = Settings(redis_url=redis_server.url, key_prefix="bench-assign")
    async with TestClient(TestServer(create_app(settings, seed=7))) as client:
        await _surface(client)
        service: BanditService = client.app[SERVICE]
        layers = service.layers
        counter = iter(range(10**12))
        # Warm-up: the cache holds the 100 snapshots, the signer is loaded, numba compiled.
        for _ in range(2000):
            await layers.assign({"unit": f"warm-{next(counter)}", "attributes": ATTRIBUTES})
        decisions = service.decisions
        wanted = AllocateRequest()
        one_decision = await _per_call(lambda: decisions.allocate_cached("l0-e0", wanted),
                                       seconds)
        if "inproc" in parts:
            assign = await _per_await(lambda: layers.assign(
                {"unit": f"u-{next(counter)}", "attributes": ATTRIBUTES}), seconds)
            all_layers = await layers.directory.layers()
            member = await _per_call(lambda: layers.memberships(all_layers, f"m-{next(counter)}",
                                                          ATTRIBUTES), seconds)
            print(f"in process, one unit in {LAYERS} layers of {PER_LAYER} experiments:")
            print(f"  assign (membership + 20 decisions)  {assign * 1e6:8.1f} us/unit  "
                  f"{assign / one_decision:6.1f}x one decision "
                  f"(target <= {TARGET_US:g} us: {TARGET_US / (assign * 1e6):.2f}x)")
            print(f"  membership alone (20 buckets)       {member * 1e6:8.1f} us/unit  "
                  f"{member / one_decision:6.1f}x one decision")
            print(f"  one decision (allocate_cached n=1)  {one_decision * 1e6:8.1f} us")
        if "batch" in parts:
            units = [{"unit": f"b-{i}", "attributes": ATTRIBUTES} for i in range(1000)]
            batch = await _per_await(lambda: layers.assign({"units": units}), seconds)
            thousand = AllocateRequest(n=1000)
            allocate = await _per_call(lambda: decisions.allocate_cached("l0-e0", thousand),
                                       seconds)
            rate = 1000 * LAYERS / batch
            print(f"batch of 1,000 units x {LAYERS} layers, in process:")
            print(f"  {rate:>12,.0f} unit-layer assignments/s "
                  f"(target >= {BATCH_TARGET:,.0f}: {rate / BATCH_TARGET:.2f}x); "
                  f"{1000 / allocate:,.0f} decisions/s of allocate n=1000 in the same run "
                  f"({rate / (1000 / allocate):.2f}x)")


ASSIGN_SCRIPT = NUMBERED_THREADS + textwrap.dedent("""
    counter = 0
    function request()
      counter = counter + 1
      local body = '{"unit":"u-' .. thread_id .. '-' .. counter .. '",' .. $rest
      return wrk.format("POST", "$path", {["Content-Type"] = "application/json"}, body)
    end
""")


@contextmanager
def _http_targets(redis_server: RedisServer) -> Iterator[tuple[Target, Target]]:
    service_port, noop_port = free_port(), free_port()
    processes = [
        subprocess.Popen([sys.executable, "-m", "bandit", "serve", "--redis", redis_server.url,
                          "--port", str(service_port), "--log-level", "WARNING"],
                         env={**os.environ, "BANDIT_KEY_PREFIX": "bench-assign"}),
        subprocess.Popen([sys.executable, "-c", NOOP_SERVER, str(noop_port), "0"])]
    try:
        for port in (service_port, noop_port):
            wait_port(port)
        assert redis_server.process is not None
        pid = redis_server.process.pid
        yield (Target(f"http://127.0.0.1:{service_port}", _worker_pids(processes[0], 1), pid),
               Target(f"http://127.0.0.1:{noop_port}", (processes[1].pid,), pid))
    finally:
        for process in processes:
            process.terminate()
            process.wait()


def http(redis_server: RedisServer, seconds: int, connections: int) -> None:
    with _http_targets(redis_server) as (service, noop):
        print(f"HTTP, one unit per request, 1 service process, {connections} connections:")
        # Each row's no-op runs get the same requests (the same wrk script: its Lua, which
        # builds a body per request, takes CPU from the machine's two cores too).
        rows: list[tuple[str, str, dict[str, str], dict[str, str]]] = [
            ("allocate n=1 (reference)", "/v1/experiments/l0-e0/allocate", {"body": "{}"},
             {"body": "{}"})]
        for label, layers in (("assign, 1 layer", ["layer-00"]),
                              (f"assign, {LAYERS} layers", None)):
            rest = json.dumps(json.dumps({"attributes": ATTRIBUTES, "layers": layers})[1:])
            script = ASSIGN_SCRIPT.replace("$rest", rest)
            rows.append((label, "/v1/assign", {"script": script.replace("$path", "/v1/assign")},
                         {"script": script.replace("$path", "/noop")}))
        for label, path, request, noop_request in rows:
            # Warm-up: snapshots cached, the layers read, numba compiled in the service.
            wrk(service, path, 2, connections, 1, **request)
            pairs: list[tuple[Run, Run]] = []
            for i in range(3):  # alternating which runs first
                if i % 2 == 0:
                    base = wrk(noop, "/noop", seconds, connections, 1, **noop_request)
                    run = wrk(service, path, seconds, connections, 1, **request)
                else:
                    run = wrk(service, path, seconds, connections, 1, **request)
                    base = wrk(noop, "/noop", seconds, connections, 1, **noop_request)
                pairs.append((base, run))
            (base, run), ratios = _median_pair(pairs)
            print(f"  {label:<26} {run.rps:>9,.0f} req/s p50 {run.p50_ms:.2f} ms  "
                  f"no-op {base.rps:>9,.0f} req/s  {run.rps / base.rps:.2f}x "
                  f"(target >= {HTTP_TARGET}x for assign; pairs {ratios})")


#: Regex conditions timed by ``rules``: (pattern, what it shows).
PATTERNS = (("^[A-Z]{2}$", "anchored"), ("(?i)chrome/\\d+", "literal-led"),
            ("(?:[a-z]{1,10}){1,10}z", "counted, 204 instructions"),
            ("[ab]*a[ab]{10}c", "unanchored count of 10"),
            ("[ab]*a[ab]{20}c", "unanchored count of 20"),
            ("[ab]*a[ab]{290}c", "unanchored count of 290"))


def rules(seconds: float) -> None:
    """Microseconds per targeting evaluation, against an ``eq`` condition's in the same run."""
    def timed(rule: Rule, attributes: list[dict[str, Any]]) -> float:
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / (len(PATTERNS) + 2):
            for item in attributes:
                rule.matches(item)
            calls += len(attributes)
        return (time.perf_counter() - started) / calls

    def one(op: str, value: Any) -> Rule:
        return parse_rule({"any": [{"all": [{"attribute": "k", "op": op, "value": value}]}]})

    rng = np.random.default_rng(1)
    texts = [{"k": "".join(rng.choice(["a", "b"], 1000))} for _ in range(200)]
    baseline = timed(one("eq", "x"), texts)
    bench_rule = timed(parse_rule(RULE), [ATTRIBUTES])
    print("targeting, in process:")
    print(f"  eq condition (baseline)            {baseline * 1e6:9.3f} us")
    print(f"  the bench's rule (in + semver_gte) {bench_rule * 1e6:9.3f} us "
          f"{bench_rule / baseline:8.1f}x")
    print("  one regex search of a random 1,000-character a/b attribute:")
    for pattern, label in PATTERNS:
        took = timed(one("regex", pattern), texts)
        print(f"    {pattern:<24} {label:<28} {took * 1e3:8.4f} ms {took / baseline:9.1f}x")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--only", default=",".join(PARTS))
    arguments = parser.parse_args(argv)
    parts = set(arguments.only.split(","))
    unknown = parts - set(PARTS)
    if unknown:
        parser.error(f"--only: unknown part(s) {sorted(unknown)}; choose from {PARTS}")
    if "rules" in parts:
        rules(arguments.seconds)
        if parts == {"rules"}:
            return
    with tempfile.TemporaryDirectory() as scratch:
        redis_server = RedisServer(Path(scratch))
        redis_server.start()
        try:
            # The surface is created here, for the HTTP part too.
            asyncio.run(inproc_and_batch(redis_server, parts, arguments.seconds))
            if "http" in parts:
                http(redis_server, arguments.seconds, arguments.connections)
        finally:
            redis_server.stop()


if __name__ == "__main__":
    main()
