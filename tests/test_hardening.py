"""What an attacker or a careless client could do, each through a real server: regressions of
the adversarial run's findings (one test per defect, each of which failed before its fix)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import urllib3
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from bandit.api.app import create_app
from bandit.api.auth import key_line, new_key
from bandit.ops.cli import main
from bandit.settings import Settings
from tests.conftest import ServiceProcess
from tests.support.redis import RedisServer

Client = TestClient[Any, Any]


async def _create(client: Client, experiment_id: str = "exp", arms: int = 3,
                  headers: dict[str, str] | None = None) -> None:
    response = await client.post("/v1/experiments", headers=headers, json={
        "id": experiment_id, "arms": [f"a{i}" for i in range(arms)], "reward": "bernoulli"})
    assert response.status == 201, await response.text()


async def _counts(client: Client, experiment_id: str = "exp") -> list[int]:
    """Observations per arm, once the cache has caught up with every write before the call."""
    await asyncio.sleep(0.2)  # four refresh intervals of the test settings
    body = await (await client.get(f"/v1/experiments/{experiment_id}/stats")).json()
    return [arm["n"] for arm in body["arms"]]


# -- 2. revoking the last API key ------------------------------------------------------------


async def _status_becomes(client: Client, key: str, status: int) -> int:
    """whoami's status with ``key`` once it is ``status``, or after 3 s of reloads."""
    headers = {"Authorization": f"Bearer {key}"}
    for _ in range(30):
        answer = (await client.get("/v1/whoami", headers=headers)).status
        if answer == status:
            return answer
        await asyncio.sleep(0.1)
    return (await client.get("/v1/whoami", headers=headers)).status


async def test_revoking_the_last_key_or_deleting_the_file_lets_nobody_in(
        redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "keys"
    solo, other = new_key(), new_key()
    path.write_text(key_line("solo", {"read"}, solo) + "\n" + key_line("other", {"read"}, other)
                    + "\n")
    settings = Settings(redis_url=redis_url, api_keys_file=path)
    async with TestClient(TestServer(create_app(settings))) as client:
        assert main(["keys", "revoke", "other", "--file", str(path)]) == 0
        assert await _status_becomes(client, other, 401) == 401
        assert await _status_becomes(client, solo, 200) == 200
        # The last key: nobody is let in, neither with the old key nor without one.
        assert main(["keys", "revoke", "solo", "--file", str(path)]) == 0
        assert await _status_becomes(client, solo, 401) == 401
        assert (await client.get("/v1/experiments")).status == 401
        assert "refused (401) until the keys file is fixed" in caplog.text
        # A key added again lets its holder in; deleting the file shuts everyone out again.
        fresh = new_key()
        path.write_text(key_line("fresh", {"read"}, fresh) + "\n")
        assert await _status_becomes(client, fresh, 200) == 200
        path.unlink()
        assert await _status_becomes(client, fresh, 401) == 401
        assert (await client.get("/v1/experiments")).status == 401


# -- 3. one malformed event must not fail its batch ------------------------------------------

NASTY = [["a"], {"a": 1}, None, 1, 1.5, True, "", "x" * 300, [], {}]


async def test_events_with_fields_of_any_json_type_are_rejected_one_by_one(
        client: Client) -> None:
    await _create(client)
    good = [{"id": f"good-{i}", "experiment": "exp", "arm": "a0", "reward": 1}
            for i in range(3)]
    batch: list[Any] = list(good)
    for field in ("id", "experiment", "arm", "reward", "decision_id", "unit", "ts"):
        for value in NASTY:
            batch.append({"id": f"bad-{len(batch)}", "experiment": "exp", "arm": "a0",
                          "reward": 1, field: value})
    response = await client.post("/v1/events", json={"events": batch})
    assert response.status == 200, await response.text()
    result = await response.json()
    rejected = {item["index"] for item in result["rejected"]}
    assert not rejected & {0, 1, 2}
    assert result["accepted"] + result["duplicates"] + len(rejected) == len(batch)
    assert (await _counts(client))[0] == result["accepted"]


_JSON = st.recursive(
    # Finite floats only: NaN and Infinity are not JSON (the encoder would send a body the
    # service rightly refuses whole, with 400).
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6)
_FIELDS = ("id", "experiment", "arm", "reward", "decision_id", "unit", "ts", "context")


@pytest.fixture(scope="module")
def open_service(tmp_path_factory: pytest.TempPathFactory) -> Any:
    redis_server = RedisServer(tmp_path_factory.mktemp("hardening-redis"))
    redis_server.start()
    service = ServiceProcess(redis_server.url)
    service.wait_ready()
    http = urllib3.PoolManager()
    response = http.request("POST", f"{service.url}/v1/experiments", json={
        "id": "fuzz", "arms": ["a0", "a1"], "reward": "bernoulli"})
    assert response.status == 201, response.data
    yield service, http
    service.stop()
    redis_server.stop()


_sent = iter(range(10**9))


@hypothesis_settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.dictionaries(st.sampled_from(_FIELDS), _JSON, min_size=1))
def test_arbitrary_json_in_any_field_never_fails_the_good_events(
        open_service: Any, values: dict[str, Any]) -> None:
    service, http = open_service
    number = next(_sent)
    good = {"id": f"good-{number}", "experiment": "fuzz", "arm": "a0", "reward": 1}
    odd = {"id": f"odd-{number}", "experiment": "fuzz", "arm": "a1", "reward": 0, **values}
    response = http.request("POST", f"{service.url}/v1/events", json={"events": [good, odd]})
    assert response.status == 200, response.data
    result = json.loads(response.data)
    assert result["accepted"] >= 1 and 0 not in {r["index"] for r in result["rejected"]}
    assert result["accepted"] + result["duplicates"] + len(result["rejected"]) == 2


# -- 6. a key that is not UTF-8 --------------------------------------------------------------


async def test_a_key_that_is_not_utf8_is_401(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, api_keys=key_line("k", {"read"}, new_key()))
    async with TestClient(TestServer(create_app(settings))) as client:
        port = client.server.port
        assert port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v1/experiments HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Authorization: Bearer \xff\xfe\xfd\r\nConnection: close\r\n\r\n")
        answer = await reader.read()
        writer.close()
        await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401"), head
    assert json.loads(body)["error"]["message"] == "the API key is not valid"


# -- 7. a unit string that collides with another unit's slate --------------------------------


@pytest.mark.parametrize("unit", ["victim\x1fk=2", "tab\tunit", "new\nline", "nul\x00", "del\x7f"])
async def test_units_with_control_characters_are_refused(client: Client, unit: str) -> None:
    await _create(client)
    response = await client.post("/v1/experiments/exp/allocate",
                                 json={"unit": unit, "sticky": True})
    assert response.status == 422
    assert "unit: control characters" in (await response.json())["error"]["message"]
    events = await (await client.post("/v1/events", json={"events": [
        {"id": "u1", "experiment": "exp", "arm": "a0", "reward": 1, "unit": unit}]})).json()
    assert events["accepted"] == 0
    assert "unit: control characters" in events["rejected"][0]["error"]


async def test_a_slate_unit_and_a_single_unit_never_share_an_assignment(client: Client) -> None:
    await _create(client, arms=4)
    slate = await (await client.post("/v1/experiments/exp/allocate",
                                     json={"unit": "victim", "sticky": True, "k": 2})).json()
    single = await (await client.post("/v1/experiments/exp/allocate",
                                      json={"unit": "victim", "sticky": True})).json()
    assert "arms" in slate["decisions"][0] and "arm" in single["decisions"][0]
    assert single["decisions"][0]["propensity"] == pytest.approx(0.25)


# -- 8. an event id that looks like a decision's reward marker -------------------------------


async def test_an_event_id_cannot_block_a_decisions_reward(client: Client) -> None:
    await _create(client)
    [decision] = (await (await client.post("/v1/experiments/exp/allocate")).json())["decisions"]
    index = int(decision["arm"][1:])
    squatter = {"id": f"@{decision['decision_id']}:{index}", "experiment": "exp",
                "arm": decision["arm"], "reward": 0}
    squatted = await (await client.post("/v1/events", json={"events": [squatter]})).json()
    assert squatted["accepted"] == 0
    assert "id: may not start with '@'" in squatted["rejected"][0]["error"]
    real = {"id": "click-1", "experiment": "exp", "arm": decision["arm"], "reward": 1,
            "decision_id": decision["decision_id"]}
    assert (await (await client.post("/v1/events", json={"events": [real]})).json()) == {
        "accepted": 1, "duplicates": 0, "rejected": []}


# -- 1. one request's work is bounded --------------------------------------------------------


async def test_an_answer_places_at_most_ten_thousand_arms(client: Client) -> None:
    """1,000 arms of 64 characters and n=10,000 slates of k=1,000 once took 10 s and 885 MB,
    the event loop blocked throughout."""
    arms = [f"{i:04d}" + "x" * 60 for i in range(1000)]
    response = await client.post("/v1/experiments", json={
        "id": "wide", "arms": arms, "reward": "bernoulli"})
    assert response.status == 201
    refused = await client.post("/v1/experiments/wide/allocate", json={"n": 10_000, "k": 1000})
    assert refused.status == 422
    assert (await refused.json())["error"]["message"] == (
        "n * k: 10000 slates of 1000 arms place 10,000,000 arms, over the cap of 10,000 per "
        "request; ask for fewer slates per request")
    largest = await client.post("/v1/experiments/wide/allocate", json={"n": 10, "k": 1000})
    assert largest.status == 200
    decisions = (await largest.json())["decisions"]
    assert [len(d["arms"]) for d in decisions] == [1000] * 10
    assert (await client.post("/v1/experiments/wide/allocate", json={"n": 11, "k": 1000})
            ).status == 422


# -- 9. a slate's reward must name an arm the slate showed -----------------------------------


@pytest.mark.parametrize("strict", [False, True])
async def test_a_slate_reward_names_an_arm_of_the_slate(settings: Settings, strict: bool) -> None:
    async with TestClient(TestServer(create_app(
            settings.with_(require_decision_ids=strict), seed=9))) as client:
        await _create(client, arms=3)
        answer = await (await client.post("/v1/experiments/exp/allocate",
                                          json={"n": 1, "k": 1})).json()
        [slate] = answer["decisions"]
        [shown] = slate["arms"]
        others = [arm for arm in ("a0", "a1", "a2") if arm != shown]
        batch = [{"id": f"r-{arm}", "experiment": "exp", "arm": arm, "reward": 1,
                  "decision_id": slate["decision_id"]} for arm in [*others, shown]]
        result = await (await client.post("/v1/events", json={"events": batch})).json()
        assert result["accepted"] == 1
        assert [r["index"] for r in result["rejected"]] == [0, 1]
        assert all("not a decision this service served" in r["error"]
                   for r in result["rejected"])
        counts = await _counts(client)
        assert counts == [1 if arm == shown else 0 for arm in ("a0", "a1", "a2")]


# -- 4. cross-origin writes and DNS rebinding ------------------------------------------------

EVIL = "https://evil.example"


async def test_a_body_that_is_not_json_is_415_and_changes_nothing(client: Client) -> None:
    """A page on another site can send text/plain or a form to 127.0.0.1 without asking."""
    await _create(client)
    event = json.dumps({"events": [{"id": "x1", "experiment": "exp", "arm": "a0",
                                    "reward": 1}]})
    for content_type in ("text/plain", "application/x-www-form-urlencoded",
                         "multipart/form-data; boundary=x"):
        response = await client.post("/v1/events", data=event,
                                     headers={"Content-Type": content_type})
        assert response.status == 415, content_type
        body = await response.json()
        assert body["error"]["code"] == "unsupported_media_type"
        assert "Content-Type must be application/json" in body["error"]["message"]
    created = await client.post("/v1/experiments", data="id=evil&arms=a&arms=b",
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert created.status == 415
    assert [e["id"] for e in (await (await client.get("/v1/experiments")).json())[
        "experiments"]] == ["exp"]
    assert await _counts(client) == [0, 0, 0]
    # JSON with a charset is JSON; an empty allocate body needs no Content-Type at all.
    response = await client.post("/v1/events", data=event,
                                 headers={"Content-Type": "application/json; charset=utf-8"})
    assert (await response.json())["accepted"] == 1
    assert (await client.post("/v1/experiments/exp/allocate")).status == 200


async def test_requests_from_another_origin_are_refused(client: Client) -> None:
    await _create(client)
    requests: list[tuple[str, str, Any]] = [("POST", "/v1/events", {"events": []}),
                                            ("GET", "/v1/experiments", None),
                                            ("POST", "/v1/experiments/exp/allocate", None),
                                            ("OPTIONS", "/v1/events", None)]
    for method, path, body in requests:
        response = await client.request(method, path, json=body, headers={"Origin": EVIL})
        assert response.status == 403, (method, path)
        assert "cross-origin request from 'https://evil.example' refused" in (
            await response.json())["error"]["message"]
        assert "Access-Control-Allow-Origin" not in response.headers
    for origin in ("null", "http://127.0.0.1:1"):
        assert (await client.get("/v1/experiments", headers={"Origin": origin})).status == 403
    # The service's own pages (the dashboard) send their own origin.
    port = client.server.port
    own = await client.get("/v1/experiments", headers={"Origin": f"http://127.0.0.1:{port}"})
    assert own.status == 200


async def test_an_open_service_answers_only_its_own_host_names(client: Client) -> None:
    """DNS rebinding: a page at evil.example whose name now resolves to 127.0.0.1."""
    port = client.server.port
    response = await client.get("/v1/experiments", headers={"Host": f"evil.example:{port}"})
    assert response.status == 403
    assert "Host 'evil.example:" in (await response.json())["error"]["message"]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "127.0.0.1", f"[::1]:{port}"):
        assert (await client.get("/v1/experiments", headers={"Host": host})).status == 200, host


async def test_a_keyed_service_answers_any_host_name(redis_url: str) -> None:
    """Behind a load balancer a keyed service is reached by any name; pages have no key."""
    key = new_key()
    settings = Settings(redis_url=redis_url, api_keys=key_line("k", {"read"}, key))
    async with TestClient(TestServer(create_app(settings))) as client:
        response = await client.get("/v1/experiments", headers={
            "Host": "bandit.internal.example", "Authorization": f"Bearer {key}"})
        assert response.status == 200


async def test_allowed_origins_get_cors_headers(settings: Settings) -> None:
    allowed = "https://app.example"
    configured = settings.with_(cors_origins=f"{allowed}, https://other.example")
    async with TestClient(TestServer(create_app(configured))) as client:
        preflight = await client.options("/v1/events", headers={
            "Origin": allowed, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert preflight.status == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == allowed
        assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
        assert "Content-Type" in preflight.headers["Access-Control-Allow-Headers"]
        response = await client.get("/v1/experiments", headers={"Origin": allowed})
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Origin"] == allowed
        assert response.headers["Vary"] == "Origin"
        assert (await client.get("/v1/experiments", headers={"Origin": EVIL})).status == 403


# -- 10. what the service tells strangers ----------------------------------------------------


async def test_the_server_header_names_no_versions(client: Client) -> None:
    response = await client.get("/healthz")
    assert response.headers["Server"] == "bandit"
    port = client.server.port
    assert port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GARBAGE / HTTP/1.1\r\n\r\n")  # aiohttp's own 400, no handler of ours
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.0 400"), answer[:100]
    assert b"\r\nServer: bandit\r\n" in answer
    assert b"aiohttp" not in answer and b"Python" not in answer


async def test_readyz_names_no_address_when_redis_is_down(settings: Settings) -> None:
    from bandit.store.embedded import free_port

    closed = settings.with_(redis_url=f"redis://127.0.0.1:{free_port()}/0",
                            redis_timeout_s=0.2)
    async with TestClient(TestServer(create_app(closed))) as client:
        response = await client.get("/readyz")
        assert response.status == 503
        assert await response.json() == {"status": "unavailable",
                                         "reason": "Redis is unreachable"}


async def test_the_dashboard_may_not_be_framed_and_loads_only_its_own_files(
        client: Client) -> None:
    for path in ("/", "/dashboard/app.js"):
        response = await client.get(path)
        assert response.status == 200
        policy = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def _healthz(port: int) -> bytes:
    """The status line of GET /healthz on a new connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        return sock.recv(4096)


def _until(answer: Callable[[], bytes], prefix: bytes, timeout_s: float = 10.0) -> bytes:
    """``answer()`` until it starts with ``prefix`` (the service's accept loop is async)."""
    deadline = time.monotonic() + timeout_s
    while not (latest := answer()).startswith(prefix) and time.monotonic() < deadline:
        time.sleep(0.02)
    return latest


def test_connections_over_the_cap_are_refused_and_logged_once(
        service_process: Any) -> None:
    """19,950 slowloris connections once exhausted the file descriptors: /healthz timed out
    and 62,079 tracebacks filled the log. Over the cap, a connection gets a 503 at once."""
    service = service_process(extra_env={"BANDIT_MAX_CONNECTIONS": "20"})
    port = service.port
    held = []
    try:
        for _ in range(20):  # slowloris: a request line, never finished
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
            held.append(sock)
        first = _until(lambda: _healthz(port), b"HTTP/1.1 503")
        assert first.startswith(b"HTTP/1.1 503") and b"too many open connections" in first
        assert all(_healthz(port).startswith(b"HTTP/1.1 503") for _ in range(50))
    finally:
        for sock in held:
            sock.close()
    # Once the held connections close, the service answers again.
    assert _until(lambda: _healthz(port), b"HTTP/1.0 200").startswith(b"HTTP/1.0 200")
    refusals = [line for line in service.output().splitlines() if "over the cap of 20" in line]
    assert len(refusals) == 1, refusals


# -- a write that reaches a replica (the sentinel failover test's rare 500) ------------------


async def test_a_write_on_a_replica_is_503_not_500(
        redis_server: RedisServer, redis_url: str, tmp_path: Path) -> None:
    """A primary demoted by a failover refuses script writes with a script error naming
    READONLY (not redis-py's ReadOnlyError): that was a 500, and a client stops on a 500."""
    replica = RedisServer(tmp_path / "replica",
                          extra=("--replicaof", "127.0.0.1", str(redis_server.port)))
    replica.start()
    try:
        async with TestClient(TestServer(create_app(Settings(redis_url=redis_url)))) as client:
            await _create(client)
        on_replica = Settings(redis_url=replica.url, refresh_interval_s=0.05)
        async with TestClient(TestServer(create_app(on_replica))) as client:
            deadline = time.monotonic() + 10  # until the replica has synced the experiment
            while (await client.get("/v1/experiments/exp")).status != 200:
                assert time.monotonic() < deadline, "the replica did not sync"
                await asyncio.sleep(0.05)
            for path, body in [
                    ("/v1/events", {"events": [{"id": "e1", "experiment": "exp", "arm": "a0",
                                                "reward": 1}]}),
                    ("/v1/experiments", {"id": "other", "arms": ["a", "b"],
                                         "reward": "bernoulli"})]:
                response = await client.post(path, json=body)
                assert response.status == 503, await response.text()
                assert "the node is a replica" in (await response.json())["error"]["message"]
                assert response.headers["Retry-After"] == "1"
    finally:
        replica.stop()
