"""Load for fault tests: distinct reward events sent the way a correct client sends them
(resending the same ids until acknowledged), and what the store must then hold."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

ARMS = ["a", "b", "c"]


def event_batches(count: int, size: int, seed: int,
                  experiments: Sequence[str] = ("load",)) -> list[list[dict[str, Any]]]:
    """Distinct bernoulli events over ``experiments`` (each with arms ``ARMS``)."""
    rng = random.Random(seed)
    return [[{"id": f"e{seed}-{b}-{i}", "experiment": rng.choice(experiments),
              "arm": rng.choice(ARMS), "reward": rng.randint(0, 1)} for i in range(size)]
            for b in range(count)]


def expected(batches: list[list[dict[str, Any]]],
             experiment: str = "load") -> dict[str, tuple[float, float]]:
    """Per arm index: (successes, failures) of the distinct events of ``experiment``."""
    successes: Counter[int] = Counter()
    failures: Counter[int] = Counter()
    for batch in batches:
        for event in batch:
            if event["experiment"] != experiment:
                continue
            index = ARMS.index(event["arm"])
            (successes if event["reward"] else failures)[index] += 1
    return {str(i): (float(successes[i]), float(failures[i])) for i in range(len(ARMS))}


async def send_until_acknowledged(session: aiohttp.ClientSession, urls: Callable[[], list[str]],
                                   batch: list[dict[str, Any]],
                                   log: list[tuple[float, int]]) -> None:
    """What a correct client does: resend the same ids until the service answers 200."""
    while True:
        candidates = urls()
        if candidates:
            try:
                async with session.post(f"{random.choice(candidates)}/v1/events",
                                        json={"events": batch},
                                        timeout=aiohttp.ClientTimeout(total=5)) as response:
                    if response.status == 200:
                        body = await response.json()
                        assert body["rejected"] == [], body
                        assert body["accepted"] + body["duplicates"] == len(batch)
                        log.append((time.monotonic(), body["accepted"]))
                        return
                    assert response.status == 503, await response.text()
            except (aiohttp.ClientError, TimeoutError):
                pass
        await asyncio.sleep(0.05)


async def load(urls: Callable[[], list[str]], batches: list[list[dict[str, Any]]],
                senders: int = 4, pause_s: float = 0.04) -> list[tuple[float, int]]:
    """Send every batch until acknowledged, ``senders`` at a time, each pausing ``pause_s``
    between batches: a steady stream (about 100 batches/s) that spans the faults."""
    queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)
    log: list[tuple[float, int]] = []

    async def sender(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            await send_until_acknowledged(session, urls, batch, log)
            await asyncio.sleep(pause_s)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(sender(session) for _ in range(senders)))
    return log


async def create(url: str, experiment_id: str = "load") -> None:
    async with aiohttp.ClientSession() as session, session.post(
            f"{url}/v1/experiments",
            json={"id": experiment_id, "arms": ARMS, "reward": "bernoulli"}) as response:
        assert response.status == 201, await response.text()
