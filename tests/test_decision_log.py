"""The decision log: every decision served and every reward accepted, group-committed to Redis,
trimmed to its retention, exported joined (``bandit log export``)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pyarrow.parquet as pq
import pytest
import redis
from aiohttp.test_utils import TestClient, TestServer

from bandit.api.app import SERVICE, create_app
from bandit.ops.log_export import COLUMNS, export, rows_of
from bandit.settings import Settings
from bandit.store.redis_store import RedisStore
from tests.support.redis import RedisServer

Client = TestClient[Any, Any]

MODEL = {"type": "linear", "features": [
    {"name": "region", "type": "categorical", "values": ["eu", "us"]},
    {"name": "recency", "type": "numeric", "scale": [0, 30], "default": 0},
]}


async def _create(client: Client, experiment_id: str, **extra: Any) -> None:
    body = {"id": experiment_id, "arms": ["a", "b", "c"], "reward": "bernoulli", **extra}
    response = await client.post("/v1/experiments", json=body)
    assert response.status == 201, await response.text()


async def _allocate(client: Client, experiment_id: str, **body: Any) -> list[dict[str, Any]]:
    response = await client.post(f"/v1/experiments/{experiment_id}/allocate", json=body)
    assert response.status == 200, await response.text()
    return list((await response.json())["decisions"])


async def _events(client: Client, events: list[dict[str, Any]]) -> dict[str, Any]:
    response = await client.post("/v1/events", json={"events": events})
    assert response.status == 200, await response.text()
    return dict(await response.json())


async def _flushed_export(client: Client, settings: Settings,
                          experiment_id: str) -> list[dict[str, Any]]:
    await client.app[SERVICE].decisions.log.flush()
    store = RedisStore.from_settings(settings)
    try:
        return list(rows_of(await export(store, experiment_id, 0, time.time() + 1)))
    finally:
        await store.close()


async def test_every_decision_appears_once_and_every_acknowledged_reward_is_joined(
        client: Client, settings: Settings) -> None:
    await _create(client, "logged")
    served: dict[str, dict[str, Any]] = {}
    for _ in range(60):  # past the drawn-ahead threshold: runs of pre-signed decisions too
        for decision in await _allocate(client, "logged"):
            served[decision["decision_id"]] = decision
    for decision in await _allocate(client, "logged", n=40):
        served[decision["decision_id"]] = decision
    for decision in await _allocate(client, "logged", n=5, k=2):
        served[decision["decision_id"]] = decision
    for unit in ("u1", "u2", "u1"):
        for decision in await _allocate(client, "logged", unit=unit, sticky=True):
            served[decision["decision_id"]] = decision
    for decision in await _allocate(client, "logged", provisional=True):
        served[decision["decision_id"]] = decision
    # Rewards for every third decision (a slate's: its second arm), and one sent twice.
    events = []
    for i, (decision_id, decision) in enumerate(served.items()):
        if i % 3 == 0:
            arm = decision["arms"][1] if "arms" in decision else decision["arm"]
            events.append({"id": f"e{i}", "experiment": "logged", "arm": arm,
                           "reward": 1, "decision_id": decision_id})
    answer = await _events(client, [*events, events[0]])
    assert answer["accepted"] == len(events) and answer["duplicates"] == 1

    rows = await _flushed_export(client, settings, "logged")
    per_decision = Counter(row["decision_id"] for row in rows)
    assert set(per_decision) == set(served)
    for decision_id, decision in served.items():
        expected_rows = len(decision["arms"]) if "arms" in decision else 1
        assert per_decision[decision_id] == expected_rows, decision
    rewarded = {(e["decision_id"], e["arm"]) for e in events}
    for row in rows:
        decision = served[row["decision_id"]]
        if "arms" in decision:
            assert row["arm"] == decision["arms"][row["position"]]
            assert row["propensity"] == decision["position_propensities"][row["position"]]
        else:
            assert (row["arm"], row["position"]) == (decision["arm"], 0)
            assert row["propensity"] == decision["propensity"]
        assert row["unit"] == (None if "sticky" not in decision else row["unit"])
        assert row["reward"] == (1.0 if (row["decision_id"], row["arm"]) in rewarded
                                 else None), (row, decision)
        assert row["experiment"] == "logged" and row["n_actions"] == 3
        assert row["version"] == 1 and row["context"] is None and row["features"] is None
    assert sum(row["reward"] is not None for row in rows) == len(events)
    assert {row["unit"] for row in rows} == {None, "u1", "u2"}


async def test_a_contextual_decision_carries_its_context_and_features(
        client: Client, settings: Settings) -> None:
    await _create(client, "ctx-logged", model=MODEL)
    contexts = [{"region": "eu", "recency": 3}, {"region": "us"}, {"region": "mars"}]
    served = []
    for context in contexts:
        served += [(d, context) for d in await _allocate(client, "ctx-logged", context=context)]
    decision, context = served[0]
    await _events(client, [{"id": "c1", "experiment": "ctx-logged", "arm": decision["arm"],
                            "reward": 1, "decision_id": decision["decision_id"],
                            "context": context}])
    rows = {row["decision_id"]: row for row in
            await _flushed_export(client, settings, "ctx-logged")}
    assert len(rows) == 3
    snapshot = client.app[SERVICE].cache.peek("ctx-logged")
    assert snapshot is not None and snapshot.experiment.model is not None
    for decision, context in served:
        row = rows[decision["decision_id"]]
        assert json.loads(row["context"]) == context
        assert row["features"] == snapshot.experiment.model.encode(context).tolist()
        assert row["propensity"] == decision["propensity"]
    assert rows[served[0][0]["decision_id"]]["reward"] == 1.0


async def test_a_reward_is_joined_by_when_it_arrived_within_the_attribution_window(
        client: Client, settings: Settings) -> None:
    """Attribution is by when the service applied a reward, not by the time the client
    wrote in it: a prompt reward stamped a minute ahead is joined, and one from 1970 too
    (clocks disagree), while a reward arriving after the window is not."""
    await _create(client, "windowed", attribution_window_s=1)
    prompt, early, late = await _allocate(client, "windowed", n=3)
    stamped = [{"id": "ahead", "experiment": "windowed", "arm": prompt["arm"], "reward": 1,
                "ts": time.time() + 61, "decision_id": prompt["decision_id"]},
               {"id": "old", "experiment": "windowed", "arm": early["arm"], "reward": 1,
                "ts": 0, "decision_id": early["decision_id"]}]
    assert (await _events(client, stamped))["accepted"] == 2
    await asyncio.sleep(1.2)
    answer = await _events(client, [{"id": "late", "experiment": "windowed",
                                     "arm": late["arm"], "reward": 1,
                                     "decision_id": late["decision_id"]}])
    assert answer["accepted"] == 1
    rows = {row["decision_id"]: row
            for row in await _flushed_export(client, settings, "windowed")}
    assert rows[prompt["decision_id"]]["reward"] == 1.0
    assert rows[prompt["decision_id"]]["reward_timestamp"] == pytest.approx(
        stamped[0]["ts"], abs=0.001)  # the event's own time, as sent
    assert rows[early["decision_id"]]["reward"] == 1.0
    assert rows[late["decision_id"]]["reward"] is None


async def test_a_reward_stamped_far_in_the_future_does_not_break_the_export(
        client: Client, settings: Settings) -> None:
    """A reward with ts 1e18 was logged as an overflowed integer, and the export failed on
    every later run."""
    await _create(client, "future")
    (decision,) = await _allocate(client, "future")
    assert (await _events(client, [{"id": "far", "experiment": "future", "arm": decision["arm"],
                                    "reward": 1, "ts": 1e18,
                                    "decision_id": decision["decision_id"]}]))["accepted"] == 1
    (row,) = await _flushed_export(client, settings, "future")
    assert row["reward"] == 1.0 and row["reward_timestamp"] == pytest.approx(1e18)


async def test_retention_trims_whole_flushes_and_counts_what_it_trimmed(
        redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, refresh_interval_s=0.05, log_max_records=100,
                        log_flush_records=30, log_buffer_records=1000)
    async with TestClient(TestServer(create_app(settings, seed=7))) as client:
        await _create(client, "trimmed")
        log = client.app[SERVICE].decisions.log
        for _ in range(10):
            await _allocate(client, "trimmed", n=30)
            await log.flush()
        response = await client.get("/v1/experiments/trimmed/stats")
        stats = (await response.json())["log"]
    # 300 records in entries of 30: the oldest entries go while more than 100 are kept.
    assert stats["records"] == 90 and stats["trimmed"] == 210 and stats["dropped"] == 0
    assert stats["max_records"] == 100
    store = redis.Redis.from_url(redis_url, decode_responses=True)
    assert store.xlen("bandit:{trimmed}:log") == 3
    assert store.llen("bandit:{trimmed}:log:index") == 3


async def test_a_full_buffer_drops_the_oldest_and_says_so(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, refresh_interval_s=0.05, log_flush_records=10,
                        log_buffer_records=50, log_flush_interval_s=60)
    async with TestClient(TestServer(create_app(settings, seed=7))) as client:
        await _create(client, "shed")
        log = client.app[SERVICE].decisions.log
        log._wake.set = lambda: None  # type: ignore[method-assign]  # no early flush
        kept = []
        for _ in range(8):
            kept += await _allocate(client, "shed", n=10)
        assert log.buffered == 50 and log.dropped_total == 30
        await log.flush()
        response = await client.get("/v1/experiments/shed/stats")
        assert (await response.json())["log"]["dropped"] == 30
        metrics = await (await client.get("/metrics")).text()
        assert "bandit_decision_log_dropped_total 30.0" in metrics
        store = RedisStore.from_settings(settings)
        try:
            rows = list(rows_of(await export(store, "shed", 0, time.time() + 1)))
        finally:
            await store.close()
    # The newest 50 were kept, in order.
    assert [row["decision_id"] for row in rows] == [d["decision_id"] for d in kept[30:]]


async def test_a_request_larger_than_the_buffer_is_logged_whole(redis_url: str) -> None:
    """With a buffer of 20 records, a batch of 21 decisions was dropped as it arrived, Redis
    healthy."""
    settings = Settings(redis_url=redis_url, log_flush_records=10, log_buffer_records=20)
    async with TestClient(TestServer(create_app(settings, seed=7))) as client:
        await _create(client, "wide")
        decisions = await _allocate(client, "wide", n=40)
        log = client.app[SERVICE].decisions.log
        assert log.dropped_total == 0
        await log.flush()
        rows = await _flushed_export(client, settings, "wide")
    assert [row["decision_id"] for row in rows] == [d["decision_id"] for d in decisions]


async def test_a_large_entry_never_empties_the_log(redis_url: str) -> None:
    """With room for 50 records, one batch of 110 rewards trimmed every record, its own
    included."""
    settings = Settings(redis_url=redis_url, log_max_records=50, log_max_age_s=3600)
    async with TestClient(TestServer(create_app(settings, seed=7))) as client:
        await _create(client, "big-entry")
        decisions = await _allocate(client, "big-entry", n=110)
        await client.app[SERVICE].decisions.log.flush()
        answer = await _events(client, [
            {"id": f"b{i}", "experiment": "big-entry", "arm": d["arm"], "reward": 1,
             "decision_id": d["decision_id"]} for i, d in enumerate(decisions)])
        assert answer["accepted"] == 110
        stats = (await (await client.get("/v1/experiments/big-entry/stats")).json())["log"]
    assert stats["records"] == 110 and stats["trimmed"] == 110  # the rewards' entry stays
    # An idle experiment's log expires once all of it is past the age limit.
    store = redis.Redis.from_url(redis_url)
    for key in ("log", "log:index", "log:stats"):
        assert 3600_000 < store.pttl(f"bandit:{{big-entry}}:{key}") <= 3601_000


async def test_a_contextual_request_stores_its_context_once_and_only_the_model_s_features(
        client: Client, settings: Settings, redis_url: str) -> None:
    """A 50 kB context key the model ignores, in a batch of 1,000, grew Redis by 50 MB."""
    await _create(client, "ctx-padded", model=MODEL)
    context = {"region": "us", "recency": 7, "pad": "x" * 50_000}
    decisions = await _allocate(client, "ctx-padded", n=50, context=context)
    rows = await _flushed_export(client, settings, "ctx-padded")
    assert [row["decision_id"] for row in rows] == [d["decision_id"] for d in decisions]
    assert {row["context"] for row in rows} == {'{"region":"us","recency":7}'}
    records = redis.Redis.from_url(redis_url, decode_responses=True).xrange(
        "bandit:{ctx-padded}:log")
    assert sum(len(str(fields)) for _, fields in records or []) < 10_000


async def test_a_backlog_is_flushed_in_entries_of_bounded_size(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, log_flush_records=100, log_flush_interval_s=60)
    async with TestClient(TestServer(create_app(settings, seed=7))) as client:
        await _create(client, "backlog")
        log = client.app[SERVICE].decisions.log
        log._wake.set = lambda: None  # type: ignore[method-assign]  # no early flush
        for _ in range(10):
            await _allocate(client, "backlog", n=30)
        await log.flush()
    index = redis.Redis.from_url(redis_url, decode_responses=True).lrange(
        "bandit:{backlog}:log:index", 0, -1)
    # A request's 30 records stay together: 90, 90, 90 and the last 30.
    assert [int(str(entry).partition("|")[2]) for entry in index] == [90, 90, 90, 30]


async def test_logging_off_logs_nothing(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, decision_log=False)
    async with TestClient(TestServer(create_app(settings, seed=7))) as client:
        await _create(client, "unlogged")
        (decision,) = await _allocate(client, "unlogged")
        await _events(client, [{"id": "x", "experiment": "unlogged", "arm": decision["arm"],
                                "reward": 1, "decision_id": decision["decision_id"]}])
        await client.app[SERVICE].decisions.log.flush()
    assert redis.Redis.from_url(redis_url).exists("bandit:{unlogged}:log") == 0


def _cli(*arguments: str, redis_url: str | None = None) -> subprocess.CompletedProcess[bytes]:
    """``bandit log export ARGUMENTS``, reading the store (``redis_url``) or the service."""
    store = [] if redis_url is None else ["--redis", redis_url]
    env = {name: value for name, value in os.environ.items()
           if name not in ("BANDIT_REDIS_URL", "BANDIT_URL")}
    return subprocess.run([sys.executable, "-m", "bandit", "log", "export", *arguments, *store],
                          capture_output=True, timeout=60, check=False, env=env)


async def test_the_cli_writes_parquet_and_jsonl(client: Client, settings: Settings,
                                                tmp_path: Path, redis_url: str) -> None:
    await _create(client, "cli")
    decisions = await _allocate(client, "cli", n=20)
    await _events(client, [{"id": "r", "experiment": "cli", "arm": decisions[0]["arm"],
                            "reward": 1, "decision_id": decisions[0]["decision_id"]}])
    await client.app[SERVICE].decisions.log.flush()
    out = tmp_path / "cli.parquet"
    result = await asyncio.to_thread(_cli, "cli", "--format", "parquet", "--out", str(out),
                                     redis_url=redis_url)
    assert result.returncode == 0, result.stderr
    assert b"20 rows of 20 decisions, 1 of them with a reward" in result.stderr
    table = pq.read_table(out)
    assert table.column_names == list(COLUMNS) and table.num_rows == 20
    metadata = json.loads(table.schema.metadata[b"bandit"])
    assert metadata["arms"] == ["a", "b", "c"] and metadata["reward"] == "bernoulli"
    assert table.column("reward").null_count == 19
    result = await asyncio.to_thread(_cli, "cli", "--format", "jsonl", redis_url=redis_url)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["decision_id"] for line in lines] == [d["decision_id"] for d in decisions]
    assert lines == table.to_pylist()
    # Through the service (GET /v1/experiments/{id}/log), as without --redis: the same rows.
    url = str(client.make_url("")).rstrip("/")
    result = await asyncio.to_thread(_cli, "cli", "--format", "jsonl", "--url", url)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == lines


async def test_the_log_route_refuses_what_it_cannot_answer(client: Client) -> None:
    await _create(client, "routed")
    for query, status, message in (
            ("", 200, None), ("?since=1&until=2", 200, None),
            ("?since=yesterday", 422, "since: 'yesterday' is not a number"),
            ("?since=5&until=4", 422, "until: 4 is before since (5)")):
        response = await client.get(f"/v1/experiments/routed/log{query}")
        assert response.status == status, await response.text()
        if message is not None:
            assert message in (await response.json())["error"]["message"]
        else:
            first = json.loads((await response.text()).splitlines()[0])
            assert first["experiment"]["id"] == "routed"  # then no entries: nothing served
    response = await client.get("/v1/experiments/nope/log")
    assert response.status == 404


@pytest.mark.parametrize(("arguments", "message"), [
    (["nope", "--format", "jsonl"], "experiment 'nope' does not exist"),
    (["cli", "--format", "jsonl", "--since", "yesterday"], "--since: 'yesterday' is neither"),
    (["cli", "--format", "jsonl", "--since", "2026-12-06T10:00:00", "--until",
      "2026-12-06T09:00:00"], "is after --until (2026-12-06T09:00:00)"),
])
async def test_cli_errors_say_what_is_wrong(client: Client, redis_url: str,
                                            arguments: list[str], message: str) -> None:
    await _create(client, "cli")
    result = await asyncio.to_thread(_cli, *arguments, redis_url=redis_url)
    assert result.returncode == 2
    assert message in result.stderr.decode(), result.stderr


# -- faults: a killed process, a paused Redis -------------------------------------------------


#: What a killed process may lose: the records of its buffer (at most one flush interval, 50
#: ms) and of a flush under way. Allowed here: 0.3 s, for event-loop delays on a loaded 2-core
#: machine (measured: see docs/decision-log.md).
KILL_WINDOW_S = 0.3


@pytest.mark.slow
async def test_a_killed_process_loses_at_most_its_flush_window(
        service_process: Any, redis_url: str) -> None:
    service = service_process()
    async with aiohttp.ClientSession() as session:
        created = await session.post(f"{service.url}/v1/experiments", json={
            "id": "killed", "arms": ["a", "b", "c"], "reward": "bernoulli"})
        assert created.status == 201
        received: dict[str, float] = {}
        stop = asyncio.Event()

        async def client() -> None:
            while not stop.is_set():
                try:
                    async with session.post(f"{service.url}/v1/experiments/killed/allocate",
                                            json={"n": 3}) as response:
                        body = await response.json()
                except aiohttp.ClientError:
                    return
                at = time.time()
                for decision in body["decisions"]:
                    received[decision["decision_id"]] = at

        clients = [asyncio.create_task(client()) for _ in range(4)]
        await asyncio.sleep(2.0)
        service.process.send_signal(signal.SIGKILL)  # no shutdown, no last flush
        killed_at = time.time()
        stop.set()
        await asyncio.gather(*clients)
    service.process.wait()
    store = RedisStore.from_url(redis_url, "bandit", timeout_s=5, max_connections=4)
    try:
        logged = {row["decision_id"] for row in
                  rows_of(await export(store, "killed", 0, time.time() + 1))}
    finally:
        await store.close()
    assert logged <= set(received)
    lost = [killed_at - at for decision_id, at in received.items() if decision_id not in logged]
    assert len(received) > 1000  # the process was busy
    assert max(lost, default=0.0) <= KILL_WINDOW_S, (len(lost), max(lost))
    print(f"killed: {len(received)} decisions served, {len(lost)} lost, the oldest "
          f"{max(lost, default=0.0) * 1000:.0f} ms before the kill")


@pytest.mark.slow
async def test_a_paused_redis_sheds_the_oldest_records_and_decisions_keep_flowing(
        tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    assert server.process is not None
    settings = Settings(redis_url=server.url, refresh_interval_s=0.05, redis_timeout_s=0.5,
                        redis_pool_timeout_s=0.2, log_buffer_records=2000)
    try:
        async with TestClient(TestServer(create_app(settings, seed=3))) as client:
            await _create(client, "paused")
            log = client.app[SERVICE].decisions.log
            before = [d["decision_id"] for d in await _allocate(client, "paused", n=500)]
            acknowledged = await _events(client, [
                {"id": "before", "experiment": "paused", "arm": "a", "reward": 1,
                 "decision_id": before[0]}])
            assert acknowledged["accepted"] == 1
            await log.flush()
            server.process.send_signal(signal.SIGSTOP)
            during: list[str] = []
            refused = asyncio.gather(*(client.post("/v1/events", json={"events": [
                {"id": f"during{i}", "experiment": "paused", "arm": "a", "reward": 1}]})
                for i in range(3)))
            started = time.monotonic()
            while time.monotonic() - started < 10.0:  # 10 s of a Redis that does not answer
                begun = time.monotonic()
                decided = await _allocate(client, "paused", n=50)
                assert time.monotonic() - begun < 0.25  # never waits for the log
                during += [d["decision_id"] for d in decided]
                await asyncio.sleep(0.02)
            assert {response.status for response in await refused} == {503}  # not acknowledged
            # Everything served is waiting, in a flush under way, or dropped and counted.
            assert log.buffered + log.dropped_total == len(during)
            assert log.buffered <= 2 * 2000  # the buffer, and a flush under way
            server.process.send_signal(signal.SIGCONT)
            for _ in range(100):
                if log.buffered == 0:
                    break
                await asyncio.sleep(0.1)
            assert log.buffered == 0
            stats = await (await client.get("/v1/experiments/paused/stats")).json()
        store = RedisStore.from_settings(settings)
        try:
            rows = list(rows_of(await export(store, "paused", 0, time.time() + 1)))
        finally:
            await store.close()
    finally:
        server.process.send_signal(signal.SIGCONT)
        server.stop()
    logged = [row["decision_id"] for row in rows]
    assert len(logged) == len(set(logged))  # each decision once
    assert set(before) <= set(logged) <= set(before + during)
    # The oldest records were shed: the newest 2,000 (the buffer's bound) are all logged, and
    # whatever is missing was counted. (More can be logged than was not dropped: a flush
    # that timed out can still reach Redis, which runs the commands waiting on its socket
    # when it resumes.)
    assert set(during[-2000:]) <= set(logged)
    assert stats["log"]["dropped"] == log.dropped_total > 0
    assert len(set(during) - set(logged)) <= log.dropped_total
    assert [row["reward"] for row in rows if row["decision_id"] == before[0]] == [1.0]


# -- the loop: serve, log, export, evaluate ---------------------------------------------------


#: True click rates of the arms served below.
TRUE_RATES = {"a": 0.04, "b": 0.05, "c": 0.08}


@pytest.mark.slow
async def test_serve_log_export_evaluate(client: Client, tmp_path: Path) -> None:
    """12,000 decisions served by the service as it learns, rewarded from known click rates,
    exported through the service and evaluated: each fixed arm's estimate, and the uniform
    policy's, is within 4 standard errors of its true value (a normal deviation that large has
    probability 6e-5), and the logging policy's own settings reproduce its on-policy mean."""
    await _create(client, "loop", exploration={"min_share": 0.1})
    rng = np.random.default_rng(2024)  # not the service's seed: its draws would correlate
    for batch in range(60):
        decisions = await _allocate(client, "loop", n=200)
        answer = await _events(client, [
            {"id": f"{batch}-{i}", "experiment": "loop", "arm": d["arm"],
             "decision_id": d["decision_id"], "reward": int(rng.random() < TRUE_RATES[d["arm"]])}
            for i, d in enumerate(decisions)])
        assert answer["accepted"] == 200
        await asyncio.sleep(0.06)  # the cache learns between batches
    await client.app[SERVICE].decisions.log.flush()
    out = tmp_path / "loop.parquet"
    url = str(client.make_url("")).rstrip("/")
    exported = await asyncio.to_thread(_cli, "loop", "--format", "parquet", "--out", str(out),
                                       "--url", url)
    assert exported.returncode == 0, exported.stderr
    evaluated = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "bandit", "simulate", "replay", "--log", str(out), "--json",
        *(f"--target={t}" for t in ("fixed:a", "fixed:b", "fixed:c", "uniform", "thompson"))],
        capture_output=True, text=True, timeout=300, check=False)
    assert evaluated.returncode == 0, evaluated.stderr
    targets = json.loads(evaluated.stdout)["targets"]
    truths = {f"fixed:{arm}": rate for arm, rate in TRUE_RATES.items()}
    truths["uniform"] = sum(TRUE_RATES.values()) / 3
    for name, truth in truths.items():
        for estimator in ("ips", "snips", "dr"):
            estimate = targets[name]["estimates"][estimator]
            assert abs(estimate["value"] - truth) <= 4 * estimate["stderr"], (name, estimator,
                                                                              estimate)
    # The experiment's own settings, learnt on the first half: what the logger did on the
    # second half (the same allocation up to the posterior's drift over the half).
    logger = json.loads(evaluated.stdout)["logged"]
    thompson = targets["thompson"]["estimates"]["ips"]
    assert abs(thompson["value"] - logger["value"]) <= 2 * thompson["stderr"], (thompson, logger)


async def test_an_evaluation_keeps_the_logged_experiment_s_paused_arms_paused(
        client: Client, tmp_path: Path, redis_url: str) -> None:
    """A 'thompson' target gave 88% to an arm paused throughout (never logged), and a fixed
    target on it stopped the whole evaluation."""
    await _create(client, "paused-arm")
    response = await client.patch("/v1/experiments/paused-arm", json={
        "version": 1, "arms": {"pause": ["c"]}})
    assert response.status == 200, await response.text()
    await asyncio.sleep(0.2)  # the cache serves the change
    rng = np.random.default_rng(99)
    for batch in range(10):
        decisions = await _allocate(client, "paused-arm", n=100)
        assert {d["arm"] for d in decisions} <= {"a", "b"}
        await _events(client, [{"id": f"{batch}-{i}", "experiment": "paused-arm",
                                "arm": d["arm"], "decision_id": d["decision_id"],
                                "reward": int(rng.random() < 0.1)}
                               for i, d in enumerate(decisions)])
    await client.app[SERVICE].decisions.log.flush()
    out = tmp_path / "paused.parquet"
    exported = await asyncio.to_thread(_cli, "paused-arm", "--format", "parquet", "--out",
                                       str(out), redis_url=redis_url)
    assert exported.returncode == 0, exported.stderr
    evaluated = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "bandit", "simulate", "replay", "--log", str(out), "--json",
        "--target=thompson", "--target=fixed:c", "--target=uniform"],
        capture_output=True, text=True, timeout=300, check=False)
    assert evaluated.returncode == 0, evaluated.stderr
    evaluation = json.loads(evaluated.stdout)
    assert evaluation["targets"]["thompson"]["allocation"][2] == 0.0
    assert "fixed:c" not in evaluation["targets"] and "uniform" in evaluation["targets"]
    assert any(note.startswith("fixed:c: no estimate") for note in evaluation["notes"])
