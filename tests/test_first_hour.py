"""An operator's first hour: regressions of what a new user ran into, each through a real server
(every test here failed before its fix), and the experiment metadata operators asked for."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bandit.api import bodies
from bandit.serving.advisor import MAX_SECONDS, estimated_seconds

Client = TestClient[Any, Any]


async def _create(client: Client, **extra: Any) -> dict[str, Any]:
    response = await client.post("/v1/experiments", json={
        "id": "hero", "arms": ["control", "blue", "green"], "reward": "bernoulli", **extra})
    assert response.status == 201, await response.text()
    document: dict[str, Any] = await response.json()
    return document


async def _audit_actions(client: Client) -> list[str]:
    body = await (await client.get("/v1/experiments/hero/audit")).json()
    return [entry["action"] for entry in body["entries"]]


async def test_a_change_that_changes_nothing_keeps_the_version(client: Client) -> None:
    await _create(client)
    # Resuming an active arm, and setting a value to what it is, change nothing.
    for change in ({"arms": {"resume": ["blue"]}}, {"exploration": {"epsilon": 0.0}}, {}):
        response = await client.patch("/v1/experiments/hero", json={"version": 1, **change})
        assert response.status == 200, await response.text()
        body = await response.json()
        assert (body["version"], body["changed"], body["changes"]) == (1, False, {})
    assert await _audit_actions(client) == ["create"]
    # So another operator's edit based on version 1 still applies.
    response = await client.patch("/v1/experiments/hero", json={
        "version": 1, "arms": {"pause": ["blue"]}})
    body = await response.json()
    assert (body["version"], body["changed"]) == (2, True)
    assert body["changes"] == {"arms.blue": {"old": "active", "new": "paused"}}
    # A stale version is still refused, even for a change that would change nothing.
    response = await client.patch("/v1/experiments/hero", json={
        "version": 1, "arms": {"pause": ["blue"]}})
    assert response.status == 409


async def test_archive_then_unarchive_serves_again_and_is_audited(client: Client) -> None:
    await _create(client)
    archived = await (await client.delete("/v1/experiments/hero")).json()
    assert (archived["status"], archived["version"], archived["changed"]) == ("archived", 2, True)
    again = await (await client.delete("/v1/experiments/hero")).json()
    assert (again["version"], again["changed"]) == (2, False)
    # Archived: every request that needs a live experiment gets the same 404, naming the way
    # back; re-creating the id is still a conflict.
    for method, path, body in (
            ("POST", "/v1/experiments/hero/allocate", None),
            ("PATCH", "/v1/experiments/hero", {"version": 2, "exploration": {"epsilon": 0.1}}),
            ("POST", "/v1/experiments/hero/advise", {"traffic_per_s": 10})):
        response = await client.request(method, path, json=body)
        assert response.status == 404, (method, path, await response.text())
        message = (await response.json())["error"]["message"]
        assert "is archived" in message and "/v1/experiments/hero/unarchive" in message
    recreate = await client.post("/v1/experiments", json={
        "id": "hero", "arms": ["a", "b"], "reward": "bernoulli"})
    assert recreate.status == 409
    restored = await client.post("/v1/experiments/hero/unarchive")
    assert restored.status == 200, await restored.text()
    body = await restored.json()
    assert (body["status"], body["version"], body["changed"]) == ("active", 3, True)
    assert (await (await client.post("/v1/experiments/hero/unarchive")).json())["changed"] is False
    allocate = await client.post("/v1/experiments/hero/allocate")
    assert allocate.status == 200, await allocate.text()
    assert await _audit_actions(client) == ["create", "archive", "unarchive"]
    audit = await (await client.get("/v1/experiments/hero/audit")).json()
    assert audit["entries"][-1]["changes"] == {"status": {"old": "archived", "new": "active"}}
    missing = await client.post("/v1/experiments/nowhere/unarchive")
    assert missing.status == 404


async def test_pausing_the_control_arm_says_why_it_cannot(client: Client) -> None:
    await _create(client, exploration={"control": {"arm": "control", "share": 0.2}})
    response = await client.patch("/v1/experiments/hero", json={
        "version": 1, "arms": {"pause": ["control"]}})
    assert response.status == 422
    message = (await response.json())["error"]["message"]
    assert "holds a fixed share (0.2)" in message and "must stay active" in message
    assert "set exploration.control to null" in message
    assert "'control' is paused" not in message


async def test_metadata_at_create_by_patch_in_the_list_and_the_audit(client: Client) -> None:
    created = await _create(client, owner="growth team", hypothesis="A blue hero sells more.",
                            tags=["homepage", "q4", "homepage"])
    assert (created["owner"], created["hypothesis"], created["tags"]) == (
        "growth team", "A blue hero sells more.", ["homepage", "q4"])
    response = await client.patch("/v1/experiments/hero", json={
        "version": 1, "owner": "ana@example.com", "tags": ["homepage"], "reason": "handover"})
    body = await response.json()
    assert body["version"] == 2
    assert body["changes"] == {"owner": {"old": "growth team", "new": "ana@example.com"},
                               "tags": {"old": ["homepage", "q4"], "new": ["homepage"]}}
    listed = await (await client.get("/v1/experiments")).json()
    [entry] = listed["experiments"]
    assert (entry["owner"], entry["tags"]) == ("ana@example.com", ["homepage"])
    assert entry["created_at"] <= entry["updated_at"]
    audit = await (await client.get("/v1/experiments/hero/audit")).json()
    assert audit["entries"][0]["changes"]["owner"] == {"old": None, "new": "growth team"}
    assert audit["entries"][1]["changes"]["tags"]["new"] == ["homepage"]
    # Null clears; bad values are refused with the field named, and change nothing.
    cleared = await (await client.patch("/v1/experiments/hero", json={
        "version": 2, "hypothesis": None, "tags": None})).json()
    assert (cleared["hypothesis"], cleared["tags"], cleared["version"]) == (None, [], 3)
    for field, value, words in (("tags", ["Has Space"], "tags[0]"),
                                ("tags", "homepage", "expected a list"),
                                ("owner", "bell\x07", "control characters"),
                                ("hypothesis", "x" * 2001, "at most 2000 characters"),
                                ("owner", 7, "expected a string or null")):
        response = await client.patch("/v1/experiments/hero", json={"version": 3, field: value})
        assert response.status == 422, (field, value)
        assert words in (await response.json())["error"]["message"]
    show = await (await client.get("/v1/experiments/hero")).json()
    assert (show["version"], show["owner"]) == (3, "ana@example.com")


async def test_a_forecast_too_large_says_what_would_fit(client: Client) -> None:
    await _create(client)
    response = await client.post("/v1/experiments/hero/advise", json={
        "traffic_per_s": 10, "decisions": 1_000_000, "reps": 100})
    assert response.status == 422
    message = (await response.json())["error"]["message"]
    found = re.search(r"it fits with decisions ([\d,]+) or fewer \(at 100 reps\), or reps "
                      r"(\d+) or fewer \(at 1,000,000 decisions\)", message)
    assert found, message
    decisions, reps = int(found.group(1).replace(",", "")), int(found.group(2))
    # Both suggestions are the largest that fit the bound, by the same estimate that refused.
    quadrature = 0  # the current and proposed settings have no floors or caps

    def seconds(decisions: int, reps: int) -> float:
        return estimated_seconds(decisions, reps, 3, quadrature)

    assert seconds(decisions, 100) <= MAX_SECONDS < seconds(decisions + 1, 100)
    assert seconds(1_000_000, reps) <= MAX_SECONDS < seconds(1_000_000, reps + 1)
    # And the suggestion is accepted (a small one, so the test runs the forecast quickly).
    small = await client.post("/v1/experiments/hero/advise", json={
        "traffic_per_s": 10, "decisions": 1000, "reps": 10, "seed": 1})
    assert small.status == 200, await small.text()


# -- what a new user's adversarial run found (each failed before its fix) ---------------------


async def test_one_active_arm_is_no_winner(client: Client) -> None:
    await _create(client)
    response = await client.patch("/v1/experiments/hero", json={
        "version": 1, "arms": {"pause": ["blue", "green"]}})
    assert response.status == 200, await response.text()
    stats = await (await client.get("/v1/experiments/hero/stats")).json()
    # P(best) is 1 for the only arm left, on no evidence: that is no call (nor an alert).
    assert stats["winner"] is None
    listed = await (await client.get("/v1/experiments?summary=true")).json()
    assert listed["experiments"][0]["summary"]["winner"] is None


async def test_a_change_on_a_stale_version_is_409_even_if_now_invalid(client: Client) -> None:
    await _create(client)
    body = {"version": 1, "arms": {"add": ["purple"]}}
    assert (await client.patch("/v1/experiments/hero", json=body)).status == 200
    again = await client.patch("/v1/experiments/hero", json=body)  # purple exists now
    assert again.status == 409, await again.text()
    assert "at version 2, not 1" in (await again.json())["error"]["message"]


async def test_reasons_and_metadata_refuse_terminal_escapes_and_bidi_overrides(
        client: Client) -> None:
    await _create(client)
    for field, value in (("reason", "pwn\x1b]0;HACKED\x07"), ("reason", "nul\x00"),
                         ("hypothesis", "a\x85b\x9bc"), ("owner", "\u202eevil")):
        response = await client.patch("/v1/experiments/hero", json={
            "version": 1, "exploration": {"epsilon": 0.1}, field: value})
        assert response.status == 422, (field, value)
        assert f"{field}: control characters" in (await response.json())["error"]["message"]
    shown = await (await client.get("/v1/experiments/hero")).json()
    assert shown["version"] == 1


async def test_tags_are_a_set(client: Client) -> None:
    await _create(client, tags=["b", "a", "b"])
    response = await client.patch("/v1/experiments/hero", json={"version": 1, "tags": ["a", "b"]})
    body = await response.json()
    assert (body["tags"], body["changed"], body["version"]) == (["a", "b"], False, 1)


async def test_creating_over_an_archived_id_says_how_to_get_it_back(client: Client) -> None:
    await _create(client)
    assert (await client.delete("/v1/experiments/hero")).status == 200
    response = await client.post("/v1/experiments", json={
        "id": "hero", "arms": ["a", "b"], "reward": "bernoulli"})
    assert response.status == 409
    message = (await response.json())["error"]["message"]
    assert "archived" in message and "/v1/experiments/hero/unarchive" in message


async def _raw(client: Client, request: bytes, *, close: bool = False) -> bytes:
    """Send ``request`` as it is on a new connection; the answer, or b"" if ``close``."""
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(request)
        await writer.drain()
        if close:
            return b""
        return await asyncio.wait_for(reader.read(4096), 10)
    finally:
        writer.close()


async def test_a_body_declared_too_large_is_refused_before_it_is_read(client: Client) -> None:
    started = time.monotonic()
    answer = await _raw(client, b"POST /v1/experiments HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                b"Content-Type: application/json\r\n"
                                b"Content-Length: 20000000\r\n\r\n{}")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"Content-Length: 20000000" in answer and time.monotonic() - started < 5


async def test_a_body_that_stops_arriving_is_a_400_and_a_hang_up_no_error(
        client: Client, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(bodies, "BODY_TIMEOUT_S", 0.5)
    partial = (b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{}")
    answer = await _raw(client, partial)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"did not arrive within 0.5 s" in answer
    # The sender goes away mid-body: no "unexpected error" (it was logged with a traceback
    # and counted as a 500).
    await _raw(client, partial, close=True)
    await asyncio.sleep(0.3)
    assert "unexpected error" not in caplog.text
    metrics = await (await client.get("/metrics")).text()
    assert 'status="500"' not in metrics
