"""Alerts: one signed webhook per episode across processes, delivered to a real local receiver.

The receiver is an aiohttp server on a loopback port that records every request; the services
are real aiohttp servers sharing the test's redis-server, sampling history every 0.2 s and
checking for alerts as often.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bandit.api.app import SERVICE, create_app
from bandit.serving import alerts, webhooks
from bandit.settings import Settings, SettingsError
from bandit.store.episodes import AlertEpisodes, Claim
from bandit.store.redis_store import RedisStore
from tests.conftest import ServiceProcess

Client = TestClient[Any, Any]
INTERVAL = 0.2
SECRET = "whsec-test-secret"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "alerts.md"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def json(self) -> dict[str, Any]:
        document: dict[str, Any] = orjson.loads(self.body)
        return document


class Receiver:
    """Records every request; answers 500 to the next ``failures`` of them."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.failures = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        status = 200
        if self.failures > 0:
            self.failures -= 1
            status = 500
        self.requests.append(Received(dict(request.headers), await request.read(), status))
        return web.Response(status=status, text="ok" if status == 200 else "down")

    def alerts(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The bodies answered 200, of one kind or all."""
        return [r.json for r in self.requests
                if r.status == 200 and (kind is None or r.json["kind"] == kind)]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recorder = Receiver()
    app = web.Application()
    app.router.add_post("/hook/T000/B000/secret-path", recorder.handle)
    async with TestServer(app) as server:
        recorder.url = str(server.make_url("/hook/T000/B000/secret-path"))
        yield recorder


Services = Callable[..., Awaitable[list[Client]]]


@pytest.fixture
async def services(redis_url: str, receiver: Receiver) -> AsyncIterator[Services]:
    """Start service instances on the test's Redis, alerting to the receiver by default."""
    async with AsyncExitStack() as stack:

        async def start(count: int = 1, **overrides: Any) -> list[Client]:
            settings = Settings(
                redis_url=redis_url, refresh_interval_s=0.05, served_flush_interval_s=0.05,
                history_interval_s=INTERVAL, alert_interval_s=INTERVAL,
                alert_webhook_urls=receiver.url, alert_secret=SECRET, alert_backoff_s=0.05,
                alert_timeout_s=5.0, public_url="https://bandit.example/").with_(**overrides)
            return [await stack.enter_async_context(
                TestClient(TestServer(create_app(settings, seed=seed))))
                for seed in range(count)]

        yield start


async def eventually(check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(INTERVAL / 4)


async def create(client: Client, experiment_id: str) -> None:
    response = await client.post("/v1/experiments", json={
        "id": experiment_id, "arms": ["a", "b"], "reward": "bernoulli"})
    assert response.status == 201, await response.text()


async def serve(clients: list[Client], experiment_id: str, seconds: float) -> None:
    """Decisions from every client, 5 per client every 0.05 s, no rewards."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for client in clients:
            response = await client.post(f"/v1/experiments/{experiment_id}/allocate",
                                         json={"n": 5})
            assert response.status == 200
        await asyncio.sleep(0.05)


async def call_a_winner(client: Client, experiment_id: str) -> None:
    """400 rewards: arm a succeeds 4 times in 5, arm b once in 5 (a clear winner)."""
    events = [{"id": f"e{i}", "experiment": experiment_id, "arm": "a" if i % 2 else "b",
               "reward": int(i % 10 != 1 if i % 2 else i % 10 == 0)} for i in range(400)]
    body = await (await client.post("/v1/events", json={"events": events})).json()
    assert body["accepted"] == 400


def alert_metric(text: str, kind: str, outcome: str) -> float:
    match = re.search(rf'bandit_alerts_total{{kind="{kind}",outcome="{outcome}"}} (\S+)', text)
    return float(match.group(1)) if match else 0.0


async def metric_sum(clients: list[Client], kind: str, outcome: str) -> float:
    return sum([alert_metric(await (await c.get("/metrics")).text(), kind, outcome)
                for c in clients])


# -- end to end -----------------------------------------------------------------------------


async def test_stalled_rewards_alert_once_per_episode_across_two_processes(
    services: Services, receiver: Receiver, redis_url: str,
) -> None:
    clients = await services(2)
    await create(clients[0], "stall")
    # Decisions, no rewards, for more than the five intervals a stall needs.
    await serve(clients, "stall", 8 * INTERVAL)
    await eventually(lambda: len(receiver.alerts("rewards_stalled")) >= 1)
    # Both processes keep checking (and see the stall) for another five intervals.
    await serve(clients, "stall", 5 * INTERVAL)
    [first] = receiver.alerts("rewards_stalled")
    assert first["experiment"] == "stall"
    assert first["details"]["stalled"] and first["details"]["decisions_since"] >= 100
    assert first["text"].startswith("Rewards stalled in experiment *stall*")
    assert first["text"].endswith("<https://bandit.example/#/exp/stall|Dashboard>")
    assert first["dashboard"] == "https://bandit.example/#/exp/stall"
    assert first["started_at"] <= first["sent_at"] <= time.time()
    assert await metric_sum(clients, "rewards_stalled", "delivered") == 1

    # A reward ends the episode (some process sees the flow resume and clears it)...
    events = [{"id": "r1", "experiment": "stall", "arm": "a", "reward": 1}]
    assert (await (await clients[1].post("/v1/events", json={"events": events})).json())[
        "accepted"] == 1
    state = aioredis.from_url(redis_url)
    key = "bandit:{stall}:alert:rewards_stalled"
    try:
        deadline = time.monotonic() + 15
        while await state.exists(key):
            assert time.monotonic() < deadline, "the episode never ended"
            await serve(clients, "stall", INTERVAL)
        assert len(receiver.alerts("rewards_stalled")) == 1
        # ... and a new stall is a new episode: a second alert.
        await serve(clients, "stall", 8 * INTERVAL)
        await eventually(lambda: len(receiver.alerts("rewards_stalled")) >= 2)
        await serve(clients, "stall", 3 * INTERVAL)
    finally:
        await state.aclose()
    second = receiver.alerts("rewards_stalled")[1:]
    assert len(second) == 1 and second[0]["episode"] != first["episode"]
    assert second[0]["details"]["observations"] == 1


async def test_a_winner_call_is_signed_and_alerted_once(services: Services,
                                                        receiver: Receiver) -> None:
    clients = await services(2)
    await create(clients[0], "call")
    await call_a_winner(clients[0], "call")
    for client in clients:  # both processes now serve the experiment
        assert (await client.get("/v1/experiments/call/stats")).status == 200
    await eventually(lambda: len(receiver.alerts("winner")) >= 1)
    await asyncio.sleep(5 * INTERVAL)
    [alert] = receiver.alerts("winner")
    assert alert["details"]["arm"] == "a" and alert["details"]["p_best"] >= 0.95
    assert alert["text"].startswith("Winner called in experiment *call*: arm *a* (P(best) ")
    assert len(alert["episode"]) == 16
    [request] = [r for r in receiver.requests if r.json["kind"] == "winner"]
    assert request.headers["Content-Type"] == "application/json"
    header = request.headers[webhooks.SIGNATURE_HEADER]
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", header)
    assert webhooks.verify(SECRET, header, request.body)
    assert not webhooks.verify("another-secret", header, request.body)
    assert not webhooks.verify(SECRET, header, request.body.replace(b'"a"', b'"b"'))
    assert not webhooks.verify(SECRET, header, request.body, now=time.time() + 600)
    # The documented receiver-side snippet agrees.
    verify_signature = documented_verifier()
    assert verify_signature(SECRET, header, request.body)
    assert not verify_signature("another-secret", header, request.body)


async def test_two_bandit_serve_processes_send_one_alert(
    service_process: Callable[..., ServiceProcess], receiver: Receiver,
) -> None:
    """`bandit serve` configured by its environment, twice on one Redis: one alert."""
    env = {"BANDIT_ALERT_WEBHOOK_URLS": receiver.url, "BANDIT_ALERT_SECRET": SECRET,
           "BANDIT_ALERT_INTERVAL_S": str(INTERVAL), "BANDIT_HISTORY_INTERVAL_S": str(INTERVAL)}
    processes = [await asyncio.to_thread(service_process, extra_env=env) for _ in range(2)]
    async with aiohttp.ClientSession() as http:
        created = await http.post(f"{processes[0].url}/v1/experiments", json={
            "id": "procs", "arms": ["a", "b"], "reward": "bernoulli"})
        assert created.status == 201
        events = [{"id": f"e{i}", "experiment": "procs", "arm": "a" if i % 2 else "b",
                   "reward": int(i % 10 != 1 if i % 2 else i % 10 == 0)} for i in range(400)]
        applied = await http.post(f"{processes[1].url}/v1/events", json={"events": events})
        assert (await applied.json())["accepted"] == 400
        for process in processes:
            stats = await http.get(f"{process.url}/v1/experiments/procs/stats")
            assert stats.status == 200
        await eventually(lambda: len(receiver.alerts("winner")) >= 1)
        await asyncio.sleep(5 * INTERVAL)
    assert len(receiver.requests) == 1
    [request] = receiver.requests
    assert request.json["kind"] == "winner" and request.json["details"]["arm"] == "a"
    assert webhooks.verify(SECRET, request.headers[webhooks.SIGNATURE_HEADER], request.body)


async def test_a_receiver_that_fails_twice_gets_the_alert_once_with_retries(
    services: Services, receiver: Receiver,
) -> None:
    receiver.failures = 2
    [client] = await services(1, alert_attempts=3)
    await create(client, "retry")
    await call_a_winner(client, "retry")
    assert (await client.get("/v1/experiments/retry/stats")).status == 200
    await eventually(lambda: len(receiver.alerts("winner")) >= 1)
    await asyncio.sleep(3 * INTERVAL)
    assert [r.status for r in receiver.requests] == [500, 500, 200]
    assert len({r.body for r in receiver.requests}) == 1  # the same alert, signed each time
    assert all(webhooks.verify(SECRET, r.headers[webhooks.SIGNATURE_HEADER], r.body)
               for r in receiver.requests)
    assert await metric_sum([client], "winner", "delivered") == 1
    assert await metric_sum([client], "winner", "failed") == 0


async def test_a_delivery_that_fails_is_tried_again_at_the_next_check(
    services: Services, receiver: Receiver,
) -> None:
    receiver.failures = 2
    [client] = await services(1, alert_attempts=2)
    await create(client, "later")
    await call_a_winner(client, "later")
    assert (await client.get("/v1/experiments/later/stats")).status == 200
    await eventually(lambda: len(receiver.alerts("winner")) >= 1)
    await asyncio.sleep(3 * INTERVAL)
    assert [r.status for r in receiver.requests] == [500, 500, 200]
    assert len({r.json["episode"] for r in receiver.requests}) == 1
    assert await metric_sum([client], "winner", "failed") == 1
    assert await metric_sum([client], "winner", "delivered") == 1


async def test_a_failing_sample_ratio_is_alerted(services: Services, receiver: Receiver,
                                                 redis_url: str) -> None:
    [client] = await services(1)
    await create(client, "ratio")
    await serve([client], "ratio", 2 * INTERVAL)
    state = aioredis.from_url(redis_url)
    try:
        # Draws that no propensity promised: arm a drawn 5,000 times more than it was given
        # (the sample-ratio sums' field `<arm index>:o`, bandit.store.keys).
        await state.hincrby("bandit:{ratio}:draws", "0:o", 5000)
    finally:
        await state.aclose()
    await serve([client], "ratio", 2 * INTERVAL)
    await eventually(lambda: len(receiver.alerts("sample_ratio")) >= 1)
    [alert] = receiver.alerts("sample_ratio")
    assert alert["details"]["ok"] is False  # (only `ok`: how the test is made may change)
    assert alert["text"].startswith("Sample ratio mismatch in experiment *ratio*")


async def test_no_webhook_no_alerts(services: Services, receiver: Receiver,
                                    redis_url: str) -> None:
    [client] = await services(1, alert_webhook_urls=None)
    await create(client, "quiet")
    await call_a_winner(client, "quiet")
    deadline = time.monotonic() + 15
    while not (await (await client.get("/v1/experiments/quiet/stats")).json())["winner"]:
        assert time.monotonic() < deadline, "no winner called"
        await asyncio.sleep(INTERVAL / 4)
    await asyncio.sleep(5 * INTERVAL)
    assert receiver.requests == []
    state = aioredis.from_url(redis_url)
    try:
        assert [key async for key in state.scan_iter(match="*alert*")] == []
    finally:
        await state.aclose()


async def test_an_archived_experiment_stops_alerting(services: Services,
                                                     receiver: Receiver) -> None:
    """Even an alert not delivered yet: archiving on one process stops both trying."""
    receiver.failures = 1_000_000  # the receiver is down throughout
    clients = await services(2, alert_attempts=1)
    await create(clients[0], "gone")
    await call_a_winner(clients[0], "gone")
    for client in clients:
        assert (await client.get("/v1/experiments/gone/stats")).status == 200
    await eventually(lambda: len(receiver.requests) >= 2)  # tried at two checks at least
    assert (await clients[0].delete("/v1/experiments/gone")).status == 200
    await asyncio.sleep(2 * INTERVAL)  # the other process hears of it; a check in flight ends
    tried = len(receiver.requests)
    await asyncio.sleep(5 * INTERVAL)
    assert len(receiver.requests) == tried
    assert {r.json["kind"] for r in receiver.requests} == {"winner"}
    assert len({r.json["episode"] for r in receiver.requests}) == 1


async def test_only_active_experiments_are_checked(services: Services) -> None:
    """Checking marks an experiment used in the cache: idle ones must be left to expire."""
    [client] = await services(1, alert_webhook_urls=None)
    service = client.app[SERVICE]
    checker = alerts.Alerts(service, service.settings.with_(alert_webhook_urls="http://h/x"),
                            lambda kind, outcome: None)
    linger = 4 * INTERVAL  # two history and two alert intervals
    for name in ("busy", "idle"):
        await create(client, name)
        assert (await client.get(f"/v1/experiments/{name}/stats")).status == 200
    assert sorted(await checker.due()) == ["busy", "idle"]  # first seen
    deadline = time.monotonic() + linger + 0.5
    while time.monotonic() < deadline:
        await serve([client], "busy", INTERVAL)  # served: the counts flushed move
        await checker.due()
    assert await checker.due() == ["busy"]
    # A change (a reward) makes it due again.
    events = [{"id": "r", "experiment": "idle", "arm": "a", "reward": 1}]
    assert (await (await client.post("/v1/events", json={"events": events})).json())[
        "accepted"] == 1

    def rewarded() -> bool:
        snapshot = service.cache.peek("idle")
        return snapshot is not None and float(snapshot.counts.sum()) == 1.0

    await eventually(rewarded)
    assert "idle" in await checker.due()


# -- episodes in Redis ------------------------------------------------------------------------


async def test_episodes_begin_end_and_follow_the_winner(client: Client,
                                                        settings: Settings) -> None:
    await create(client, "ep")
    store = RedisStore.from_settings(settings)
    episodes = AlertEpisodes(store.client, settings.key_prefix)
    try:
        first = await episodes.observe("ep", "winner", "a", "ep1", 30.0, ["t1", "t2"])
        assert first.claim is not None and first.claim.began
        assert (first.claim.episode, first.claim.targets) == ("ep1", ("t1", "t2"))
        # Another process sees the same call while the first delivers: nothing to do.
        assert (await episodes.observe("ep", "winner", "a", "x", 30.0, ["t1", "t2"])) \
            == type(first)()
        # t1 acknowledged, t2 did not: the next observation claims t2 only.
        assert await episodes.delivered("ep", "winner", "ep1", ["t1"])
        again = await episodes.observe("ep", "winner", "a", "x", 30.0, ["t1", "t2"])
        assert again.claim is not None and not again.claim.began
        assert (again.claim.episode, again.claim.targets) == ("ep1", ("t2",))
        assert again.claim.since == first.claim.since
        assert await episodes.delivered("ep", "winner", "ep1", ["t2"])
        assert (await episodes.observe("ep", "winner", "a", "x", 30.0, ["t1", "t2"])).claim \
            is None
        # Another winner is another episode.
        other = await episodes.observe("ep", "winner", "b", "ep2", 30.0, ["t1"])
        assert other.claim is not None and other.claim.episode == "ep2"
        # The call revoked: the episode ends, once.
        assert (await episodes.observe("ep", "winner", None, "x", 30.0, ["t1"])).ended == "ep2"
        assert (await episodes.observe("ep", "winner", None, "x", 30.0, ["t1"])).ended is None
        assert not await episodes.delivered("ep", "winner", "ep2", ["t1"])
        # Past a check's delivery budget an episode begins unclaimed; a later check claims it.
        deferred = await episodes.observe("ep", "rewards_stalled", "1", "ep4", 30.0, [])
        assert deferred == type(first)()
        late = await episodes.observe("ep", "rewards_stalled", "1", "x", 30.0, ["t1"])
        assert late.claim is not None and late.claim.episode == "ep4" and not late.claim.began
        # A process that dies mid-delivery holds the lease until it runs out.
        held = await episodes.observe("ep", "sample_ratio", "1", "ep3", 0.2, ["t1"])
        assert held.claim is not None
        assert (await episodes.observe("ep", "sample_ratio", "1", "x", 0.2, ["t1"])).claim \
            is None
        await asyncio.sleep(0.3)
        taken = await episodes.observe("ep", "sample_ratio", "1", "x", 0.2, ["t1"])
        assert taken.claim is not None and taken.claim.episode == "ep3"
        # Archived: nothing more, and the state is dropped.
        assert (await client.delete("/v1/experiments/ep")).status == 200
        assert (await episodes.observe("ep", "sample_ratio", "1", "x", 0.2, ["t1"])).gone
        assert not await store.client.exists("bandit:{ep}:alert:sample_ratio")
    finally:
        await store.close()


# -- pure parts -----------------------------------------------------------------------------


def stats(sample_ratio: dict[str, Any] | None = None, rewards: dict[str, Any] | None = None,
          winner: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"experiment": "x", "winner": winner,
            "health": {"sample_ratio": sample_ratio, "rewards": rewards}}


RATIO = {"decisions": 12000, "chi2": 35.25, "dof": 1, "p_value": 2.9e-9, "ok": False,
         "expected": [6000.0, 6000.0], "observed": [6700, 5300]}
FLOW = {"observations": 812.0, "unchanged_since": 1.0, "decisions_since": 1250,
        "quiet_for_s": 300.0, "stalled": True}
WINNER = {"arm": "b", "p_best": 0.97, "expected_loss": 0.0003, "threshold": 0.95,
          "max_loss": 0.008}


def test_subjects_of_a_stats_answer() -> None:
    assert alerts.subjects(stats()) == {"winner": None}  # nothing to judge the health by yet
    assert alerts.subjects(stats(RATIO, FLOW, WINNER)) == {
        "sample_ratio": "1", "rewards_stalled": "1", "winner": "b"}
    assert alerts.subjects(stats({**RATIO, "ok": True}, {**FLOW, "stalled": False})) == {
        "sample_ratio": None, "rewards_stalled": None, "winner": None}


def test_payload_texts() -> None:
    claim = Claim("0123456789abcdef", 100.0, True, ("t",))
    ratio = alerts.payload("sample_ratio", stats(RATIO), claim, public_url=None, now=101.0)
    assert ratio == {
        "text": "Sample ratio mismatch in experiment *x*: decisions served per arm are not what "
                "the allocation promised (decisions 12,000, observed [6700, 5300], expected "
                "[6000.0, 6000.0], chi-square 35.25, dof 1, p 2.9e-09).",
        "experiment": "x", "kind": "sample_ratio", "episode": "0123456789abcdef",
        "started_at": 100.0, "sent_at": 101.0, "details": RATIO, "dashboard": None}
    flow = alerts.payload("rewards_stalled", stats(rewards=FLOW), claim,
                          public_url="https://b.example", now=101.0)
    assert flow["text"] == ("Rewards stalled in experiment *x*: decisions are served, no new "
                            "reward arrives (quiet for 300 s, decisions since 1,250, "
                            "observations 812).\n<https://b.example/#/exp/x|Dashboard>")
    won = alerts.payload("winner", stats(winner=WINNER), claim, public_url=None, now=101.0)
    assert won["text"] == ("Winner called in experiment *x*: arm *b* (P(best) 0.9700, threshold "
                           "0.95, expected loss 0.0003, max loss 0.008).")
    # The health checks' answers may change shape: an alert quotes what it finds.
    bare = alerts.payload("sample_ratio", stats({"ok": False, "chi2": None}), claim,
                          public_url=None, now=101.0)
    assert bare["text"] == ("Sample ratio mismatch in experiment *x*: decisions served per arm "
                            "are not what the allocation promised.")


def test_signature_round_trip() -> None:
    body = b'{"text": "hello"}'
    header = webhooks.signature(SECRET, 1_700_000_000, body)
    assert webhooks.verify(SECRET, header, body, now=1_700_000_100)
    assert not webhooks.verify(SECRET, header, body, now=1_700_000_400)  # too old
    assert not webhooks.verify("other", header, body, now=1_700_000_100)
    assert not webhooks.verify(SECRET, "v1=00", body)
    assert not webhooks.verify(SECRET, "t=soon,v1=00", body)


def test_alert_settings() -> None:
    settings = Settings.from_env({"BANDIT_ALERT_WEBHOOK_URLS": "https://a.example/x, "
                                  "http://127.0.0.1:9/y",
                                  "BANDIT_ALERT_ATTEMPTS": "2", "BANDIT_ALERT_SECRET": "s"})
    assert settings.alert_webhook_list == ["https://a.example/x", "http://127.0.0.1:9/y"]
    assert settings.alert_attempts == 2 and settings.alert_secret == "s"
    assert Settings().alert_webhook_list == []
    with pytest.raises(SettingsError, match=r"BANDIT_ALERT_WEBHOOK_URLS: "
                                             r"'ftp://hooks.example/\.\.\.' is not a usable"):
        Settings(alert_webhook_urls="ftp://hooks.example/T0/B0/secret")
    with pytest.raises(SettingsError, match=r"'hooks.example/\.\.\.'"):
        Settings(alert_webhook_urls="hooks.example/T0/B0/secret")
    for bad in ({"alert_attempts": 0}, {"alert_timeout_s": 0.0}, {"alert_interval_s": -1.0},
                {"public_url": "bandit.example"}, {"alert_secret": " "}):
        with pytest.raises(SettingsError, match=f"(?i){next(iter(bad))}"):
            Settings(**bad)
    hooks = webhooks.Webhooks(["http://h"], None, attempts=4, backoff_s=1.0, timeout_s=5.0)
    assert hooks.waits() == [1.0, 2.0, 4.0] and hooks.longest_delivery_s == 27.0


def documented_verifier() -> Callable[[str, str, bytes], bool]:
    """The receiver-side snippet of docs/alerts.md, run as written."""
    [code] = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.DOTALL)
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOCS), "exec"), namespace)  # our own documentation, run as written
    verifier: Callable[[str, str, bytes], bool] = namespace["verify_signature"]
    return verifier
