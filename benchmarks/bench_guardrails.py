"""What guardrails cost: the refresh that computes the allocation, and the decisions drawn
from it, against the same experiment without guardrails in the same run.

Parts (``--only``):

- refresh: ``build_snapshot`` (what a refresh computes per changed experiment, after the read)
  for K arms with 3 guardrails, all absolute thresholds (exact) and two relative to the
  control (256 draws of the control's means), against the same statistics without guardrails;
  milliseconds per refresh (target <= 5 ms at K=20), after a JIT warm-up; the median of
  ``--repeats`` timings each.
- decisions: ``Decider.allocate_cached`` n=1 in process (a real Redis, the service object) for
  an experiment with 3 guardrails and one without, alternating; microseconds per decision and
  their ratio (target: about 1x, since both draw from cached probabilities).

Usage: python -m benchmarks.bench_guardrails [--arms 20] [--seconds 3] [--repeats 50]
       [--only refresh,decisions]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp.test_utils import TestClient, TestServer

from bandit.api.app import SERVICE, create_app
from bandit.inputs import AllocateRequest
from bandit.model import Experiment, parse_new_experiment
from bandit.serving.cache import build_snapshot
from bandit.serving.service import BanditService
from bandit.settings import Settings
from bandit.store.codec import GuardState, StoredState
from tests.support.redis import RedisServer

PARTS = ("refresh", "decisions")
REFRESH_TARGET_MS = 5.0
REVENUE = {"metric": "revenue", "kind": "gaussian", "direction": "higher"}
LATENCY = {"metric": "latency", "kind": "gaussian", "direction": "lower"}
UNSUBSCRIBE = {"metric": "unsubscribe", "kind": "bernoulli", "direction": "lower",
               "threshold": {"absolute": 0.01}}


def guardrails(relative: bool) -> list[dict[str, Any]]:
    if relative:
        return [{**REVENUE, "threshold": {"relative": -0.02}},
                {**LATENCY, "threshold": {"relative": 0.05}}, UNSUBSCRIBE]
    return [{**REVENUE, "threshold": {"absolute": 0.98}},
            {**LATENCY, "threshold": {"absolute": 105.0}}, UNSUBSCRIBE]


def experiment(arms: int, guards: list[dict[str, Any]]) -> Experiment:
    return parse_new_experiment({
        "id": "bench", "arms": [f"a{i}" for i in range(arms)], "reward": "bernoulli",
        "control": "a0", "guardrails": guards,
        "exploration": {"min_share": min(0.01, 0.5 / arms)}}, 0.0)


def state(config: Experiment, rng: np.random.Generator) -> StoredState:
    """Statistics of a running experiment: about 1,000 observations per arm and metric."""
    k = len(config.arms)
    n = np.full(k, 1000.0)
    clicks = rng.binomial(1000, 0.1 + 0.01 * rng.standard_normal(k).clip(-3, 3))
    guards = {}
    for guardrail in config.guardrails:
        if guardrail.kind == "bernoulli":
            hits = rng.binomial(1000, 0.005, size=k)
            stats = np.vstack([hits, 1000 - hits, np.zeros(k)]).astype(float)
        else:
            centre, sd = (1.0, 0.5) if guardrail.metric == "revenue" else (100.0, 20.0)
            means = centre * (1 + 0.02 * rng.standard_normal(k))
            stats = np.vstack([n, means, n * sd**2])
        guards[guardrail.key] = GuardState(stats, n.copy(), np.zeros(k))
    return StoredState(config, np.vstack([clicks, 1000 - clicks, np.zeros(k)]).astype(float),
                       n, np.zeros(k), 1, 0.0, None, guards)


def _timed(functions: Sequence[Callable[[], Any]], repeats: int) -> list[float]:
    """Median seconds of ``repeats`` calls of each function, the calls alternating (a load
    that comes and goes falls on both)."""
    times: list[list[float]] = [[] for _ in functions]
    for _ in range(repeats):
        for function, taken in zip(functions, times, strict=True):
            started = time.perf_counter()
            function()
            taken.append(time.perf_counter() - started)
    return [statistics.median(taken) for taken in times]


def refresh(arms: int, repeats: int) -> None:
    rng = np.random.default_rng(20)
    print(f"refresh (build_snapshot), K={arms}, 3 guardrails, median of {repeats}:")
    plain_config = experiment(arms, [])
    for label, relative in (("absolute thresholds (exact)", False),
                            ("2 relative + 1 absolute", True)):
        config = experiment(arms, guardrails(relative))
        guarded = state(config, rng)
        plain = StoredState(plain_config, guarded.stats, guarded.counts, guarded.updated_at, 1,
                            0.0)
        for _ in range(3):  # JIT warm-up (or the numba cache's load)
            build_snapshot(guarded)
            build_snapshot(plain)
        took, baseline = _timed([lambda: build_snapshot(guarded),  # noqa: B023
                                 lambda: build_snapshot(plain)], repeats)  # noqa: B023
        snapshot = build_snapshot(guarded)
        assert snapshot.guarded is not None
        print(f"  {label:<28} {took * 1e3:7.2f} ms  {took / baseline:5.1f}x without guardrails "
              f"({baseline * 1e3:.2f} ms)  target <= {REFRESH_TARGET_MS:g} ms: "
              f"{REFRESH_TARGET_MS / (took * 1e3):.2f}x  "
              f"Monte Carlo error {snapshot.guarded.error.max():.5f}")


async def _per_call(function: Callable[[], Any], seconds: float) -> float:
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(100):
            function()
        calls += 100
        await asyncio.sleep(0)  # the service's background tasks (the log's flush) get turns
    return (time.perf_counter() - started) / calls


async def decisions(redis_server: RedisServer, arms: int, seconds: float) -> None:
    settings = Settings(redis_url=redis_server.url, key_prefix="bench-guardrails")
    async with TestClient(TestServer(create_app(settings, seed=7))) as client:
        for name, guards in (("guarded", guardrails(True)), ("plain", [])):
            body = {"id": name, "arms": [f"a{i}" for i in range(arms)], "reward": "bernoulli",
                    "control": "a0", "guardrails": guards}
            response = await client.post("/v1/experiments", json=body)
            assert response.status == 201, await response.text()
        service: BanditService = client.app[SERVICE]
        wanted = AllocateRequest()
        await service.decisions.signer()
        for name in ("guarded", "plain"):  # warm-up: cached snapshots, the signer, numba
            await service.decisions.snapshot(name)
            assert service.decisions.allocate_cached(name, wanted) is not None
            for _ in range(2000):
                service.decisions.allocate_cached(name, wanted)
        ratios, guarded_us = [], []
        for _ in range(3):
            guarded = await _per_call(
                lambda: service.decisions.allocate_cached("guarded", wanted), seconds)
            plain = await _per_call(
                lambda: service.decisions.allocate_cached("plain", wanted), seconds)
            ratios.append(guarded / plain)
            guarded_us.append(guarded * 1e6)
        print(f"decisions (allocate_cached n=1), K={arms}, 3 guardrails vs none, 3 pairs:")
        print(f"  {statistics.median(guarded_us):6.2f} us per decision; ratio to the same "
              f"without guardrails {', '.join(f'{r:.2f}' for r in ratios)} "
              f"(median {statistics.median(ratios):.2f}x)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arms", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--only", default=",".join(PARTS))
    arguments = parser.parse_args(argv)
    parts = set(arguments.only.split(","))
    if parts - set(PARTS):
        parser.error(f"--only: unknown part(s) {sorted(parts - set(PARTS))}; choose from "
                     f"{PARTS}")
    if "refresh" in parts:
        refresh(arguments.arms, arguments.repeats)
    if "decisions" in parts:
        with tempfile.TemporaryDirectory() as scratch:
            redis_server = RedisServer(Path(scratch))
            redis_server.start()
            try:
                asyncio.run(decisions(redis_server, arguments.arms, arguments.seconds))
            finally:
                redis_server.stop()


if __name__ == "__main__":
    main()
