"""Contextual experiments: decisions, events, refreshes and memory, each against a baseline
measured in the same run.

- decision: one decision with its exact propensity vector for a context (K = 20 arms, d = 32
  columns, posteriors after 20,000 observations), in process: ``Choice.of`` as the service
  calls it (encoding the context, P(best | x) by quadrature, folding the settings, the CDF,
  the feature hash) plus the draw; against the baseline of drawing theta_a ~ N(mu_a,
  Sigma_a) for every arm with numpy's ``multivariate_normal`` (what a textbook LinTS does per
  decision, without any propensity). Target: <= 50 us.
- http: POST allocate with a new context of 10 features every request (d = 16, K = 10,
  trained) against the no-op aiohttp JSON handler of bench_http, alternating 3 pairs
  (median). Target >= 0.6x. Also one context repeated (its allocation computed once per
  snapshot) and a context-free allocate.
- events: reward batches of 1000 events with a context of d = 16 (no decision ids, as
  bench_http's event rows), through one service process, dedup on. Target >= 50k events/s
  per process. Also the context-free batches of 1000 in the same run, as the baseline.
- refresh: building the snapshot of a contextual experiment from what Redis returns (decoding
  the rows, the Cholesky factors, the marginals) at K = 20, d = 64, against a context-free
  snapshot of 20 arms. Target <= 2 ms.
- memory: Redis ``used_memory`` growth per arm for d = 16, 32 and 64, once every arm has a
  row (10 experiments of 20 arms each), against a context-free arm.

Usage: python -m benchmarks.bench_contextual [--seconds 5] [--only decision,http,events,
       refresh,memory]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import tempfile
import textwrap
import time
import timeit
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bandit import policy
from bandit.model import parse_new_experiment
from bandit.policy import contextual
from bandit.serving.cache import build_snapshot
from bandit.serving.decisions import Choice
from bandit.settings import Settings
from bandit.store.codec import EncodedEvent, decode_state
from bandit.store.redis_store import RedisStore
from benchmarks.bench_http import EVENT, Run, _median_pair, _servers, events_script, wrk
from tests.support.redis import RedisServer

PARTS = ("decision", "http", "events", "refresh", "memory")


def numeric_model(d: int) -> dict[str, Any]:
    """A model of d - 1 numeric features and an intercept."""
    return {"type": "linear", "features": [
        {"name": f"f{i}", "type": "numeric", "scale": [0, 1]} for i in range(d - 1)]}


#: Ten features, sixteen columns: a region of 3 values (4 columns), a device of 2 (3), and
#: eight scores.
TEN_FEATURES: dict[str, Any] = {"type": "linear", "features": [
    {"name": "region", "type": "categorical", "values": ["eu", "us", "apac"]},
    {"name": "device", "type": "categorical", "values": ["ios", "android"]},
    *({"name": f"score{i}", "type": "numeric", "scale": [0, 1]} for i in range(8))]}
CONTEXT = {"region": "eu", "device": "ios", **{f"score{i}": 0.1 * (i + 1) for i in range(8)}}


def trained_snapshot(k: int, d: int, n: int, seed: int = 1) -> Any:
    """A snapshot of a contextual experiment with k arms after n observations (in process)."""
    experiment = parse_new_experiment({"id": "bench", "arms": [f"a{i}" for i in range(k)],
                                       "reward": "bernoulli", "model": numeric_model(d)}, 0.0)
    rng = np.random.default_rng(seed)
    x = np.column_stack([np.ones(n), rng.uniform(0, 1, (n, d - 1))])
    arms = rng.integers(0, k, n)
    theta = rng.normal(0, 0.4, (k, d)) / np.sqrt(d)
    rewards = (rng.random(n) < 1 / (1 + np.exp(-np.einsum("ij,ij->i", x, theta[arms])))
               ).astype(float)
    rows = np.zeros((k, contextual.stats_width(d)))
    contextual.add_observations(rows, arms, x, rewards, np.ones(n))
    from bandit.store.codec import StoredState
    counts = np.bincount(arms, minlength=k).astype(float)
    state = StoredState(experiment, np.zeros((3, k)), counts, np.zeros(k), 1, 0.0, rows)
    return build_snapshot(state), x


def bench_decision() -> None:
    k, d = 20, 32
    snapshot, x = trained_snapshot(k, d, 20_000)
    contexts = [{f"f{i}": float(v) for i, v in enumerate(row[1:])} for row in x[:500]]
    posterior = snapshot.contextual
    for context in contexts[:20]:  # JIT warm-up
        Choice.of(snapshot, context)
    rng = np.random.default_rng(2)
    uniforms = rng.random(len(contexts)).tolist()

    def ours() -> None:
        for context, u in zip(contexts, uniforms, strict=True):
            snapshot.choices.clear()  # every decision computed (no repeated-context reuse)
            choice = Choice.of(snapshot, context)
            policy.sample_one(choice.cumulative_list, u)

    def repeated() -> None:
        for u in uniforms:
            choice = Choice.of(snapshot, contexts[0])
            policy.sample_one(choice.cumulative_list, u)

    covariances = [np.linalg.inv(f @ f.T) * s for f, s in zip(posterior.factors,
                                                                posterior.sigma2, strict=True)]

    def baseline() -> None:
        for row in x[:len(contexts)]:
            scores = [row @ rng.multivariate_normal(mean, cov)
                      for mean, cov in zip(posterior.means, covariances, strict=True)]
            int(np.argmax(scores))

    ours_s = min(timeit.repeat(ours, number=1, repeat=7)) / len(contexts)
    repeated_s = min(timeit.repeat(repeated, number=1, repeat=7)) / len(contexts)
    base_s = min(timeit.repeat(baseline, number=1, repeat=3)) / len(contexts)
    relevant = np.mean([np.count_nonzero(Choice.of(snapshot, c).probabilities > 0.0)
                        for c in contexts])
    print(f"decision + exact propensities, K={k}, d={d} (in process, per decision):")
    print(f"  ours (encode, P(best | x), fold, draw): {ours_s * 1e6:8.1f} us "
          f"(arms with a chance: {relevant:.1f} of {k} on average); target <= 50 us: "
          f"{50e-6 / ours_s:.2f}x of target")
    print(f"  ours, a context seen before (reused):   {repeated_s * 1e6:8.1f} us")
    print(f"  numpy multivariate_normal per arm:      {base_s * 1e6:8.1f} us "
          f"(no propensity); ours is {base_s / ours_s:.1f}x faster")
    # The quadrature alone at its worst: every arm in the race (untrained, distinct priors).
    racing, _ = trained_snapshot(k, d, 40)

    def fresh() -> None:
        for context in contexts:
            racing.choices.clear()
            Choice.of(racing, context)

    worst = min(timeit.repeat(fresh, number=1, repeat=5)) / len(contexts)
    print(f"  ours on 40 observations (every arm in the race): {worst * 1e6:.1f} us")


def _post(url: str, body: object) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())


#: Reward events with a d = 16 context (bench_http's script, these events instead), and the
#: same events of the context-free experiment without it.
CONTEXT_PRELUDE = """local regions = {"eu", "us", "apac", "latam"}
    local devices = {"ios", "android", "web"}
    local function scores(i)
      local out = {}
      for s = 0, 7 do
        out[#out + 1] = string.format('"score%d":%.3f', s, ((i * 7 + s * 13) % 100) / 100)
      end
      return table.concat(out, ",")
    end"""
CONTEXT_EVENT = """string.format(
          '{"id":"$run-%d-%d-%d","experiment":"ctx","arm":"arm%d","reward":%d,' ..
          '"context":{"region":"%s","device":"%s",%s}}',
          thread_id, counter, i, i % 10, i % 2, regions[i % 4 + 1], devices[i % 3 + 1],
          scores(i))"""
PLAIN_EVENT = EVENT.replace('"experiment":"bench"', '"experiment":"plain"')


def bench_http(seconds: int, redis: RedisServer, parts: set[str]) -> None:
    assert redis.process is not None
    with _servers(1, redis.url, redis.process.pid, None) as (service, noop, _):
        arms = [f"arm{i}" for i in range(10)]
        _post(f"{service.url}/v1/experiments", {"id": "ctx", "arms": arms,
                                                "reward": "bernoulli", "model": TEN_FEATURES})
        _post(f"{service.url}/v1/experiments", {"id": "plain", "arms": arms,
                                                "reward": "bernoulli"})
        # Train it: 20 batches of 1000 decisions, rewarded with the same contexts.
        rng = np.random.default_rng(3)
        for batch in range(20):
            context = {**CONTEXT, "region": ["eu", "us", "apac"][batch % 3],
                       **{f"score{i}": float(rng.random()) for i in range(8)}}
            decisions = _post(f"{service.url}/v1/experiments/ctx/allocate",
                              {"n": 1000, "context": context})["decisions"]
            events = [{"id": f"t{batch}-{i}", "experiment": "ctx", "arm": d["arm"],
                       "decision_id": d["decision_id"], "context": context,
                       "reward": int(rng.random() < 0.05 + 0.01 * arms.index(d["arm"]))}
                      for i, d in enumerate(decisions)]
            assert _post(f"{service.url}/v1/events", {"events": events})["accepted"] == 1000
        time.sleep(0.5)
        body = json.dumps({"context": CONTEXT})
        allocate = "/v1/experiments/ctx/allocate"
        if "http" in parts:
            wrk(service, allocate, 2, 16, 1, script=ALLOCATE_SCRIPT)
            wrk(noop, "/noop", 2, 16, 1, body="{}")
            pairs = [(wrk(noop, "/noop", seconds, 16, 1, body="{}"),
                      wrk(service, allocate, seconds, 16, 1, script=ALLOCATE_SCRIPT))
                     for _ in range(3)]
            (noop_run, ctx_run), ratios = _median_pair(pairs)
            repeated = wrk(service, allocate, seconds, 16, 1, body=body)
            plain = wrk(service, "/v1/experiments/plain/allocate", seconds, 16, 1, body="{}")
            print("\nHTTP allocate n=1, one service process, 16 connections:")
            _row("no-op aiohttp JSON handler", noop_run)
            _row("allocate, a new 10-feature context", ctx_run)
            _row("allocate, one context repeated", repeated)
            _row("allocate, context-free", plain)
            ratio = ctx_run.rps / noop_run.rps
            print(f"allocate with a new context / no-op: {ratio:.2f}x (pairs: {ratios}); target "
                  f">= 0.6x: {ratio / 0.6:.2f}x of target; a repeated context / no-op: "
                  f"{repeated.rps / noop_run.rps:.2f}x; context-free allocate / no-op: "
                  f"{plain.rps / noop_run.rps:.2f}x")
        if "events" in parts:
            runs: dict[str, Run] = {}
            for name in ("plain", "ctx"):
                for label in ("warm", "run"):
                    run = f"{name}{label}{time.time_ns()}"
                    script = (events_script(1000, run, PLAIN_EVENT) if name == "plain" else
                              events_script(1000, run, CONTEXT_EVENT, CONTEXT_PRELUDE))
                    runs[name] = wrk(service, "/v1/events", 1 if label == "warm" else seconds,
                                     4, 1, script=script)
                if runs[name].duplicates:
                    raise RuntimeError(f"{name}: {runs[name].duplicates} duplicates reported")
            print("\nreward events, batches of 1000, one service process, 4 connections:")
            _row("context-free events", runs["plain"], 1000)
            _row("events with a context, d = 16", runs["ctx"], 1000)
            rate = runs["ctx"].rps * 1000
            print(f"contextual events/s: {rate:,.0f}; target >= 50,000: "
                  f"{rate / 50_000:.2f}x of target; against context-free: "
                  f"{runs['ctx'].rps / runs['plain'].rps:.2f}x")


#: Allocate with a new context every request (eight random scores: never the same features
#: twice, so every decision computes its allocation; see ``Choice.of``).
ALLOCATE_SCRIPT = textwrap.dedent("""
    math.randomseed(os.time())
    local regions = {"eu", "us", "apac"}
    local devices = {"ios", "android"}
    function request()
      local scores = {}
      for s = 0, 7 do scores[#scores + 1] = string.format('"score%d":%.6f', s, math.random()) end
      local body = string.format('{"context":{"region":"%s","device":"%s",%s}}',
        regions[math.random(3)], devices[math.random(2)], table.concat(scores, ","))
      return wrk.format("POST", "/v1/experiments/ctx/allocate",
                        {["Content-Type"] = "application/json"}, body)
    end
""")


def _row(label: str, run: Run, items: int = 1) -> None:
    cpu = "/".join(f"{share:.0%}" for share in run.cpu)
    print(f"  {label:36} {run.rps:9.0f} req/s {run.rps * items:11.0f} items/s  "
          f"p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms  CPU {cpu}, Redis "
          f"{run.redis_cpu:.0%}")


async def _fill(store: RedisStore, experiment_id: str, k: int, d: int | None) -> None:
    """Create an experiment (contextual with d columns, or not) and reward every arm."""
    body: dict[str, Any] = {"id": experiment_id, "arms": [f"a{i}" for i in range(k)],
                            "reward": "bernoulli"}
    if d is not None:
        body["model"] = numeric_model(d)
    experiment = parse_new_experiment(body, time.time())
    await store.create(experiment, {"action": "create"})
    events = [EncodedEvent(f"{experiment_id}-{i}", i % k, float(i % 2), None, None)
              for i in range(4 * k)]
    if d is None:
        await store.apply_events({experiment_id: events}, 60)
    else:
        rng = np.random.default_rng(4)
        features = np.column_stack([np.ones(4 * k), rng.uniform(0, 1, (4 * k, d - 1))])
        await store.apply_contextual(experiment_id, events, features, np.ones(4 * k),
                                     time.time(), 60)


async def bench_refresh_and_memory(redis: RedisServer, parts: set[str]) -> None:
    settings = Settings(redis_url=redis.url)
    store = RedisStore.from_settings(settings)
    client = store._client
    try:
        if "refresh" in parts:
            await _fill(store, "refresh-ctx", 20, 64)
            await _fill(store, "refresh-plain", 20, None)
            keys = {name: store.keys(name) for name in ("refresh-ctx", "refresh-plain")}
            raw = {}
            for name, key in keys.items():
                (raw[name],) = await store._scripts.run(
                    [(store._read, [key.meta, key.stats], [])], wait=False, raw=True)
            for value in raw.values():  # warm-up
                build_snapshot(decode_state(value))
            def build(result: Any) -> None:
                build_snapshot(decode_state(result))

            timings = {name: min(timeit.repeat(functools.partial(build, value), number=20,
                                               repeat=5)) / 20 for name, value in raw.items()}
            decode = min(timeit.repeat(lambda: decode_state(raw["refresh-ctx"]), number=20,
                                       repeat=5)) / 20
            state = decode_state(raw["refresh-ctx"])
            rows = state.rows
            assert rows is not None
            model = state.experiment.model
            assert model is not None
            factor = min(timeit.repeat(lambda: contextual.posterior_factors(
                rows, model.prior_precision(), np.zeros(64), 1.0, 0.25, 1.0),
                number=20, repeat=5)) / 20
            print("\nrefresh: a snapshot built from what Redis returned, K = 20 arms:")
            print(f"  context-free:            {timings['refresh-plain'] * 1e3:6.3f} ms")
            print(f"  contextual, d = 64:      {timings['refresh-ctx'] * 1e3:6.3f} ms "
                  f"(decoding the rows {decode * 1e3:.3f} ms, Cholesky factors and means "
                  f"{factor * 1e3:.3f} ms); target <= 2 ms: "
                  f"{2e-3 / timings['refresh-ctx']:.2f}x of target; "
                  f"{timings['refresh-ctx'] / timings['refresh-plain']:.1f}x context-free")
        if "memory" in parts:
            print("\nRedis memory per arm (10 experiments of 20 arms, every arm rewarded; "
                  "dedup sets deleted before measuring):")
            results = {}
            for d in (None, 16, 32, 64):
                await client.flushall()
                before = (await client.info("memory"))["used_memory"]
                for e in range(10):
                    await _fill(store, f"mem-{d or 0}-{e}", 20, d)
                async for key in client.scan_iter(match="*dedup*"):
                    await client.delete(key)
                after = (await client.info("memory"))["used_memory"]
                results[d] = (after - before) / 200
            for d, per_arm in results.items():
                label = ("context-free" if d is None
                         else f"d = {d:2d} ({contextual.stats_width(d):,} numbers)")
                print(f"  {label:28} {per_arm:9,.0f} bytes per arm "
                      f"({per_arm / results[None]:.1f}x context-free)")
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--only", default=",".join(PARTS))
    arguments = parser.parse_args(argv)
    parts = set(arguments.only.split(","))
    if unknown := parts - set(PARTS):
        parser.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    policy.warm_up_kernels()
    if "decision" in parts:
        bench_decision()
    if parts & {"http", "events", "refresh", "memory"}:
        with tempfile.TemporaryDirectory() as directory, RedisServer(Path(directory)) as redis:
            if parts & {"http", "events"}:
                bench_http(arguments.seconds, redis, parts)
            if parts & {"refresh", "memory"}:
                asyncio.run(bench_refresh_and_memory(redis, parts))


if __name__ == "__main__":
    main()
