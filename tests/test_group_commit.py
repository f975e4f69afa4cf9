"""Group commit of small reward requests (``bandit.serving.groups``), through a real HTTP server
and a real Redis: concurrent requests share script calls, and each still gets the answer it
would have had alone, dedup and "one reward per decision and arm" across the group included;
a failed call acknowledges none of its requests, and nothing acknowledged is lost."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import redis
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bandit.api.app import SERVICE, create_app
from bandit.errors import StoreUnavailable
from bandit.serving.groups import GROUP_REQUEST_EVENTS
from bandit.serving.service import BanditService
from bandit.settings import Settings
from bandit.store.keys import Keys
from tests.support.redis import RedisServer

Client = TestClient[Any, Any]

ARMS = ["arm0", "arm1", "arm2"]


async def _create(client: Client, experiment_id: str, **extra: Any) -> None:
    response = await client.post("/v1/experiments", json={
        "id": experiment_id, "arms": ARMS, "reward": "bernoulli", **extra})
    assert response.status == 201, await response.text()


async def _post(client: Client, events: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    response = await client.post("/v1/events", json={"events": events})
    return response.status, dict(await response.json())


def _stored(url: str, experiment_id: str) -> dict[str, float]:
    """The experiment's arm statistics as Redis holds them (no cache in between)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    raw: dict[str, str] = client.hgetall(Keys("bandit", experiment_id).stats)  # type: ignore[assignment]
    client.close()
    return {field: float(value) for field, value in raw.items() if ":" in field}


def _observations(url: str, experiment_id: str) -> float:
    return sum(value for field, value in _stored(url, experiment_id).items()
               if field.endswith(":n"))


def _script_calls(url: str) -> int:
    client = redis.Redis.from_url(url)
    stats = client.info("commandstats")
    client.close()
    return int(stats.get("cmdstat_evalsha", {"calls": 0})["calls"])


def _service(client: Client) -> BanditService:
    service: BanditService = client.app[SERVICE]
    return service


async def test_concurrent_single_events_share_script_calls(client: Client,
                                                            redis_url: str) -> None:
    """Regression: before group commit, 300 requests of one event made 300 script calls."""
    await _create(client, "beacons")
    assert (await _post(client, [{"id": "warm", "experiment": "beacons", "arm": "arm0",
                                  "reward": 1}]))[0] == 200
    groups = _service(client).rewards.groups
    calls_before, requests_before = groups.calls, groups.requests
    scripts_before = _script_calls(redis_url)
    answers = await asyncio.gather(*(
        _post(client, [{"id": f"b{i}", "experiment": "beacons", "arm": ARMS[i % 3],
                        "reward": i % 2}]) for i in range(300)))
    scripts = _script_calls(redis_url) - scripts_before
    assert all(status == 200 and body == {"accepted": 1, "duplicates": 0, "rejected": []}
               for status, body in answers), answers
    assert groups.requests - requests_before == 300
    calls = groups.calls - calls_before
    # Every script call Redis ran meanwhile, the cache's re-reads included.
    assert calls <= 100 and scripts <= 120, (calls, scripts)
    # Nothing acknowledged is lost: every accepted event is in Redis' counts.
    stored = _stored(redis_url, "beacons")
    assert _observations(redis_url, "beacons") == 301
    assert sum(stored[f"{arm}:s"] for arm in range(3)) == 150 + 1
    metrics = await (await client.get("/metrics")).text()
    assert f"bandit_event_group_calls_total {float(groups.calls)}" in metrics
    assert f"bandit_event_group_requests_total {float(groups.requests)}" in metrics
    assert 'bandit_events_total{outcome="accepted"} 301.0' in metrics


async def test_the_same_event_id_in_concurrent_requests_counts_once(client: Client,
                                                                    redis_url: str) -> None:
    await _create(client, "dedup")
    answers = await asyncio.gather(*(
        _post(client, [{"id": "same", "experiment": "dedup", "arm": "arm1", "reward": 1},
                       {"id": f"own{i}", "experiment": "dedup", "arm": "arm2", "reward": 0}])
        for i in range(40)))
    assert all(status == 200 for status, _ in answers)
    bodies = [body for _, body in answers]
    # Each request's own event counts; "same" counts in exactly one of them.
    assert sorted(body["accepted"] for body in bodies) == [1] * 39 + [2]
    assert sum(body["duplicates"] for body in bodies) == 39
    assert all(body["rejected"] == [] for body in bodies)
    assert _observations(redis_url, "dedup") == 41
    assert _stored(redis_url, "dedup")["1:s"] == 1


async def test_one_reward_per_decision_and_arm_across_a_group(client: Client,
                                                               redis_url: str) -> None:
    await _create(client, "decided")
    response = await client.post("/v1/experiments/decided/allocate", json={"n": 20})
    decisions = (await response.json())["decisions"]
    provisional = [(await (await client.post("/v1/experiments/decided/allocate",
                                              json={"provisional": True})).json())[
        "decisions"][0] for _ in range(5)]
    served = _observations(redis_url, "decided")  # provisional decisions count when served
    groups = _service(client).rewards.groups
    calls_before, requests_before = groups.calls, groups.requests
    # Three event ids per signed decision and per provisional one, all sent at once.
    requests = [[{"id": f"d{k}-{copy}", "experiment": "decided", "arm": d["arm"], "reward": 1,
                  "decision_id": d["decision_id"]}]
                for copy in range(3) for k, d in enumerate(decisions + provisional)]
    answers = await asyncio.gather(*(_post(client, events) for events in requests))
    assert all(status == 200 for status, _ in answers)
    assert groups.requests - requests_before == len(requests)
    assert groups.calls - calls_before < len(requests)
    accepted: Counter[str] = Counter()
    for events, (_, body) in zip(requests, answers, strict=True):
        decision_id = events[0]["decision_id"]
        accepted[decision_id] += body["accepted"]
        if body["accepted"] == 0:
            if decision_id.startswith("p"):
                assert body["duplicates"] == 1, body  # converted by another request
            else:
                [rejected] = body["rejected"]
                assert "already has a reward for this arm" in rejected["error"], body
    assert accepted == {d["decision_id"]: 1 for d in decisions + provisional}
    stored = _stored(redis_url, "decided")
    assert _observations(redis_url, "decided") == served + 20  # conversions add no observation
    assert sum(stored[f"{arm}:s"] for arm in range(3)) == 25


async def test_a_large_batch_is_applied_alone_and_whole(client: Client, redis_url: str) -> None:
    await _create(client, "large")
    groups = _service(client).rewards.groups
    calls_before = groups.calls
    size = GROUP_REQUEST_EVENTS + 1
    big = [{"id": f"big{i}", "experiment": "large", "arm": ARMS[i % 3], "reward": 1}
           for i in range(size)]
    small = [[{"id": f"small{i}", "experiment": "large", "arm": "arm0", "reward": 0}]
             for i in range(30)]
    answers = await asyncio.gather(_post(client, big), *(_post(client, s) for s in small))
    assert answers[0] == (200, {"accepted": size, "duplicates": 0, "rejected": []})
    assert all(answer == (200, {"accepted": 1, "duplicates": 0, "rejected": []})
               for answer in answers[1:])
    assert groups.requests >= 30 and groups.calls - calls_before <= 30
    assert _observations(redis_url, "large") == size + 30


async def test_contextual_events_are_grouped_too(client: Client, redis_url: str) -> None:
    model = {"type": "linear", "features": [
        {"name": "region", "type": "categorical", "values": ["eu", "us"]}]}
    await _create(client, "ctx", model=model)
    first = {"id": "c0", "experiment": "ctx", "arm": "arm0", "reward": 1,
             "context": {"region": "eu"}}
    assert (await _post(client, [first]))[1]["accepted"] == 1
    groups = _service(client).rewards.groups
    calls_before = groups.calls
    # An id already applied among fresh ones: the first call of the group finds the events
    # differ from what was summed for it, and the group goes again event by event.
    requests = [[first]] + [[{"id": f"c{i}", "experiment": "ctx", "arm": ARMS[i % 3],
                              "reward": i % 2, "context": {"region": ["eu", "us"][i % 2]}}]
                            for i in range(1, 40)]
    answers = await asyncio.gather(*(_post(client, events) for events in requests))
    assert answers[0] == (200, {"accepted": 0, "duplicates": 1, "rejected": []})
    assert all(answer == (200, {"accepted": 1, "duplicates": 0, "rejected": []})
               for answer in answers[1:]), answers
    assert groups.calls - calls_before < 39
    raw: dict[bytes, bytes] = redis.Redis.from_url(redis_url).hgetall(  # type: ignore[assignment]
        Keys("bandit", "ctx").stats)
    counts = {field: float(value) for field, value in raw.items() if field.endswith(b":n")}
    assert sum(counts.values()) == 40
    # The rows' weight sums (the first double of each arm's row) count every event once.
    weights = sum(float(np.frombuffer(value, "<f8")[0]) for field, value in raw.items()
                  if field.endswith(b":x"))
    assert weights == 40


async def test_a_redis_stall_fails_every_request_of_its_group(tmp_path: Path) -> None:
    """Redis stops answering while groups are in flight (``DEBUG SLEEP``): every request
    gets 503, none is acknowledged; Redis then runs the calls it had received, and the
    clients' retries count every event exactly once."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    settings = Settings(redis_url=server.url, refresh_interval_s=0.05,
                        served_flush_interval_s=0.1, redis_timeout_s=0.3)
    try:
        async with TestClient(TestServer(create_app(settings, seed=3))) as client:
            await _create(client, "stall")
            assert (await _post(client, [{"id": "warm", "experiment": "stall", "arm": "arm0",
                                          "reward": 1}]))[0] == 200
            groups = _service(client).rewards.groups
            calls_before = groups.calls
            sleeper = aioredis.Redis.from_url(server.url)
            stall = asyncio.create_task(
                sleeper.execute_command("DEBUG", "SLEEP", "1.2"))  # type: ignore[no-untyped-call]
            await asyncio.sleep(0.1)  # Redis is asleep: what it receives waits
            requests = [[{"id": f"s{i}", "experiment": "stall", "arm": ARMS[i % 3],
                          "reward": 1}] for i in range(40)]
            answers = await asyncio.gather(*(_post(client, events) for events in requests))
            assert [status for status, _ in answers] == [503] * 40, answers
            assert groups.calls - calls_before < 40  # grouped, and failed as groups
            await stall
            await sleeper.aclose()
            for _ in range(100):
                retried = await asyncio.gather(*(_post(client, events)
                                                 for events in requests))
                if all(status == 200 for status, _ in retried):
                    break
                await asyncio.sleep(0.05)
            assert all(body["accepted"] + body["duplicates"] == 1 for _, body in retried)
            assert _observations(server.url, "stall") == 41
    finally:
        server.stop()


async def test_a_request_cancelled_while_it_waits_is_not_sent(client: Client,
                                                               redis_url: str) -> None:
    await _create(client, "gone")
    assert (await _post(client, [{"id": "warm", "experiment": "gone", "arm": "arm0",
                                  "reward": 1}]))[0] == 200  # cached: no await on the way
    service = _service(client)
    tasks = [asyncio.create_task(service.apply_events({"events": [
        {"id": f"g{i}", "experiment": "gone", "arm": "arm0", "reward": 1}]}))
        for i in range(3)]
    await asyncio.sleep(0)  # all three wait in the lane; its first call is not made yet
    tasks[1].cancel()
    assert [await tasks[0], await tasks[2]] == [
        {"accepted": 1, "duplicates": 0, "rejected": []}] * 2
    assert tasks[1].cancelled()
    assert _observations(redis_url, "gone") == 3  # warm, g0 and g2


async def test_a_lane_stopped_mid_call_acknowledges_nothing(client: Client,
                                                             redis_url: str) -> None:
    """The task making an experiment's calls is cancelled during one (the process stopping):
    the request in that call and the one waiting behind it get 503, and none hangs."""
    await _create(client, "stopped")
    assert (await _post(client, [{"id": "warm", "experiment": "stopped", "arm": "arm0",
                                  "reward": 1}]))[0] == 200
    service = _service(client)
    sleeper = aioredis.Redis.from_url(redis_url)
    stall = asyncio.create_task(
        sleeper.execute_command("DEBUG", "SLEEP", "0.5"))  # type: ignore[no-untyped-call]
    await asyncio.sleep(0.05)  # Redis is asleep: the lane's call will wait for it
    first = asyncio.create_task(service.apply_events({"events": [
        {"id": "in-flight", "experiment": "stopped", "arm": "arm0", "reward": 1}]}))
    await asyncio.sleep(0.05)
    lane = service.rewards.groups._lanes["stopped"]
    waiting = asyncio.create_task(service.apply_events({"events": [
        {"id": "waiting", "experiment": "stopped", "arm": "arm0", "reward": 1}]}))
    await asyncio.sleep(0)
    assert lane.task is not None and len(lane.queue) == 1  # "in-flight" is in the call
    lane.task.cancel()
    for task in (first, waiting):
        try:
            await asyncio.wait_for(task, 0.3)  # before Redis wakes up
        except StoreUnavailable as error:
            assert "stopping" in error.message
        else:
            raise AssertionError("acknowledged by a lane that was stopped")
    assert "stopped" not in service.rewards.groups._lanes
    await stall
    await sleeper.aclose()


# -- every answer as if the requests had run one after another --------------------------------

#: What an event is, relative to an experiment's decisions: a plain event for an arm with a
#: reward (2 is refused: bernoulli), or one naming signed decision k (its arm, or another),
#: or provisional decision k. (No unknown arms: those make the request read the experiment
#: again from Redis, so it reaches its lane later, and which group it joins is timing.)
_EVENT = st.one_of(
    st.tuples(st.just("plain"), st.integers(0, 2), st.sampled_from([0, 1, 2])),
    st.tuples(st.just("signed"), st.integers(0, 1), st.booleans()),
    st.tuples(st.just("provisional"), st.integers(0, 1), st.booleans()),
)
#: A request: one to three events, each with an id from a small pool (repeats within and
#: across requests), or a malformed event.
_REQUESTS = st.lists(st.lists(st.one_of(st.tuples(st.sampled_from("abcd"), _EVENT),
                                        st.just(None)),
                              min_size=1, max_size=3),
                     min_size=2, max_size=8)
_examples = itertools.count()


async def _decisions(client: Client, experiment_id: str) -> tuple[list[Any], list[Any]]:
    response = await client.post(f"/v1/experiments/{experiment_id}/allocate", json={"n": 4})
    signed = (await response.json())["decisions"]
    provisional = [(await (await client.post(f"/v1/experiments/{experiment_id}/allocate",
                                             json={"provisional": True})).json())[
        "decisions"][0] for _ in range(2)]
    return signed, provisional


def _body(requests: list[list[Any]], experiment_id: str, example: int,
          signed: list[Any], provisional: list[Any]) -> list[dict[str, Any]]:
    bodies = []
    for request in requests:
        events: list[Any] = []
        for item in request:
            if item is None:
                events.append({"id": "bad id", "experiment": experiment_id})
                continue
            token, (kind, k, detail) = item
            event: dict[str, Any] = {"id": f"x{example}-{token}", "experiment": experiment_id}
            if kind == "plain":
                event.update(arm=f"arm{k}", reward=detail)
            else:
                decision = (signed if kind == "signed" else provisional)[k]
                arm = decision["arm"] if detail else ARMS[(ARMS.index(decision["arm"]) + 1) % 3]
                event.update(arm=arm, reward=1, decision_id=decision["decision_id"])
            events.append(event)
        bodies.append({"events": events})
    return bodies


def _normalized(answer: dict[str, Any], experiment_id: str) -> dict[str, Any]:
    """An answer without what differs between the two experiments: their ids and arms."""
    rejected = [{"index": r["index"], "error": re.sub(r"'arm\d'", "'A'", r["error"].replace(
        repr(experiment_id), "'E'"))} for r in answer["rejected"]]
    return {**answer, "rejected": rejected}


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=_REQUESTS)
# Where one call for all would answer otherwise: the script answers a repeated id as its first
# copy (rewarded already: "b" would be refused too), and a provisional decision claimed by
# an event that turns out to be a duplicate ("a") would refuse the next one.
@example(requests=[[("a", ("signed", 0, True))], [("b", ("signed", 0, True))],
                   [("b", ("plain", 0, 1))]])
@example(requests=[[("a", ("plain", 0, 1))], [("a", ("provisional", 0, True))],
                   [("b", ("provisional", 0, True))]])
async def test_grouped_answers_equal_sequential_ones(client: Client, redis_url: str,
                                                     requests: list[list[Any]]) -> None:
    """Random mixes of valid, invalid, repeated and decision-naming events: the requests sent
    at once (grouped) to one experiment get the answers the same requests get one after
    another on a twin experiment, and both experiments hold the same totals after each
    example. (The client's server lives through every example: fresh ids per example.)"""
    example = next(_examples)
    if example == 0 or (await client.get("/v1/experiments/grouped")).status == 404:
        await _create(client, "grouped")
        await _create(client, "alone")
    service = _service(client)
    answers, added = {}, {}
    calls = 0
    for experiment_id in ("grouped", "alone"):
        signed, provisional = await _decisions(client, experiment_id)
        bodies = _body(requests, experiment_id, example, signed, provisional)
        before = _totals(redis_url, experiment_id)
        if experiment_id == "grouped":
            calls = service.rewards.groups.calls
            # All enter their experiment's lane, in this order, before its first call.
            results = await asyncio.gather(*(service.apply_events(b) for b in bodies))
            calls = service.rewards.groups.calls - calls
        else:
            results = [await service.apply_events(b) for b in bodies]
        answers[experiment_id] = [_normalized(r, experiment_id) for r in results]
        after = _totals(redis_url, experiment_id)
        added[experiment_id] = {kind: after[kind] - before[kind] for kind in after}
    assert answers["grouped"] == answers["alone"]
    assert added["grouped"] == added["alone"]
    assert calls == _expected_calls(requests)


def _totals(url: str, experiment_id: str) -> dict[str, float]:
    stored = _stored(url, experiment_id)
    return {kind: sum(v for f, v in stored.items() if f.endswith(kind))
            for kind in (":s", ":f", ":n")}


def _expected_calls(requests: list[list[Any]]) -> int:
    """The calls the group commit makes for ``requests`` entering one lane in order: a request
    with an event that passes the checks in Python joins the current group unless it repeats
    one of the group's event ids or provisional decisions (then it starts the next)."""
    calls, group = 0, set[str]()
    for request in requests:
        keys = set[str]()
        for item in request:
            if item is None:
                continue
            token, (kind, k, detail) = item
            if kind == "plain" and detail in (0, 1):
                keys.add(token)
            elif kind != "plain" and detail:
                keys |= {token, f"p{k}"} if kind == "provisional" else {token}
        if not keys:
            continue  # answered without Redis
        if not calls or not group.isdisjoint(keys):
            calls, group = calls + 1, set()
        group |= keys
    return calls

