"""API keys: the whole endpoint x key matrix, the keys file and command, binding rules."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bandit.api.app import create_app
from bandit.api.auth import KeyRing, KeysFileError, hash_key, is_loopback, key_line, new_key
from bandit.errors import Unauthorized
from bandit.settings import Settings

Client = TestClient[Any, Any]

KEYS = {name: new_key() for name in ("decider", "reader", "admin", "all")}
SCOPES = {"decider": {"decide"}, "reader": {"read"}, "admin": {"admin"},
          "all": {"decide", "read", "admin"}}
KEYS_TEXT = "\n".join(key_line(name, SCOPES[name], key) for name, key in KEYS.items())

EVENT = {"id": "e1", "experiment": "exp", "arm": "a", "reward": 1}
#: Every route, the scope it needs (None: open; "any": any valid key) and a request for it.
MATRIX: list[tuple[str, str, str | None, Any]] = [
    ("POST", "/v1/experiments", "admin", {"id": "new", "arms": ["a", "b"],
                                          "reward": "bernoulli"}),
    ("GET", "/v1/experiments", "read", None),
    ("GET", "/v1/experiments/{id}", "read", None),
    ("PATCH", "/v1/experiments/{id}", "admin", {"version": 1, "exploration": {"epsilon": 0.1}}),
    ("DELETE", "/v1/experiments/{id}", "admin", None),
    ("POST", "/v1/experiments/{id}/unarchive", "admin", None),
    ("POST", "/v1/experiments/{id}/allocate", "decide", {"n": 2}),
    ("GET", "/v1/experiments/{id}/stats", "read", None),
    ("GET", "/v1/experiments/{id}/audit", "read", None),
    ("GET", "/v1/experiments/{id}/history", "read", None),
    ("GET", "/v1/experiments/{id}/log", "read", None),
    ("POST", "/v1/experiments/{id}/advise", "admin", {"exploration": {"epsilon": 0.1},
                                                      "decisions": 200, "reps": 10,
                                                      "traffic_per_s": 10}),
    ("POST", "/v1/events", "decide", {"events": [EVENT]}),
    ("POST", "/v1/assign", "decide", {"unit": "user-1"}),
    ("POST", "/v1/layers", "admin", {"id": "new", "ranges": {}}),
    ("GET", "/v1/layers", "read", None),
    ("GET", "/v1/layers/{id}", "read", None),
    ("PATCH", "/v1/layers/{id}", "admin", {"version": 1, "default": "current"}),
    ("GET", "/v1/layers/{id}/audit", "read", None),
    ("GET", "/v1/whoami", "any", None),
    ("GET", "/metrics", "read", None),
    ("GET", "/healthz", None, None),
    ("GET", "/readyz", None, None),
    ("GET", "/openapi.json", None, None),
    ("GET", "/", None, None),
    ("GET", "/dashboard/{name}", None, None),
]


@pytest.fixture
async def keyed(redis_url: str) -> AsyncIterator[Client]:
    settings = Settings(redis_url=redis_url, refresh_interval_s=0.05, api_keys=KEYS_TEXT)
    async with TestClient(TestServer(create_app(settings, seed=3))) as client:
        yield client


def _bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


_created = iter(range(1_000_000))


async def _fresh_experiment(client: Client) -> str:
    """A new experiment at version 1, so that every attempt starts from the same state."""
    experiment_id = f"exp{next(_created)}"
    response = await client.post("/v1/experiments", headers=_bearer("all"), json={
        "id": experiment_id, "arms": ["a", "b"], "reward": "bernoulli"})
    assert response.status == 201, await response.text()
    return experiment_id


async def test_every_route_is_in_the_matrix(keyed: Client) -> None:
    routes = {(route.method, route.resource.canonical) for route in keyed.app.router.routes()
              if route.resource is not None and route.resource.canonical != "/{tail}"}
    assert routes == {(method, path) for method, path, _, _ in MATRIX}


@pytest.mark.parametrize(("method", "path", "scope", "body"), MATRIX,
                         ids=[f"{m} {p}" for m, p, _, _ in MATRIX])
async def test_auth_matrix(keyed: Client, method: str, path: str, scope: str | None,
                           body: Any) -> None:
    attempts: list[tuple[str, dict[str, str]]] = [
        ("no key", {}),
        ("unknown key", {"Authorization": f"Bearer {new_key()}"}),
        ("not bearer", {"Authorization": f"Basic {KEYS['all']}"}),
        *((name, _bearer(name)) for name in KEYS),
    ]
    for who, headers in attempts:
        experiment_id = await _fresh_experiment(keyed)
        url = path.replace("{id}", experiment_id).replace("{name}", "app.js")
        if path == "/v1/events":
            body = {"events": [{**EVENT, "experiment": experiment_id}]}
        elif path in ("/v1/experiments", "/v1/layers") and method == "POST":
            body = {**body, "id": f"new-{experiment_id}"}
        if path.startswith("/v1/layers/"):  # a fresh layer of that id, holding the experiment
            created = await keyed.post("/v1/layers", headers=_bearer("all"), json={
                "id": experiment_id, "ranges": {experiment_id: [[0, 10000]]}})
            assert created.status == 201, await created.text()
        response = await keyed.request(method, url, json=body, headers=headers)
        text = await response.text()
        if scope is None:
            allowed, expected_refusal = True, None
        elif who not in KEYS:
            allowed, expected_refusal = False, 401
        else:
            allowed = scope == "any" or scope in SCOPES[who]
            expected_refusal = None if allowed else 403
        if allowed:
            assert response.status not in (401, 403), (who, text)
            assert response.status < 400, (who, response.status, text)
        else:
            assert response.status == expected_refusal, (who, response.status, text)
            error = (await response.json())["error"]
            if expected_refusal == 401:
                assert error["code"] == "unauthorized"
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
            else:
                assert error["code"] == "forbidden"
                assert scope is not None and repr(scope) in error["message"]


async def test_refused_requests_change_nothing(keyed: Client) -> None:
    exp = await _fresh_experiment(keyed)
    for headers in ({}, _bearer("reader"), _bearer("decider")):
        assert (await keyed.patch(f"/v1/experiments/{exp}", headers=headers, json={
            "version": 1, "exploration": {"epsilon": 0.5}})).status in (401, 403)
    for headers in ({}, _bearer("reader"), _bearer("admin")):
        assert (await keyed.post("/v1/events", headers=headers, json={
            "events": [{**EVENT, "experiment": exp}]})).status in (401, 403)
    shown = await (await keyed.get(f"/v1/experiments/{exp}", headers=_bearer("reader"))).json()
    assert shown["version"] == 1 and shown["exploration"]["epsilon"] == 0.0
    stats = await (await keyed.get(f"/v1/experiments/{exp}/stats",
                                   headers=_bearer("reader"))).json()
    assert [arm["n"] for arm in stats["arms"]] == [0, 0]


async def test_audit_records_the_key_name(keyed: Client) -> None:
    exp = await _fresh_experiment(keyed)
    patched = await keyed.patch(f"/v1/experiments/{exp}", headers=_bearer("admin"), json={
        "version": 1, "exploration": {"epsilon": 0.2}, "reason": "more exploration"})
    assert patched.status == 200
    entries = (await (await keyed.get(f"/v1/experiments/{exp}/audit",
                                      headers=_bearer("reader"))).json())["entries"]
    assert [(e["actor"], e["action"]) for e in entries] == [("all", "create"),
                                                            ("admin", "update")]


async def test_whoami(keyed: Client, client: Client) -> None:
    mine = await (await keyed.get("/v1/whoami", headers=_bearer("reader"))).json()
    assert mine == {"name": "reader", "scopes": ["read"], "auth": "keys"}
    open_service = await (await client.get("/v1/whoami")).json()
    assert open_service == {"name": "anonymous", "scopes": ["admin", "decide", "read"],
                            "auth": "open"}


async def test_keys_file_is_reloaded_when_it_changes(redis_url: str, tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(key_line("first", {"read"}, KEYS["reader"]) + "\n")
    settings = Settings(redis_url=redis_url, api_keys_file=path)
    async with TestClient(TestServer(create_app(settings))) as client:
        assert (await client.get("/v1/whoami", headers=_bearer("reader"))).status == 200
        assert (await client.get("/v1/whoami", headers=_bearer("admin"))).status == 401
        path.write_text(key_line("second", {"admin"}, KEYS["admin"]) + "\n")
        os.utime(path, (1, 1))  # a different stamp even within the same clock tick
        for _ in range(60):
            if (await client.get("/v1/whoami", headers=_bearer("admin"))).status == 200:
                break
            await asyncio.sleep(0.1)
        assert (await client.get("/v1/whoami", headers=_bearer("admin"))).status == 200
        assert (await client.get("/v1/whoami", headers=_bearer("reader"))).status == 401
        # A bad edit lets nobody in (it never keeps keys the file no longer holds) ...
        path.write_text("this is not a keys file\n")
        os.utime(path, (2, 2))
        await _until_status(client, "admin", 401)
        # ... until it is fixed.
        path.write_text(key_line("second", {"admin"}, KEYS["admin"]) + "\n")
        os.utime(path, (3, 3))
        await _until_status(client, "admin", 200)


async def _until_status(client: Client, key: str, status: int) -> None:
    """Ask whoami with ``key`` until it answers ``status`` (a reload takes up to ~1 s)."""
    for _ in range(60):
        if (await client.get("/v1/whoami", headers=_bearer(key))).status == status:
            return
        await asyncio.sleep(0.1)
    assert (await client.get("/v1/whoami", headers=_bearer(key))).status == status


def test_key_ring_parsing() -> None:
    key = new_key()
    assert key.startswith("bk_") and len(key) > 40 and key != new_key()
    ring = KeyRing.parse(f"# comment\n\n{key_line('svc', ['read', 'decide'], key)}  # note\n",
                         "f")
    principal = ring.authenticate(f"Bearer {key}")
    assert principal.name == "svc" and principal.scopes == {"read", "decide"}
    assert key not in key_line("svc", ["read"], key) and hash_key(key) in key_line(
        "svc", ["read"], key)
    for header in (None, "", "Bearer", "Bearer ", f"Token {key}", f"Bearer {key}x"):
        with pytest.raises(Unauthorized):
            ring.authenticate(header)
    bad = {
        "a read": "expected 'NAME SCOPES sha256:HEX'",
        f"a write {hash_key(key)}": "scopes 'write'",
        "a read md5:00": "is not 'sha256:'",
        f"-a read {hash_key(key)}": "not a valid key name",
        f"a read {hash_key(key)}\na admin {hash_key(key)}": "appears twice",
    }
    for text, message in bad.items():
        with pytest.raises(KeysFileError, match=message):
            KeyRing.parse(text, "f")
    with pytest.raises(KeysFileError, match="no keys in it"):
        KeyRing.load(None, "# only a comment")
    with pytest.raises(KeysFileError, match="cannot read"):
        KeyRing.load(Path("/nonexistent/keys"), None)
    assert not KeyRing.load(None, None).enabled


def test_loopback_addresses() -> None:
    assert all(is_loopback(host) for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]",
                                              "localhost"))
    assert not any(is_loopback(host) for host in ("0.0.0.0", "::", "10.0.0.1",
                                                  "example.com", ""))


def _bandit(*arguments: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bandit", *arguments], capture_output=True,
                          text=True, timeout=60, check=False, **kwargs)


def test_keys_command(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    made = _bandit("keys", "new", "ranker", "--scopes", "decide", "--file", str(path))
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("bk_") and key not in path.read_text()
    assert (path.stat().st_mode & 0o777) == 0o600
    assert _bandit("keys", "new", "ops", "--scopes", "admin,read", "--file",
                   str(path)).returncode == 0
    ring = KeyRing.load(path, None)
    assert ring.authenticate(f"Bearer {key}").scopes == {"decide"}
    listed = _bandit("keys", "list", "--file", str(path))
    assert listed.stdout.splitlines() == ["ranker\tdecide", "ops\tread,admin"]
    again = _bandit("keys", "new", "ranker", "--scopes", "read", "--file", str(path))
    assert again.returncode == 2 and "already has a key named 'ranker'" in again.stderr
    wrong = _bandit("keys", "new", "x", "--scopes", "write", "--file", str(path))
    assert wrong.returncode == 2 and "scopes 'write'" in wrong.stderr
    assert _bandit("keys", "revoke", "ranker", "--file", str(path)).returncode == 0
    assert KeyRing.load(path, None).names == ["ops"]
    missing = _bandit("keys", "revoke", "ranker", "--file", str(path))
    assert missing.returncode == 2 and "no key named 'ranker'" in missing.stderr


def test_serve_refuses_a_public_address_without_keys(redis_url: str, tmp_path: Path) -> None:
    refused = _bandit("serve", "--host", "0.0.0.0", "--port", "0", "--redis", redis_url,
                      env={k: v for k, v in os.environ.items() if not k.startswith("BANDIT_")})
    assert refused.returncode == 2
    assert "refusing to serve 0.0.0.0 without API keys" in refused.stderr
    bad_file = tmp_path / "keys"
    bad_file.write_text("nonsense\n")
    broken = _bandit("serve", "--port", "0", "--redis", redis_url, "--api-keys", str(bad_file))
    assert broken.returncode == 2 and "expected 'NAME SCOPES sha256:HEX'" in broken.stderr


def test_serve_on_loopback_without_keys_says_it_is_open(service_process: Any) -> None:
    service = service_process()
    assert "serving OPEN on loopback" in service.output()


def test_serve_with_keys_enforces_them(service_process: Any, tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(KEYS_TEXT + "\n")
    service = service_process(extra_env={"BANDIT_API_KEYS_FILE": str(path)})
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{service.url}/v1/experiments", timeout=10)
    assert refused.value.code == 401
    refused.value.close()
    request = urllib.request.Request(f"{service.url}/v1/whoami", headers=_bearer("admin"))
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
