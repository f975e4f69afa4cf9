"""End to end: the HTTP API driven like a ranking service, and several service processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp.test_utils import TestClient

from tests.conftest import ServiceProcess

Client = TestClient[Any, Any]


async def test_traffic_moves_to_the_best_arm(client: Client) -> None:
    means = np.array([0.04, 0.05, 0.08])
    arms = ["a", "b", "c"]
    response = await client.post("/v1/experiments", json={"id": "play", "arms": arms,
                                                          "reward": "bernoulli"})
    assert response.status == 201
    environment = np.random.default_rng(7)
    served = np.zeros(3)
    shares = []
    total = 0
    for round_number in range(40):
        decisions = (await (await client.post("/v1/experiments/play/allocate",
                                              json={"n": 250})).json())["decisions"]
        if round_number == 0:  # no data yet: identical posteriors, uniform allocation
            assert {round(d["propensity"], 9) for d in decisions} == {round(1 / 3, 9)}
        chosen = np.array([arms.index(d["arm"]) for d in decisions])
        served += np.bincount(chosen, minlength=3)
        rewards = environment.random(chosen.size) < means[chosen]
        batch = [{"id": f"r{round_number}-{i}", "experiment": "play", "arm": arms[arm],
                  "reward": int(reward), "decision_id": d["decision_id"]}
                 for i, (arm, reward, d) in enumerate(zip(chosen, rewards, decisions,
                                                          strict=True))]
        result = await (await client.post("/v1/events", json={"events": batch})).json()
        assert result["accepted"] == len(batch), result["rejected"][:3]
        total += len(batch)
        # Wait until this process's cache has seen the round, so the next one adapts to it.
        while True:
            stats = await (await client.get("/v1/experiments/play/stats")).json()
            if sum(arm["n"] for arm in stats["arms"]) == total:
                break
            await asyncio.sleep(0.01)
        shares.append([arm["share"] for arm in stats["arms"]])
    # 10,000 pulls with gaps of 0.03 and 0.04: Thompson's regret bound puts O(log T / gap^2)
    # pulls (a few hundred to a thousand) on each worse arm; most traffic goes to the best.
    assert served[2] / served.sum() > 0.6
    assert shares[-1][2] > 0.8


async def _create(session: aiohttp.ClientSession, url: str, experiment_id: str,
                  arms: list[str]) -> None:
    async with session.post(f"{url}/v1/experiments", json={
            "id": experiment_id, "arms": arms, "reward": "bernoulli"}) as response:
        assert response.status == 201, await response.text()


async def _stats(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(f"{url}/v1/experiments/fresh/stats") as response:
        assert response.status == 200
        return dict(await response.json())


async def test_a_reward_on_one_process_moves_allocations_on_another_within_a_second(
    service_process: Callable[..., ServiceProcess],
) -> None:
    first, second = service_process(), service_process()
    async with aiohttp.ClientSession() as session:
        await _create(session, first.url, "fresh", ["a", "b"])
        # Both processes now hold the experiment in their caches.
        for url in (first.url, second.url):
            async with session.post(f"{url}/v1/experiments/fresh/allocate") as response:
                assert response.status == 200
        assert (await _stats(session, second.url))["arms"][1]["share"] == 0.5
        delays = []
        for round_number in range(5):
            batch = [{"id": f"x{round_number}-{i}", "experiment": "fresh", "arm": "b",
                      "reward": 1} for i in range(20)]
            before = (await _stats(session, second.url))["arms"][1]["share"]
            sent = time.monotonic()
            async with session.post(f"{first.url}/v1/events",
                                    json={"events": batch}) as response:
                assert (await response.json())["accepted"] == 20
            while (await _stats(session, second.url))["arms"][1]["share"] == before:
                assert time.monotonic() - sent < 1.0, "second process did not see the reward"
                await asyncio.sleep(0.005)
            delays.append(time.monotonic() - sent)
        assert max(delays) < 1.0


async def test_sticky_units_hold_across_processes(
    service_process: Callable[..., ServiceProcess],
) -> None:
    first, second = service_process(), service_process()
    async with aiohttp.ClientSession() as session:
        await _create(session, first.url, "fresh", [f"a{i}" for i in range(20)])
        for unit in range(30):
            arms = set()
            for url in (first.url, second.url, first.url):
                async with session.post(f"{url}/v1/experiments/fresh/allocate",
                                        json={"unit": f"u{unit}", "sticky": True}) as response:
                    arms.add((await response.json())["decisions"][0]["arm"])
            assert len(arms) == 1


async def test_workers_share_one_port(service_process: Callable[..., ServiceProcess]) -> None:
    service = service_process(workers=2)
    async with aiohttp.ClientSession() as session:
        await _create(session, service.url, "fresh", ["a", "b"])
        # Many connections: SO_REUSEPORT spreads them over both workers; all must answer.
        for _ in range(30):
            async with aiohttp.ClientSession() as fresh_session, fresh_session.post(
                f"{service.url}/v1/experiments/fresh/allocate"
            ) as response:
                assert response.status == 200


async def test_restart_with_the_same_data_dir_keeps_everything(
    service_process: Callable[..., ServiceProcess], scratch_dir: Path
) -> None:
    data_dir = scratch_dir / "data"
    service = service_process(redis=None, data_dir=data_dir)
    async with aiohttp.ClientSession() as session:
        await _create(session, service.url, "kept", ["a", "b"])
        batch = [{"id": f"k{i}", "experiment": "kept", "arm": "a", "reward": i % 2}
                 for i in range(101)]
        async with session.post(f"{service.url}/v1/events", json={"events": batch}) as response:
            assert (await response.json())["accepted"] == 101
        assert service.stop() == 0
        assert (data_dir / "appendonly.aof").exists() or (data_dir / "appendonlydir").exists()
        restarted = service_process(redis=None, data_dir=data_dir)
        async with session.get(f"{restarted.url}/v1/experiments/kept/stats") as response:
            arms = (await response.json())["arms"]
        assert arms[0]["n"] == 101
        assert arms[0]["mean"] == (1 + 50) / (2 + 101)
        # Dedup state survived too: a retry of an acknowledged event is still a duplicate.
        async with session.post(f"{restarted.url}/v1/events", json={"events": batch}) as response:
            assert (await response.json())["duplicates"] == 101


def test_command_line_entry_points() -> None:
    console_script = str(Path(sys.executable).parent / "bandit")  # installed by pip
    for command in ([sys.executable, "-m", "bandit", "--help"],
                    [console_script, "serve", "--help"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        assert "serve" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "bandit", "serve", "--redis", "http://x"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2
    assert "redis_url: 'http://x' is not a redis://" in bad.stderr


def test_bandit_experiments_is_wired_into_the_command(
    service_process: Callable[..., ServiceProcess],
) -> None:
    service = service_process()
    command = [sys.executable, "-m", "bandit", "experiments", "--url", service.url]
    created = subprocess.run([*command, "create", "wired", "--arms", "a,b"],
                             capture_output=True, text=True, timeout=60, check=False)
    assert created.returncode == 0, created.stderr
    listed = subprocess.run([*command, "--json", "list"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert listed.returncode == 0
    assert [e["id"] for e in json.loads(listed.stdout)["experiments"]] == ["wired"]


async def test_a_settings_change_reaches_every_process_within_a_second(
    service_process: Callable[..., ServiceProcess],
) -> None:
    first, second = service_process(), service_process()
    async with aiohttp.ClientSession() as session:
        await _create(session, first.url, "fresh", ["a", "b", "c", "d"])
        assert (await _stats(session, second.url))["arms"][3]["share"] == 0.25
        delays = []
        for version, arm in [(1, "d"), (2, "c")]:
            sent = time.monotonic()
            async with session.patch(f"{first.url}/v1/experiments/fresh", json={
                    "version": version, "arms": {"pause": [arm]}}) as response:
                assert response.status == 200
            index = "abcd".index(arm)
            while (await _stats(session, second.url))["arms"][index]["share"] != 0.0:
                assert time.monotonic() - sent < 1.0, "second process did not see the change"
                await asyncio.sleep(0.005)
            delays.append(time.monotonic() - sent)
        assert max(delays) < 1.0


async def test_concurrent_changes_one_wins_the_other_conflicts(
    service_process: Callable[..., ServiceProcess],
) -> None:
    first, second = service_process(), service_process()
    async with aiohttp.ClientSession() as session:
        await _create(session, first.url, "fresh", ["a", "b"])

        async def change(url: str, epsilon: float) -> int:
            async with session.patch(f"{url}/v1/experiments/fresh", json={
                    "version": 1, "exploration": {"epsilon": epsilon, "min_share": 0.1}}) as r:
                return r.status

        statuses = await asyncio.gather(change(first.url, 0.1), change(second.url, 0.2))
        assert sorted(statuses) == [200, 409]
        async with session.get(f"{first.url}/v1/experiments/fresh") as response:
            shown = await response.json()
        async with session.get(f"{first.url}/v1/experiments/fresh/audit") as response:
            entries = (await response.json())["entries"]
        # Exactly one change landed, whole (both of its settings), with one audit entry.
        assert shown["version"] == 2
        assert shown["exploration"]["min_share"] == 0.1
        assert shown["exploration"]["epsilon"] in (0.1, 0.2)
        assert [e["version"] for e in entries] == [1, 2]
        assert entries[1]["changes"]["exploration.epsilon"]["new"] == shown["exploration"][
            "epsilon"]


def test_a_process_with_another_dedup_window_is_refused(
        service_process: Callable[..., ServiceProcess], redis_url: str) -> None:
    """Dedup sets are named after the window: a second window would not see the first's
    event ids, so a process configured with one is refused before it serves anything."""
    service_process()  # the default window, recorded for the deployment
    refused = subprocess.run(
        [sys.executable, "-m", "bandit", "serve", "--port", "0", "--redis", redis_url,
         "--dedup-window", "600"], capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2
    assert "dedup_window_s: 600 s, but this deployment's processes use 3600 s" in refused.stderr
    worker = subprocess.run(
        [sys.executable, "-m", "bandit", "worker", "--stream", "s", "--redis", redis_url],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "BANDIT_DEDUP_WINDOW_S": "60"})
    assert worker.returncode == 2 and "use 3600 s" in worker.stderr
