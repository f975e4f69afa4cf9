"""Redis unreachable: decisions keep coming from memory (flagged stale), writes answer 503."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from bandit.api.app import create_app
from bandit.settings import Settings
from tests.support.redis import RedisServer


async def test_decisions_survive_a_redis_outage_and_writes_are_refused(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    settings = Settings(redis_url=server.url, refresh_interval_s=0.05, stale_after_s=0.3,
                        redis_timeout_s=0.5)
    try:
        async with TestClient(TestServer(create_app(settings, seed=5))) as client:
            response = await client.post("/v1/experiments", json={
                "id": "outage", "arms": ["a", "b"], "reward": "bernoulli"})
            assert response.status == 201
            assert (await client.post("/v1/experiments/outage/allocate")).status == 200
            server.stop()
            await asyncio.sleep(0.5)
            during = await client.post("/v1/experiments/outage/allocate", json={"n": 10})
            assert during.status == 200
            assert len((await during.json())["decisions"]) == 10
            assert float(during.headers["X-Bandit-Stale"]) >= 0.3
            writes: list[tuple[str, str, Any]] = [
                ("POST", "/v1/events", {"events": [{"id": "e1", "experiment": "outage",
                                                    "arm": "a", "reward": 1}]}),
                ("POST", "/v1/experiments", {"id": "new", "arms": ["a", "b"],
                                             "reward": "bernoulli"}),
                ("PATCH", "/v1/experiments/outage", {"version": 1,
                                                     "exploration": {"epsilon": 0.2}}),
            ]
            for method, path, body in writes:
                refused = await client.request(method, path, json=body)
                assert refused.status == 503, path
                assert refused.headers["Retry-After"] == "1"
                assert (await refused.json())["error"]["code"] == "store_unavailable"
            assert (await client.get("/readyz")).status == 503
            assert (await client.get("/healthz")).status == 200
            server.start()  # same port, empty data set: recovery without a restart
            for _ in range(100):
                if (await client.get("/readyz")).status == 200:
                    break
                await asyncio.sleep(0.05)
            assert (await client.get("/readyz")).status == 200
            recovered = await client.post("/v1/experiments", json={
                "id": "new", "arms": ["a", "b"], "reward": "bernoulli"})
            assert recovered.status == 201
    finally:
        server.stop()
