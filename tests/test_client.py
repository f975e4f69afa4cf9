"""The client library against the real service: `bandit serve` processes on a real redis-server.

Most scenarios run once per client (``kind``: the blocking ``BanditClient`` and the asyncio
``AsyncBanditClient``) through the small ``_decide``/``_flush``/``_close`` adapters, so both
clients pass the very same assertions. Outages are real: a port nobody listens on, a
SIGSTOPped service, a SIGKILLed one replaced on the same port, a stopped Redis.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Unpack

import pytest
import urllib3
from bandit_client import (
    AsyncBanditClient,
    AuthError,
    BanditClient,
    BufferFull,
    ClientClosed,
    Decision,
    DecisionOptions,
    InvalidRequest,
    NotFound,
    Rejected,
    Unavailable,
)

from bandit.store.embedded import free_port
from tests.conftest import ServiceProcess
from tests.support.redis import RedisServer

StartService = Callable[..., ServiceProcess]
AnyClient = BanditClient | AsyncBanditClient
ClientFactory = Callable[..., AnyClient]
ARMS = ("control", "blue", "green")
#: What a timed-out decision may take beyond its timeout on a busy two-core machine.
TIMEOUT_MARGIN_S = 0.15

# -- the service's HTTP API, for setting up and checking (not through the client) ----------


def _call(url: str, method: str, path: str, body: object = None,
          key: str | None = None) -> tuple[int, Any]:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    response = urllib3.request(method, url + path, json=body, headers=headers, timeout=10.0,
                               retries=False)
    return response.status, response.json() if response.data else None


def _create(url: str, experiment: str, key: str | None = None) -> None:
    status, body = _call(url, "POST", "/v1/experiments",
                         {"id": experiment, "arms": list(ARMS), "reward": "bernoulli"}, key)
    assert status == 201, body


def _counts(url: str, experiment: str, key: str | None = None) -> Counter[str]:
    status, body = _call(url, "GET", f"/v1/experiments/{experiment}/stats", key=key)
    assert status == 200, body
    return Counter({arm["arm"]: round(arm["n"]) for arm in body["arms"] if arm["n"]})


def _observations(url: str, experiment: str, total: int,
                  key: str | None = None) -> Counter[str]:
    """Per-arm observations ``n`` once the service shows ``total``, read again a little later
    (several cache refreshes), so that anything counted twice would show."""
    deadline = time.monotonic() + 10
    while sum(_counts(url, experiment, key).values()) < total and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    return _counts(url, experiment, key)


def _events(count: int, seed: int) -> list[tuple[str, str, float]]:
    """(event id, arm, reward); every fifth repeats the one before (the caller's own retry)."""
    rng = random.Random(seed)
    events: list[tuple[str, str, float]] = []
    for index in range(count):
        if index % 5 == 4:
            events.append(events[-1])
        else:
            events.append((f"e{seed}-{index}", rng.choice(ARMS), float(rng.random() < 0.3)))
    return events


def _distinct_per_arm(events: list[tuple[str, str, float]]) -> Counter[str]:
    return Counter(arm for _, arm, _ in set(events))


@pytest.fixture(scope="module")
def shared_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One service (on a Redis of its own) for the scenarios that leave it running: each
    uses an experiment of its own (``experiment``), and starting a service takes seconds."""
    redis = RedisServer(tmp_path_factory.mktemp("client-redis"))
    redis.start()
    service = ServiceProcess(redis.url)
    try:
        service.wait_ready()
        yield service
    finally:
        service.stop()
        redis.stop()


@pytest.fixture
def experiment(shared_service: ServiceProcess) -> str:
    """A new experiment on the shared service, arms ``ARMS``."""
    experiment_id = f"x{uuid.uuid4().hex[:12]}"
    _create(shared_service.url, experiment_id)
    return experiment_id


# -- one set of assertions for both clients --------------------------------------------------


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def clients() -> AsyncIterator[ClientFactory]:
    """Makes clients (``make("sync" | "async", url, **options)``); closes them after the test."""
    made: list[AnyClient] = []

    def make(client_kind: str, url: str, **options: Any) -> AnyClient:
        client = (BanditClient if client_kind == "sync" else AsyncBanditClient)(url, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        await _close(client, 0.5)


async def _decide(client: AnyClient, experiment: str,
                  **options: Unpack[DecisionOptions]) -> Decision:
    if isinstance(client, AsyncBanditClient):
        return await client.decide(experiment, **options)
    return client.decide(experiment, **options)


async def _allocate(client: AnyClient, experiment: str, n: int) -> list[Decision]:
    if isinstance(client, AsyncBanditClient):
        return await client.allocate(experiment, n)
    return client.allocate(experiment, n)


async def _flush(client: AnyClient, timeout: float) -> bool:
    if isinstance(client, AsyncBanditClient):
        return await client.flush(timeout)
    return await asyncio.to_thread(client.flush, timeout)


async def _close(client: AnyClient, timeout: float | None = None) -> None:
    if isinstance(client, AsyncBanditClient):
        await client.aclose(timeout)
    else:
        await asyncio.to_thread(client.close, timeout)


async def _timed_decide(client: AnyClient, experiment: str) -> tuple[Decision, float]:
    started = time.monotonic()
    decision = await _decide(client, experiment, fallback="control")
    return decision, time.monotonic() - started


def _assert_fallback(decision: Decision, reason: str) -> None:
    assert decision.fallback
    assert (decision.arm, decision.arms) == ("control", ("control",))
    assert decision.decision_id is None and decision.propensity is None
    assert decision.reason is not None and reason in decision.reason.lower(), decision.reason
    # Words for people, not the transport's internals (aiohttp's ConnectionKey(...) was shown).
    assert not re.search(r"0x[0-9a-f]+|Key\(|Error\(", decision.reason), decision.reason


# -- the scenarios ---------------------------------------------------------------------------


async def test_decisions_and_rewards_end_to_end(
    kind: str, clients: ClientFactory, shared_service: ServiceProcess, experiment: str
) -> None:
    url = shared_service.url
    rejected: list[Rejected] = []
    client = clients(kind, url, flush_interval=0.05, batch_size=100, on_rejected=rejected.extend)

    decision = await _decide(client, experiment, fallback="control")
    assert not decision.fallback and decision.reason is None and not decision.stale
    assert decision.arm in ARMS and decision.arms == (decision.arm,)
    assert decision.decision_id is not None and decision.version == 1
    assert decision.propensity == pytest.approx(1 / 3)  # no data yet: uniform
    batch = await _allocate(client, experiment, 200)
    assert len({d.decision_id for d in batch}) == 200 and {d.arm for d in batch} == set(ARMS)
    slate = await _decide(client, experiment, k=2, fallback=["blue", "control"])
    assert len(set(slate.arms)) == 2 and slate.arm == slate.arms[0] and not slate.fallback
    assert slate.propensity == pytest.approx(1 / 3 * 1 / 2)
    assert slate.position_propensities == pytest.approx((1 / 3, 1 / 2))
    sticky = [await _decide(client, experiment, unit="user-42", sticky=True) for _ in range(4)]
    assert len({d.arm for d in sticky}) == 1 and all(d.sticky for d in sticky)

    events = _events(300, seed=1)
    for event_id, arm, reward in events:
        assert client.reward(experiment, arm, reward, event_id=event_id) == event_id
    generated = client.reward(experiment, decision.arm, 1, decision_id=decision.decision_id)
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    client.reward(experiment, "purple", 1.0)  # no such arm
    client.reward(experiment, "blue", 2.0)  # outside [0, 1] for a bernoulli experiment
    assert await _flush(client, 10)

    expected = _distinct_per_arm(events) + Counter({decision.arm: 1})
    assert _observations(url, experiment, 241) == expected
    stats = client.stats
    assert (stats.enqueued, stats.sent, stats.accepted, stats.duplicates) == (303, 303, 241, 60)
    assert (stats.rejected, stats.buffered, stats.retries, stats.undelivered) == (2, 0, 0, 0)
    assert (stats.decisions, stats.fallbacks) == (1 + 200 + 1 + 4, 0)
    assert sorted(r.event["arm"] for r in rejected) == ["blue", "purple"]
    assert all(r.status is None for r in rejected)
    assert any("[0, 1]" in r.reason for r in rejected)


async def test_a_contextual_decision_and_its_reward(
    kind: str, clients: ClientFactory, shared_service: ServiceProcess
) -> None:
    url = shared_service.url
    experiment = f"c{uuid.uuid4().hex[:12]}"
    model = {"type": "linear", "features": [
        {"name": "region", "type": "categorical", "values": ["eu", "us"]}]}
    status, body = _call(url, "POST", "/v1/experiments", {
        "id": experiment, "arms": list(ARMS), "reward": "bernoulli", "model": model})
    assert status == 201, body
    rejected: list[Rejected] = []
    # A generous timeout: this test is about the context reaching the service, not speed.
    client = clients(kind, url, flush_interval=0.05, decision_timeout=10.0,
                     on_rejected=rejected.extend)
    context = {"region": "us"}
    decision = await _decide(client, experiment, context=context, fallback="control")
    assert not decision.fallback and decision.propensity == pytest.approx(1 / 3)
    client.reward(experiment, decision.arm, 1.0, decision_id=decision.decision_id,
                  context=context)
    client.reward(experiment, decision.arm, 1.0, decision_id=decision.decision_id,
                  context={"region": "eu"})  # not the context it was served for
    with pytest.raises(InvalidRequest, match="context: expected an object"):
        client.reward(experiment, decision.arm, 1.0, context=["us"])  # type: ignore[arg-type]
    assert await _flush(client, 10)
    assert _observations(url, experiment, 1) == Counter({decision.arm: 1})
    assert [r.event["context"] for r in rejected] == [{"region": "eu"}]
    assert "and this context" in rejected[0].reason
    await _close(client)


async def test_a_guardrail_metric_s_reward(
    kind: str, clients: ClientFactory, shared_service: ServiceProcess
) -> None:
    url = shared_service.url
    experiment = f"g{uuid.uuid4().hex[:12]}"
    status, body = _call(url, "POST", "/v1/experiments", {
        "id": experiment, "arms": list(ARMS), "reward": "bernoulli", "control": "control",
        "guardrails": [{"metric": "revenue", "kind": "gaussian", "direction": "higher",
                        "threshold": {"relative": -0.02}}]})
    assert status == 201, body
    rejected: list[Rejected] = []
    client = clients(kind, url, flush_interval=0.05, on_rejected=rejected.extend)
    client.reward(experiment, "blue", 12.5, metric="revenue")
    client.reward(experiment, "blue", 1.0)
    client.reward(experiment, "blue", 1.0, metric="latency")  # not a guardrail of it
    with pytest.raises(InvalidRequest, match="metric: 'Revenue!' is not a valid metric name"):
        client.reward(experiment, "blue", 1.0, metric="Revenue!")
    assert await _flush(client, 10)
    assert _observations(url, experiment, 1) == Counter({"blue": 1})
    status, stats = _call(url, "GET", f"/v1/experiments/{experiment}/stats")
    [blue] = [arm for arm in stats["arms"] if arm["arm"] == "blue"]
    assert blue["guardrails"]["revenue"]["n"] == 1
    assert [r.event["metric"] for r in rejected] == ["latency"]
    await _close(client)


async def test_an_unreachable_service_costs_nothing_and_loses_nothing(
    kind: str, clients: ClientFactory
) -> None:
    undelivered: list[Rejected] = []
    client = clients(kind, f"http://127.0.0.1:{free_port()}", decision_timeout=1.0,
                     breaker_threshold=3, breaker_cooldown=0.2, fallbacks={"hero": "control"},
                     batch_size=10, max_buffer=10, retry_backoff=0.02,
                     on_rejected=undelivered.extend)
    for _ in range(3):  # connection refused: no waiting out the timeout
        decision, elapsed = await _timed_decide(client, "hero")
        _assert_fallback(decision, "no answer: cannot connect: connection refused")
        assert elapsed < 0.5
    assert client.circuit_open
    decision, elapsed = await _timed_decide(client, "hero")
    _assert_fallback(decision, "circuit open")
    assert elapsed < 0.05
    slate = await _decide(client, "hero", k=2, fallback=["green", "blue", "control"])
    assert slate.fallback and slate.arms == ("green", "blue") and slate.arm == "green"
    with pytest.raises(Unavailable, match="no fallback"):
        await _decide(client, "other")
    await asyncio.sleep(0.25)  # the cooldown: one probe goes out, fails, and reopens it
    decision, _ = await _timed_decide(client, "hero")
    _assert_fallback(decision, "no answer")
    assert client.circuit_open

    ids = [client.reward("hero", "blue", 1.0) for _ in range(10)]
    with pytest.raises(BufferFull, match="max_buffer=10"):
        client.reward("hero", "blue", 1.0)
    assert not await _flush(client, 0.2)
    stats = client.stats
    assert (stats.enqueued, stats.buffered, stats.buffer_full) == (10, 10, 1)
    assert stats.retries > 0 and stats.fallbacks == 6 and stats.decisions == 0
    await _close(client, 0.3)
    # Never silently lost: each one reported, with its id (resending it later is safe).
    assert sorted(r.event["id"] for r in undelivered) == sorted(ids)
    assert all("not delivered" in r.reason for r in undelivered)
    assert (client.stats.undelivered, client.stats.buffered) == (10, 0)
    with pytest.raises(ClientClosed):
        client.reward("hero", "blue", 1.0)
    with pytest.raises(ClientClosed):
        await _decide(client, "hero")


async def test_a_hung_service_costs_a_decision_its_timeout_and_a_reward_nothing(
    kind: str, clients: ClientFactory, shared_service: ServiceProcess, experiment: str
) -> None:
    timeout = 0.15
    client = clients(kind, shared_service.url, decision_timeout=timeout, breaker_threshold=3,
                     breaker_cooldown=0.5, events_timeout=0.2, flush_interval=0.02,
                     batch_size=5, max_buffer=20, retry_backoff=0.05, retry_backoff_max=0.1)
    assert not (await _decide(client, experiment)).fallback
    os.kill(shared_service.process.pid, signal.SIGSTOP)
    try:
        for _ in range(3):  # the service accepts connections (the kernel does) but never answers
            decision, elapsed = await _timed_decide(client, experiment)
            _assert_fallback(decision, f"no answer: timed out after {timeout:g} s")
            assert timeout - 0.02 <= elapsed < timeout + TIMEOUT_MARGIN_S
        decision, elapsed = await _timed_decide(client, experiment)
        _assert_fallback(decision, "circuit open")
        assert elapsed < 0.05
        # Rewards only go into the buffer, whatever the sender is stuck on ...
        started = time.monotonic()
        ids = [client.reward(experiment, "blue", 1.0) for _ in range(20)]
        assert time.monotonic() - started < 0.05
        # ... until it is full.
        with pytest.raises(BufferFull):
            client.reward(experiment, "blue", 1.0)
        # The first batch's attempts time out, one after another, unanswered.
        await asyncio.sleep(0.6)
    finally:
        os.kill(shared_service.process.pid, signal.SIGCONT)
    assert await _flush(client, 15)
    await asyncio.sleep(0.5)  # the breaker's cooldown: the next call probes, and succeeds
    assert not (await _decide(client, experiment)).fallback
    assert not client.circuit_open
    stats = client.stats
    # Requests queued while the service was stopped may or may not be applied when it resumes
    # (their connections were closed by the client's timeout): when one is, the retry that
    # gets an answer is told "duplicates". Either way each id counts once.
    assert stats.retries >= 1 and 0 <= stats.duplicates <= 5 and stats.rejected == 0
    assert (stats.accepted + stats.duplicates, len(set(ids))) == (20, 20)
    assert (stats.fallbacks, stats.buffer_full, stats.decisions) == (4, 1, 2)
    assert _observations(shared_service.url, experiment, 20) == Counter({"blue": 20})


async def test_retries_through_a_killed_service_count_every_event_once(
    kind: str, clients: ClientFactory, service_process: StartService
) -> None:
    first = service_process()
    _create(first.url, "hero")
    client = clients(kind, first.url, flush_interval=0.02, batch_size=50, events_timeout=2.0,
                     retry_backoff=0.05, retry_backoff_max=0.4)
    events = _events(1500, seed=2)

    async def produce() -> None:  # a steady stream for about three seconds
        for index, (event_id, arm, reward) in enumerate(events):
            client.reward("hero", arm, reward, event_id=event_id)
            if index % 10 == 9:
                await asyncio.sleep(0.02)

    producer = asyncio.create_task(produce())
    await asyncio.sleep(0.6)
    first.process.kill()  # SIGKILL: no goodbye, whatever it was doing
    await asyncio.to_thread(first.process.wait)
    delivered_before = client.stats.sent
    second = await asyncio.to_thread(service_process, port=first.port)
    await producer
    assert await _flush(client, 30)

    stats = client.stats
    assert 0 < delivered_before < len(events)
    assert stats.retries > 0 and stats.rejected == 0 and stats.buffered == 0
    # A batch the first service applied without its answer getting out comes back as
    # duplicates: the client may count fewer accepted, the service never more.
    assert stats.accepted + stats.duplicates == len(events) and stats.duplicates >= 300
    expected = _distinct_per_arm(events)
    assert sum(expected.values()) == 1200
    assert _observations(second.url, "hero", 1200) == expected


async def test_close_delivers_what_is_buffered(
    kind: str, clients: ClientFactory, shared_service: ServiceProcess, experiment: str
) -> None:
    url = shared_service.url
    events = _events(25, seed=3)
    client = clients(kind, url, flush_interval=60)  # nothing goes out by itself

    async def fill() -> None:
        for event_id, arm, reward in events:
            client.reward(experiment, arm, reward, event_id=event_id)
        await asyncio.sleep(0.3)
        assert client.stats.buffered == 25 and not _counts(url, experiment)

    if isinstance(client, AsyncBanditClient):
        async with client:
            await fill()
    else:
        with client:
            await fill()
    assert (client.stats.accepted, client.stats.duplicates, client.stats.buffered) == (20, 5, 0)
    assert _observations(url, experiment, 20) == _distinct_per_arm(events)
    await _close(client)  # idempotent
    with pytest.raises(ClientClosed):
        client.reward(experiment, "blue", 1.0)


def test_the_sync_client_delivers_at_interpreter_exit(
    shared_service: ServiceProcess, experiment: str
) -> None:
    script = ("import sys\nfrom bandit_client import BanditClient\n"
              "client = BanditClient(sys.argv[1], flush_interval=60)\n"
              "for i in range(7):\n    client.reward(sys.argv[2], 'green', i % 2)\n")
    subprocess.run([sys.executable, "-c", script, shared_service.url, experiment], check=True,
                   timeout=60)
    assert _observations(shared_service.url, experiment, 7) == Counter({"green": 7})


async def test_a_503_is_retried_no_sooner_than_retry_after_and_counts_once(
    clients: ClientFactory, service_process: StartService, scratch_dir: Path
) -> None:
    redis = RedisServer(scratch_dir / "redis", extra=("--appendonly", "yes",
                                                      "--appendfsync", "always"))
    redis.start()
    try:
        service = service_process(redis=redis.url, extra_env={"BANDIT_REDIS_TIMEOUT_S": "0.5"})
        _create(service.url, "hero")
        pair = [clients(kind, service.url, flush_interval=0.02, retry_backoff=0.01,
                        retry_backoff_max=0.02) for kind in ("sync", "async")]
        redis.stop()  # writes now answer 503 with Retry-After: 1
        for client in pair:
            for _ in range(10):
                client.reward("hero", "blue", 1.0)
        await asyncio.sleep(2.0)
        # Attempts about a second apart; backing off 10-20 ms alone would mean a hundred.
        assert [1 <= client.stats.retries <= 2 for client in pair] == [True, True]
        redis.start()  # same port, same append-only file
        assert [await _flush(client, 20) for client in pair] == [True, True]
        assert [client.stats.accepted for client in pair] == [10, 10]
        assert _observations(service.url, "hero", 20) == Counter({"blue": 20})
    finally:
        redis.stop()


def _new_key(keys_file: Path, name: str, scopes: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "bandit", "keys", "new", name, "--scopes", scopes,
         "--file", str(keys_file)], capture_output=True, text=True, check=True, timeout=60)
    match = re.search(r"\bbk_[A-Za-z0-9_-]+", result.stdout)
    assert match, result.stdout
    return match.group(0)


async def test_refused_requests_raise_and_are_never_masked_by_the_fallback(
    clients: ClientFactory, service_process: StartService, scratch_dir: Path
) -> None:
    keys_file = scratch_dir / "keys"
    key, read_only = (_new_key(keys_file, "ranker", "decide,read,admin"),
                      _new_key(keys_file, "dashboard", "read"))
    service = service_process(extra_env={"BANDIT_API_KEYS_FILE": str(keys_file)})
    _create(service.url, "hero", key=key)
    _create(service.url, "old", key=key)
    assert _call(service.url, "DELETE", "/v1/experiments/old", key=key)[0] == 200
    fallbacks = dict.fromkeys(("hero", "nope", "old"), "control")
    for kind in ("sync", "async"):
        rejected: list[Rejected] = []
        client = clients(kind, service.url, api_key=key, fallbacks=fallbacks)
        assert not (await _decide(client, "hero")).fallback  # the key was sent
        with pytest.raises(NotFound, match="nope") as unknown:
            await _decide(client, "nope")
        assert (unknown.value.status, unknown.value.code) == (404, "not_found")
        with pytest.raises(NotFound, match="archived"):
            await _decide(client, "old")
        with pytest.raises(InvalidRequest, match="k: 5") as impossible:
            await _decide(client, "hero", k=5, fallback=["a", "b", "c", "d", "e"])
        assert impossible.value.status == 422
        invalid: tuple[DecisionOptions, ...] = ({"unit": ""}, {"sticky": True})
        for bad in invalid:
            with pytest.raises(InvalidRequest) as refused:
                await _decide(client, "hero", **bad)
            assert refused.value.status == 422
        # Refused before sending: an id that cannot even make the URL; counts that shape the
        # fallback too.
        with pytest.raises(InvalidRequest, match="not a valid experiment id") as local:
            await _decide(client, "Hero Banner")
        assert local.value.status is None
        with pytest.raises(InvalidRequest, match="n: "):
            await _allocate(client, "hero", 0)
        with pytest.raises(InvalidRequest, match="k: "):
            await _decide(client, "hero", k=0)
        with pytest.raises(TypeError, match="slate"):
            await _decide(client, "hero", k=2, fallback="control")
        for arm, reward in (("blue", float("nan")), ("Blue Arm", 1.0)):
            with pytest.raises(InvalidRequest):
                client.reward("hero", arm, reward)
        # The service answered every time: no fallback, and the breaker stays shut.
        assert (client.stats.fallbacks, client.circuit_open) == (0, False)

        anonymous = clients(kind, service.url, fallbacks=fallbacks, on_rejected=rejected.extend)
        with pytest.raises(AuthError) as unauthorized:
            await _decide(anonymous, "hero")
        assert unauthorized.value.status == 401
        with pytest.raises(AuthError) as forbidden:
            await _decide(clients(kind, service.url, api_key=read_only), "hero",
                          fallback="control")
        assert forbidden.value.status == 403
        anonymous.reward("hero", "blue", 1.0)  # a whole batch refused: reported, not retried
        assert await _flush(anonymous, 10)
        assert [r.status for r in rejected] == [401]
        assert (anonymous.stats.rejected, anonymous.stats.retries) == (1, 0)


def test_the_clients_copies_of_the_services_limits_are_equal_to_them() -> None:
    """The client is its own distribution and imports nothing of the service, so it keeps
    copies of the limits it checks before sending; they must say what the service says."""
    from bandit_client import _protocol

    from bandit import inputs, model

    assert _protocol.ID_PATTERN.pattern == model.ID_PATTERN.pattern
    assert _protocol.EVENT_ID_PATTERN.pattern == inputs.EVENT_ID_PATTERN.pattern
    assert _protocol.UNIT_PATTERN.pattern == inputs.UNIT_PATTERN.pattern
    assert _protocol.MAX_UNIT_LENGTH == inputs.MAX_UNIT_LENGTH
    assert _protocol.MAX_BATCH == inputs.MAX_EVENTS == inputs.MAX_DECISIONS
    assert _protocol.MAX_SLATE == inputs.MAX_SLATE
    assert _protocol.MAX_PLACEMENTS == inputs.MAX_PLACEMENTS
