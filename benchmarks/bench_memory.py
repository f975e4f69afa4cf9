"""Memory: bytes per experiment, per arm, per dedup entry, per sticky unit, per pending
provisional decision and per history sample, measured in Redis, against the same data stored
in its simplest form in the same run.

Starts its own redis-server (no persistence) and writes through the service's own code path
(``BanditService`` in-process on ``RedisStore.from_settings``). Each figure is the growth of
``INFO memory`` ``used_memory`` over a batch of items, divided by the items; the baseline is the
same ids and values written with plain commands (a SET of the event ids, an HSET unit -> arm,
...), so the ratio is the overhead of our layout. ``MEMORY USAGE`` of one key of each type and
``OBJECT ENCODING`` show where the bytes are: small hashes are compact (ziplist/listpack up to
``hash-max-*-entries`` fields), larger ones hash tables, so costs per item are not linear;
measure at the sizes you run at.

- experiment: ``--experiments`` (1000) experiments of 2 arms (meta and stats hashes, the audit
  list, the registry entry) against one string of the config JSON and two counters per arm;
- arm: experiments of 2, 10 and 100 arms after a reward on every arm (so the stats hash has
  every per-arm field; their dedup sets are deleted before measuring): the growth per arm;
- dedup entry: ``--events`` (100,000) distinct events with 36-character UUID ids, then with
  short ids (``e<number>``), 64- and 128-character ids, into one experiment's bucketed dedup
  sets (``bandit/store/keys.py``);
- sticky unit: ``--units`` (100,000) sticky decisions for units ``user-<6 digits>``;
- provisional decision: ``--provisional`` (10,000) pending decisions (a key each, with expiry);
- history sample: ``--samples`` (200) samples of each of 10 experiments of 10 arms.

Usage: python -m benchmarks.bench_memory [--experiments 1000] [--events 100000]
       [--units 100000] [--provisional 10000] [--samples 200]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from bandit.policy import warm_up_kernels
from bandit.serving.cache import summary_of
from bandit.serving.history import sample
from bandit.serving.service import BanditService
from bandit.settings import Settings
from bandit.store.codec import Draws, HistoryRings, Traffic
from bandit.store.redis_store import RedisStore
from tests.support.redis import RedisServer

Redis = aioredis.Redis
#: Items written per call (events per batch, decisions per request, concurrent requests).
CHUNK = 1000
#: Two readings of used_memory this close count as settled.
SETTLED_BYTES = 1024


@dataclass(frozen=True)
class Row:
    item: str
    count: int
    ours: float
    baseline: float
    encoding: str
    baseline_encoding: str




async def _used(client: Redis) -> int:
    """``used_memory`` less the client buffers, once it has settled.

    A concurrent write opens connections and grows their buffers; Redis shrinks them again in
    its client cron (within a second or two), so the reading waits until two readings half a
    second apart agree: buffers are not data, and would swamp small batches.
    """
    previous = None
    deadline = time.monotonic() + 10.0
    while True:
        memory = await client.info("memory")
        used = int(memory["used_memory"]) - int(memory["mem_clients_normal"]) - int(
            memory["mem_clients_slaves"])
        if previous is not None and (abs(used - previous) <= SETTLED_BYTES
                                     or time.monotonic() > deadline):
            return used
        previous = used
        await asyncio.sleep(0.5)


async def _growth(client: Redis, write: Callable[[], Awaitable[object]]) -> int:
    """Bytes ``used_memory`` grew by while ``write`` ran."""
    before = await _used(client)
    await write()
    return await _used(client) - before


async def _encoding(client: Redis, key: str) -> str:
    return str(await client.object("encoding", key))


async def _memory_usage(client: Redis, key: str) -> int:
    return int(await client.memory_usage(key, samples=0) or 0)


async def _delete_matching(client: Redis, pattern: str) -> int:
    keys = [key async for key in client.scan_iter(match=pattern, count=1000)]
    for start in range(0, len(keys), CHUNK):
        await client.delete(*keys[start:start + CHUNK])
    return len(keys)


def _arms(count: int) -> list[str]:
    return [f"arm{i}" for i in range(count)]


async def _create(service: BanditService, names: list[str], arms: int) -> None:
    for name in names:
        await service.create_experiment({"id": name, "arms": _arms(arms),
                                         "reward": "bernoulli"})


async def _reward_every_arm(service: BanditService, names: list[str], arms: int) -> None:
    for name in names:
        await service.apply_events({"events": [
            {"id": f"{name}-{i}", "experiment": name, "arm": arm, "reward": i % 2}
            for i, arm in enumerate(_arms(arms))]})


async def _baseline_experiments(client: Redis, names: list[str], config: str,
                                arms: int) -> None:
    """The simplest form: one string per experiment, the config JSON and two counters per arm."""
    counters = orjson.dumps([[i % 2, 1 - i % 2] for i in range(arms)]).decode()
    async with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.set(f"base:{name}", f"{config}|{counters}")
        await pipe.execute()


async def _experiments(service: BanditService, client: Redis, count: int) -> list[Row]:
    names = [f"exp-{i}" for i in range(count)]
    ours = await _growth(client, lambda: _create(service, names, 2))
    keys = service.store.keys(names[0])
    config = str(await client.hget(keys.meta, "config"))
    baseline = await _growth(client, lambda: _baseline_experiments(client, names, config, 2))
    parts = {"meta": keys.meta, "stats": keys.stats, "audit": keys.audit}
    detail = ", ".join([f"{part} {await _memory_usage(client, key)} B "
                        f"{await _encoding(client, key)}" for part, key in parts.items()])
    print(f"  one 2-arm experiment, MEMORY USAGE: {detail}")
    return [Row("experiment, 2 arms", count, ours / count, baseline / count,
                f"meta {await _encoding(client, keys.meta)}",
                await _encoding(client, f"base:{names[0]}"))]


async def _per_arm(service: BanditService, client: Redis, count: int) -> list[Row]:
    measured: dict[int, tuple[float, float, str, str]] = {}
    for arms in (2, 10, 100):
        names = [f"arms{arms}-{i}" for i in range(count)]

        async def ours(names: list[str] = names, arms: int = arms) -> None:
            await _create(service, names, arms)
            await _reward_every_arm(service, names, arms)
            for name in names:
                await _delete_matching(client, f"{service.store.keys(name).prefix_with_tag}dedup:*")

        grown = await _growth(client, ours)
        keys = service.store.keys(names[0])
        config = str(await client.hget(keys.meta, "config"))
        baseline = await _growth(client, functools.partial(
            _baseline_experiments, client, [f"b-{name}" for name in names], config, arms))
        measured[arms] = (grown / count, baseline / count, await _encoding(client, keys.stats),
                          await _encoding(client, f"base:b-{names[0]}"))
        print(f"  {arms}-arm experiment, MEMORY USAGE: meta "
              f"{await _memory_usage(client, keys.meta)} B {await _encoding(client, keys.meta)}, "
              f"stats {await _memory_usage(client, keys.stats)} B "
              f"{await _encoding(client, keys.stats)} ({await client.hlen(keys.stats)} fields)")
    rows = []
    two = measured[2]
    for arms in (10, 100):
        ours_bytes, base_bytes, encoding, base_encoding = measured[arms]
        rows.append(Row(f"arm, 2 -> {arms} arms", count * (arms - 2),
                        (ours_bytes - two[0]) / (arms - 2), (base_bytes - two[1]) / (arms - 2),
                        f"stats {encoding}", base_encoding))
    return rows


async def _dedup(service: BanditService, client: Redis, count: int) -> list[Row]:
    rows = []
    makers = {"dedup-uuid": lambda i: str(uuid.uuid4()), "dedup-short": lambda i: f"e{i}",
              "dedup-64": lambda i: f"{i:064d}", "dedup-128": lambda i: f"{i:0128d}"}
    for label, name in (("dedup entry, UUID id", "dedup-uuid"),
                        ("dedup entry, short id", "dedup-short"),
                        ("dedup entry, 64-char id", "dedup-64"),
                        ("dedup entry, 128-char id", "dedup-128")):
        await _create(service, [name], 2)
        await _reward_every_arm(service, [name], 2)  # the stats hash exists before measuring
        ids = [makers[name](i) for i in range(count)]

        async def ours(ids: list[str] = ids, name: str = name) -> None:
            for start in range(0, len(ids), CHUNK):
                answer = await service.apply_events({"events": [
                    {"id": event_id, "experiment": name, "arm": "arm0", "reward": 1}
                    for event_id in ids[start:start + CHUNK]]})
                assert answer["accepted"] == len(ids[start:start + CHUNK]), answer

        async def baseline(ids: list[str] = ids, name: str = name) -> None:
            for start in range(0, len(ids), CHUNK):
                await client.sadd(f"base:{name}", *ids[start:start + CHUNK])

        grown = await _growth(client, ours)
        base = await _growth(client, baseline)
        pattern = f"{service.store.keys(name).prefix_with_tag}dedup:*"
        buckets = [key async for key in client.scan_iter(match=pattern)]
        sizes = [await _memory_usage(client, key) for key in buckets]
        print(f"  {label}: {len(buckets)} bucket set(s), MEMORY USAGE {sum(sizes):,} B "
              f"({sum(sizes) / count:.1f} B/id)")
        rows.append(Row(label, count, grown / count, base / count,
                        await _encoding(client, buckets[0]),
                        await _encoding(client, f"base:{name}")))
    return rows


async def _sticky(service: BanditService, client: Redis, count: int) -> list[Row]:
    name = "sticky"
    await _create(service, [name], 2)
    units = [f"user-{100000 + i}" for i in range(count)]
    arms: dict[str, str] = {}

    async def ours() -> None:
        for start in range(0, count, CHUNK // 10):
            answers = await asyncio.gather(*(
                service.allocate(name, {"unit": unit, "sticky": True})
                for unit in units[start:start + CHUNK // 10]))
            for unit, answer in zip(units[start:start + CHUNK // 10], answers, strict=True):
                arms[unit] = answer["decisions"][0]["arm"]

    async def baseline() -> None:
        for start in range(0, count, CHUNK):
            await client.hset("base:units", mapping={
                unit: arms[unit] for unit in units[start:start + CHUNK]})

    grown = await _growth(client, ours)
    base = await _growth(client, baseline)
    key = service.store.keys(name).units
    print(f"  sticky units hash: MEMORY USAGE {await _memory_usage(client, key):,} B, "
          f"a value: {await client.hget(key, units[0])!r}")
    return [Row("sticky unit", count, grown / count, base / count,
                await _encoding(client, key), await _encoding(client, "base:units"))]


async def _provisional(service: BanditService, client: Redis, count: int) -> list[Row]:
    name = "provisional"
    await _create(service, [name], 2)
    decided: dict[str, int] = {}

    async def ours() -> None:
        for start in range(0, count, CHUNK):
            n = min(CHUNK, count - start)
            answer = await service.allocate(name, {"n": n, "provisional": True})
            for decision in answer["decisions"]:
                decided[decision["decision_id"]] = int(decision["arm"] == "arm1")

    async def baseline() -> None:
        ids = list(decided)
        for start in range(0, len(ids), CHUNK):
            await client.hset("base:decisions", mapping={
                decision: decided[decision] for decision in ids[start:start + CHUNK]})

    keys_before = await client.dbsize()
    grown = await _growth(client, ours)
    added = await client.dbsize() - keys_before
    base = await _growth(client, baseline)
    some = service.store.keys(name).decision(next(iter(decided)))
    print(f"  provisional: {added:,} keys added, one key MEMORY USAGE "
          f"{await _memory_usage(client, some)} B, TTL {await client.pttl(some) / 1000:.0f} s")
    return [Row("pending provisional decision", count, grown / count, base / count,
                f"a key each, {await _encoding(client, some)}",
                await _encoding(client, "base:decisions"))]


def _traffic(arms: int) -> Traffic:
    """Cumulative counts of an experiment served a million decisions: numbers with all the
    digits a busy experiment's samples carry."""
    served = {i: 1_000_000 // arms + 7 * i for i in range(arms)}
    return Traffic(served, {i: Draws(float(v), v * 1.000_13 + 0.123_456, v * 0.9 + 0.987_65)
                            for i, v in served.items()})


async def _history(service: BanditService, client: Redis, count: int) -> list[Row]:
    names = [f"history-{i}" for i in range(10)]
    await _create(service, names, 10)
    await _reward_every_arm(service, names, 10)
    documents: dict[str, dict[str, Any]] = {}
    for name in names:
        snapshot = await service.cache.get(name)
        documents[name] = sample(snapshot, await summary_of(snapshot), _traffic(10))

    async def ours() -> None:
        for _ in range(count):
            # An interval of ~0 lets every offer land (the service offers one per interval).
            await service.store.append_history(documents, HistoryRings(1e-9, count, 1e-9, 0))

    async def baseline() -> None:
        for _ in range(count):
            async with client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.rpush(f"base:{name}", orjson.dumps(documents[name]))
                await pipe.execute()

    grown = await _growth(client, ours)
    base = await _growth(client, baseline)
    key = service.store.keys(names[0]).history
    assert await client.llen(key) == count
    samples = count * len(names)
    print(f"  history: {len(orjson.dumps(documents[names[0]]))} B of JSON per 10-arm sample, "
          f"list MEMORY USAGE {await _memory_usage(client, key):,} B")
    return [Row("history sample, 10 arms", samples, grown / samples, base / samples,
                await _encoding(client, key), await _encoding(client, f"base:{names[0]}"))]


async def _run(url: str, arguments: argparse.Namespace) -> list[Row]:
    settings = Settings(redis_url=url)
    store = RedisStore.from_settings(settings)
    service = BanditService(store, settings, seed=arguments.seed)
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        # Warm-up: every script loaded and every key type created once, so the script cache
        # and first-use allocations are not counted against the first measurement.
        await _create(service, ["warm"], 2)
        await _reward_every_arm(service, ["warm"], 2)
        await asyncio.gather(*(service.allocate("warm", {"unit": f"user-{i}", "sticky": True})
                               for i in range(CHUNK // 10)))  # opens the connection pool
        await service.allocate("warm", {"n": 2, "provisional": True})
        await store.append_history({"warm": {"share": [0.5, 0.5]}},
                                   HistoryRings(1e-9, 10, 1e-9, 0))
        rows = await _experiments(service, client, arguments.experiments)
        rows += await _per_arm(service, client, arguments.arm_experiments)
        rows += await _dedup(service, client, arguments.events)
        rows += await _sticky(service, client, arguments.units)
        rows += await _provisional(service, client, arguments.provisional)
        rows += await _history(service, client, arguments.samples)
        info = await client.info("server")
        print(f"  redis {info['redis_version']}, used_memory "
              f"{await _used(client):,} B at the end")
    finally:
        await client.aclose()
        await store.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--arm-experiments", type=int, default=100,
                        help="experiments of each size (2, 10, 100 arms) for the per-arm cost")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--provisional", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    arguments = parser.parse_args()
    warm_up_kernels()
    workdir = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        with RedisServer(workdir / "redis") as server:
            rows = asyncio.run(_run(server.url, arguments))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{'item':30} {'count':>9} {'bytes/item':>11} {'baseline':>9} {'ratio':>7}   "
          f"{'encoding':26} {'baseline encoding':18}")
    for row in rows:
        print(f"{row.item:30} {row.count:9,} {row.ours:11.1f} {row.baseline:9.1f} "
              f"{row.ours / row.baseline:6.2f}x   {row.encoding:26} {row.baseline_encoding:18}")
    print("bytes/item: growth of used_memory per item; baseline: the same data in plain keys "
          "(a string of the config JSON + 2 counters per arm; SADD of the ids; HSET unit -> arm; "
          "HSET "
          "decision -> arm; RPUSH of the sample JSON); ratio: ours / baseline")


if __name__ == "__main__":
    main()
