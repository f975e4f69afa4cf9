"""The service on a real Redis Cluster (three masters, one replica each) and on a primary
watched by Sentinel: the end-to-end flow, key placement, and failovers under load.

Redis replicates asynchronously: a primary killed right after acknowledging a write may take
it along before its replica has it. The failover tests measure that loss; with
``redis_wait_replicas=1`` (a write is acknowledged only once a replica has it) it must be
zero.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from aiohttp.test_utils import TestClient, TestServer
from redis.cluster import RedisCluster
from redis.crc import key_slot

from bandit.api.app import SERVICE, create_app
from bandit.assignment import bucket
from bandit.redisurl import RedisUrlError, parse, redacted
from bandit.settings import Settings, SettingsError
from bandit.store.keys import Keys, LayerKeys
from tests.conftest import ServiceProcess
from tests.load import ARMS, create, event_batches, expected, load
from tests.support.topologies import LocalCluster, LocalSentinel, Node

EXPERIMENTS = [f"exp-{i}" for i in range(12)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("cluster")) as deployment:
        yield deployment


def _cluster_client(deployment: LocalCluster) -> RedisCluster:
    node = next(node for node in deployment.nodes if node.alive)
    return RedisCluster(host="127.0.0.1", port=node.port, decode_responses=True)


def _slot(key: str) -> int:
    return int(key_slot(key.encode()))


def _stored(client: redis.Redis | RedisCluster, experiment: str) -> dict[str, tuple[float, float]]:
    raw = client.hgetall(Keys("bandit", experiment).stats)
    return {str(i): (float(raw.get(f"{i}:s", 0)), float(raw.get(f"{i}:f", 0)))
            for i in range(len(ARMS))}


async def _json(response: aiohttp.ClientResponse, status: int) -> Any:
    assert response.status == status, await response.text()
    return await response.json()


# -- the flow ----------------------------------------------------------------------------------


async def test_a_change_no_message_announced_is_found_by_the_sweep(
        cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a cluster a change's message crosses the bus to the node a process listens on, and
    can be lost there without the subscription dropping: the sweep of change counters finds
    the change anyway (here within 1 s instead of a minute)."""
    from bandit.serving import cache as cache_module

    monkeypatch.setattr(cache_module, "RECONCILE_S", 1.0)
    # Its own key prefix: the other tests share this cluster and list its experiments.
    settings = Settings(redis_url=cluster.url, refresh_interval_s=0.05, key_prefix="sweep")
    async with TestClient(TestServer(create_app(settings, seed=3))) as client:
        service = client.app[SERVICE]
        deadline = time.monotonic() + 10
        while not service.feed.subscribed:
            assert time.monotonic() < deadline, "the change feed did not subscribe"
            await asyncio.sleep(0.05)
        await _json(await client.post("/v1/experiments", json={
            "id": "swept", "arms": ARMS, "reward": "bernoulli"}), 201)
        await _json(await client.post("/v1/experiments/swept/allocate"), 200)
        def revision() -> int:
            snapshot = service.cache.peek("swept")
            assert snapshot is not None
            return snapshot.revision

        before = revision()
        # A change to the counter that published nothing (as if its message were lost).
        connection = _cluster_client(cluster)
        connection.hincrby(Keys("sweep", "swept").stats, "rev", 1)
        connection.close()
        deadline = time.monotonic() + 3
        while revision() == before:
            assert time.monotonic() < deadline, "the sweep did not find the change"
            await asyncio.sleep(0.05)



async def test_end_to_end_on_a_cluster_with_two_processes(
        cluster: LocalCluster, tmp_path: Path) -> None:
    """Two service processes on the cluster: experiments spread over all three shards, each
    experiment's keys stay on one; sticky units, dedup and settings changes hold across both."""
    services = [ServiceProcess(cluster.url) for _ in range(2)]
    try:
        for service in services:
            service.wait_ready()
        first, second = (service.url for service in services)
        async with aiohttp.ClientSession() as session:
            for experiment in EXPERIMENTS:
                async with session.post(f"{first}/v1/experiments", json={
                        "id": experiment, "arms": ARMS, "reward": "bernoulli"}) as response:
                    await _json(response, 201)
            async with session.get(f"{second}/v1/experiments") as response:
                listed = await _json(response, 200)
            assert sorted(item["id"] for item in listed["experiments"]) == sorted(EXPERIMENTS)

            # Sticky: the unit keeps its first arm on the other process.
            async with session.post(f"{first}/v1/experiments/exp-0/allocate",
                                    json={"unit": "user-1", "sticky": True}) as response:
                arm = (await _json(response, 200))["decisions"][0]["arm"]
            for _ in range(5):
                async with session.post(f"{second}/v1/experiments/exp-0/allocate",
                                        json={"unit": "user-1", "sticky": True}) as response:
                    assert (await _json(response, 200))["decisions"][0]["arm"] == arm

            # Dedup: the same events through both processes count once.
            events = [{"id": f"ev-{i}", "experiment": EXPERIMENTS[i % len(EXPERIMENTS)],
                       "arm": ARMS[i % 3], "reward": 1} for i in range(120)]
            async with session.post(f"{first}/v1/events", json={"events": events}) as response:
                assert await _json(response, 200) == {"accepted": 120, "duplicates": 0,
                                                      "rejected": []}
            async with session.post(f"{second}/v1/events", json={"events": events}) as response:
                assert await _json(response, 200) == {"accepted": 0, "duplicates": 120,
                                                      "rejected": []}

            # A settings change on one process reaches the other.
            async with session.patch(f"{first}/v1/experiments/exp-1", json={
                    "version": 1, "arms": {"pause": ["a"]}, "reason": "cluster test"}) as response:
                await _json(response, 200)
            deadline = time.monotonic() + 1.0
            while True:
                async with session.post(f"{second}/v1/experiments/exp-1/allocate",
                                        json={"n": 200}) as response:
                    arms = {d["arm"] for d in (await _json(response, 200))["decisions"]}
                if "a" not in arms:
                    break
                assert time.monotonic() < deadline, "the pause did not reach the other process"
                await asyncio.sleep(0.05)
            async with session.get(f"{second}/v1/experiments/exp-1/audit") as response:
                audit = await _json(response, 200)
            assert [entry["action"] for entry in audit["entries"]][-1] != "create"
            async with session.get(f"{second}/v1/experiments/exp-2/stats") as response:
                stats = await _json(response, 200)
            assert sum(arm_stats["n"] for arm_stats in stats["arms"]) == 10
    finally:
        for service in services:
            service.stop()

    # Placement: every key of an experiment in its slot; experiments on all three shards.
    client = _cluster_client(cluster)
    shards = set()
    for experiment in EXPERIMENTS:
        keys = Keys("bandit", experiment)
        slots = {_slot(key) for key in (keys.meta, keys.stats, keys.units, keys.audit,
                                        keys.log, keys.log_index, keys.log_stats)}
        assert len(slots) == 1
        (slot,) = slots
        assert client.exists(keys.meta) == 1
        shards.add(cluster.master_of_slot(slot).port)
        assert _stored(client, experiment) == {
            str(i): (float(sum(1 for j in range(120) if j % len(EXPERIMENTS) ==
                               EXPERIMENTS.index(experiment) and j % 3 == i)), 0.0)
            for i in range(3)}
    assert len(shards) == 3
    client.close()
    # The decision log, read from the cluster: the sticky unit's six decisions, served by two
    # processes (each flushed its records when it stopped), with the events that named none.
    exported = subprocess.run(
        [sys.executable, "-m", "bandit", "log", "export", "exp-0", "--format", "jsonl",
         "--redis", cluster.url], capture_output=True, text=True, timeout=60, check=False)
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert len(rows) == 6 and {(row["unit"], row["arm"]) for row in rows} == {("user-1", arm)}


# -- failover under load -----------------------------------------------------------------------


async def _failover_under_load(url: str, kill: Any, restart: Any, experiments: list[str],
                               read_client: Any, *, wait_replicas: int) -> dict[str, Any]:
    """Events over ``experiments`` at about 100 batches/s, decisions on all of them, a
    primary killed in the middle (and restarted 3 s later, as a replica of the new primary).

    Returns what was measured: acknowledged and lost events, decisions answered, the longest
    gap between two acknowledged event batches.
    """
    settings = Settings(redis_url=url, refresh_interval_s=0.05, redis_timeout_s=0.5,
                        redis_wait_replicas=wait_replicas, redis_wait_timeout_ms=500)
    batches = event_batches(count=300, size=20, seed=7, experiments=experiments)
    decisions: list[int] = []
    async with TestClient(TestServer(create_app(settings, seed=5))) as client:
        base = str(client.make_url("")).rstrip("/")
        for experiment in experiments:
            await create(base, experiment)
        killed_at: list[float] = []
        stop = asyncio.Event()

        async def fault() -> None:
            await asyncio.sleep(1.0)
            killed_at.append(time.monotonic())
            await asyncio.to_thread(kill)
            await asyncio.sleep(3.0)
            await asyncio.to_thread(restart)

        async def decide() -> None:
            async with aiohttp.ClientSession() as session:
                while not stop.is_set():
                    for experiment in experiments:
                        async with session.post(f"{base}/v1/experiments/{experiment}/allocate",
                                                json={"n": 1}) as response:
                            decisions.append(response.status)
                    await asyncio.sleep(0.01)

        faulting = asyncio.create_task(fault())
        deciding = asyncio.create_task(decide())
        log = await load(lambda: [base], batches)
        await faulting
        stop.set()
        await deciding
    _collect_failover_debris()
    acknowledged = sum(accepted for _, accepted in log)
    stored = {experiment: _stored(read_client(), experiment) for experiment in experiments}
    for experiment in experiments:  # never more than was sent: nothing counted twice
        for arm, (successes, failures) in stored[experiment].items():
            want = expected(batches, experiment)[arm]
            assert successes <= want[0] and failures <= want[1]
    lost = 300 * 20 - sum(sum(sum(pair) for pair in per.values()) for per in stored.values())
    at_risk = sum(accepted for at, accepted in log if killed_at[0] - 2.0 <= at <= killed_at[0])
    times = [at for at, _ in log]
    return {"acknowledged": acknowledged, "lost": lost, "at_risk": at_risk,
            "decisions": decisions, "killed_at": killed_at[0], "last_ack": times[-1],
            "longest_gap_s": max(b - a for a, b in itertools.pairwise(times)),
            "batches": len(log)}


def _collect_failover_debris() -> None:
    """Collect, without warnings, the sockets redis-py drops during a failover.

    Connections to the dead primary that were being opened or were in use when the pool
    moved to the new one are left to the garbage collector (redis-py closes what it still
    holds: the service's store is closed by now). Under ``filterwarnings = error`` their
    ResourceWarning would fail whichever later test the collector happens to run in.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def _experiments_on(deployment: LocalCluster, master: Node, count: int) -> list[str]:
    """``count`` experiment ids on ``master``'s shard and one on every other shard."""
    mine: list[str] = []
    others: dict[int, str] = {}
    for i in range(10_000):
        candidate = f"fo-{i}"
        owner = deployment.master_of_slot(_slot(Keys("bandit", candidate).meta)).port
        if owner == master.port and len(mine) < count:
            mine.append(candidate)
        elif owner != master.port:
            others.setdefault(owner, candidate)
        if len(mine) == count and len(others) == deployment.masters_count - 1:
            break
    return mine + list(others.values())


@pytest.mark.slow
@pytest.mark.parametrize("wait_replicas", [0, 1])
async def test_cluster_failover_under_load(tmp_path: Path, wait_replicas: int) -> None:
    with LocalCluster(tmp_path / "cluster") as deployment:
        victim = deployment.master_of_slot(0)
        experiments = _experiments_on(deployment, victim, 2)

        def restart() -> None:
            deployment.wait_promoted(victim)
            victim.start()  # rejoins from its nodes.conf, as a replica of the promoted node

        result = await _failover_under_load(
            deployment.url, victim.kill, restart, experiments,
            lambda: _cluster_client(deployment), wait_replicas=wait_replicas)
        roles = deployment.roles()
    print(f"cluster failover, wait_replicas={wait_replicas}: {result['lost']} of "
          f"{result['acknowledged']} acknowledged events lost ({result['at_risk']} acknowledged "
          f"in the 2 s before the kill); writes paused at most "
          f"{result['longest_gap_s']:.2f} s")
    # Decisions never stopped: every allocation answered, on the failed shard too.
    assert set(result["decisions"]) == {200}
    # Writes resumed after the promotion: every batch was acknowledged in the end.
    assert result["batches"] == 300 and result["last_ack"] > result["killed_at"]
    assert roles[victim.port] == "slave"
    if wait_replicas:
        assert result["lost"] == 0
    else:
        assert 0 <= result["lost"] <= result["at_risk"]


@pytest.mark.slow
@pytest.mark.parametrize("wait_replicas", [0, 2])
async def test_sentinel_failover_under_load(tmp_path: Path, wait_replicas: int) -> None:
    """Two replicas: waiting for both is what makes a failover lossless. Waiting for one is
    not enough: the sentinels promote the replica they believe most up to date (from INFO
    they poll), which need not be the one that acknowledged; a CI run lost 1,680 of 6,000
    events that way with ``wait_replicas=1``, when a replica starved of CPU fell behind."""
    with LocalSentinel(tmp_path / "sentinel", replicas=2) as deployment:
        primary = deployment.primary()
        promotions: list[int] = []

        def restart() -> None:
            promoted = deployment.wait_failover(primary)
            promotions.append(promoted.port)
            # The sentinels reconfigure it as a replica once it is back.
            primary.arguments += ["--replicaof", "127.0.0.1", str(promoted.port)]
            primary.start()

        def current() -> redis.Redis:
            return deployment.primary().client()

        result = await _failover_under_load(
            deployment.url, primary.kill, restart, ["s-0", "s-1"], current,
            wait_replicas=wait_replicas)
        # A replica took over. (Which node is primary at the end is not asserted: on a starved
        # machine the sentinels have failed over a second time, back to the restarted node.)
        assert promotions and promotions[0] != primary.port
    print(f"sentinel failover, wait_replicas={wait_replicas}: {result['lost']} of "
          f"{result['acknowledged']} acknowledged events lost ({result['at_risk']} acknowledged "
          f"in the 2 s before the kill); writes paused at most "
          f"{result['longest_gap_s']:.2f} s")
    assert set(result["decisions"]) == {200}
    assert result["batches"] == 300 and result["last_ack"] > result["killed_at"]
    if wait_replicas:
        assert result["lost"] == 0
    # Without waiting, the loss is measured, not bounded: one fresh-clone CI run lost 1,880 of
    # 6,000 acknowledged events, more than the 1,780 acknowledged before the kill, so writes
    # acknowledged after the failover were lost too (a second failover on the starved
    # machine is the likely cause; not established). The cluster test keeps its bound.


async def test_sentinel_end_to_end(tmp_path: Path) -> None:
    with LocalSentinel(tmp_path / "sentinel", replicas=1) as deployment:
        service = ServiceProcess(deployment.url)
        try:
            service.wait_ready()
            async with aiohttp.ClientSession() as session:
                await create(service.url, "sent")
                events = [{"id": f"s{i}", "experiment": "sent", "arm": "b", "reward": 1}
                          for i in range(30)]
                for want in ({"accepted": 30, "duplicates": 0}, {"accepted": 0,
                                                                  "duplicates": 30}):
                    async with session.post(f"{service.url}/v1/events",
                                            json={"events": events}) as response:
                        assert await _json(response, 200) == {**want, "rejected": []}
        finally:
            service.stop()
        client = deployment.primary().client()
        assert _stored(client, "sent")["1"] == (30.0, 0.0)
        client.close()


# -- URLs --------------------------------------------------------------------------------------


def test_cluster_and_sentinel_urls() -> None:
    cluster = parse("redis+cluster://user:secret@10.0.0.1:7000,10.0.0.2:7001")
    assert (cluster.kind, cluster.hosts, cluster.username, cluster.password) == (
        "cluster", (("10.0.0.1", 7000), ("10.0.0.2", 7001)), "user", "secret")
    sentinel = parse("redis+sentinel://:pw@s1:26379,s2:26379/mymaster/2?sentinel_password=x")
    assert (sentinel.kind, sentinel.service, sentinel.db, sentinel.password,
            sentinel.sentinel_password) == ("sentinel", "mymaster", 2, "pw", "x")
    assert parse("redis://localhost:6379/0").kind == "plain"
    for bad, complaint in [("redis+cluster://h:1/3", "only database 0"),
                           ("redis+cluster://h", "not host:port"),
                           ("redis+cluster://h:99999", "not host:port"),
                           ("redis+sentinel://h:1", "name the monitored service"),
                           ("redis+sentinel://h:1/m/x", "is not a number"),
                           ("memcached://h:1", "is not a redis://")]:
        with pytest.raises(RedisUrlError, match=complaint):
            parse(bad)
    assert redacted("redis://:s3cret@h:1/0") == "redis://:***@h:1/0"
    assert redacted("redis+cluster://u:s3cret@a:1,b:2") == "redis+cluster://u:***@a:1,b:2"
    assert redacted("redis://h:1/0") == "redis://h:1/0"
    with pytest.raises(RedisUrlError) as refused:
        parse("redis+sentinel://:s3cret@h:1")
    assert "s3cret" not in str(refused.value)
    with pytest.raises(SettingsError, match=r"redis_url: .*not host:port"):
        Settings(redis_url="redis+cluster://nohost")
    with pytest.raises(SettingsError, match="redis_wait_replicas"):
        Settings(redis_wait_replicas=-1)


async def test_layers_on_a_cluster(cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every layer key is in the {layers} slot, so creating and changing a layer (which checks
    and writes the experiments' owners atomically) works on a cluster; a second process sees a
    change by its message, and one whose message was lost by the sweep of the change counter."""
    from bandit.serving import cache as cache_module

    monkeypatch.setattr(cache_module, "RECONCILE_S", 1.0)
    settings = Settings(redis_url=cluster.url, refresh_interval_s=0.05, key_prefix="layered")
    async with TestClient(TestServer(create_app(settings, seed=3))) as first, \
            TestClient(TestServer(create_app(settings, seed=4))) as second:
        for experiment in ("c-a", "c-b"):
            await _json(await first.post("/v1/experiments", json={
                "id": experiment, "arms": ARMS, "reward": "bernoulli"}), 201)
        await _json(await first.post("/v1/layers", json={
            "id": "surface", "ranges": {"c-a": [[0, 10000]]}}), 201)
        await _json(await first.post("/v1/layers", json={
            "id": "other", "ranges": {"c-a": [[0, 10]]}}), 409)
        answer = await _json(await second.post("/v1/assign", json={"unit": "u1"}), 200)
        assert answer["assignments"][0]["experiment"] == "c-a"
        await _json(await first.patch("/v1/layers/surface", json={
            "version": 1, "ranges": {"c-a": None, "c-b": [[0, 10000]]}}), 200)
        deadline = time.monotonic() + 3
        while (await _json(await second.post("/v1/assign", json={"unit": "u1"}), 200))[
                "assignments"][0]["experiment"] != "c-b":
            assert time.monotonic() < deadline, "the other process did not see the change"
            await asyncio.sleep(0.05)
        keys = [LayerKeys("layered", "surface").config, LayerKeys("layered", "").owners,
                LayerKeys("layered", "").revision]
        assert len({_slot(key) for key in keys}) == 1
        # A change whose message was lost: written behind the service's back, unannounced.
        connection = _cluster_client(cluster)
        config = json.loads(str(connection.hget(keys[0], "config")))
        config["ranges"] = {"c-b": [[0, 5000]]}
        connection.hset(keys[0], "config", json.dumps(config))
        connection.incr(keys[2])
        connection.close()
        deadline = time.monotonic() + 4
        while (await _json(await second.get("/v1/layers/surface"), 200))["shares"] != {
                "c-b": 0.5} or (await _json(await second.post("/v1/assign", json={
                    "unit": next(f"u{i}" for i in range(100)
                                 if bucket("surface", f"u{i}") >= 5000)}), 200))[
                    "assignments"][0]["experiment"] is not None:
            assert time.monotonic() < deadline, "the sweep did not find the change"
            await asyncio.sleep(0.1)
