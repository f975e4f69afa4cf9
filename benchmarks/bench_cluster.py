"""Events/s and decisions/s on a Redis Cluster with 1, 2 and 3 shards, against one Redis
server measured in the same run; and what waiting for a replica (``redis_wait_replicas=1``)
costs on a cluster (3 masters, 1 replica each) and on a primary with one replica.

The load runs through ``BanditService`` in ``--clients`` separate processes (the service's
whole path: validation, dedup scripts, sticky-unit scripts), each with ``--concurrency``
asyncio tasks, over 30 experiments (spread over the shards by their hash tags):

- events: batches of 100 distinct events, each batch over all 30 experiments;
- sticky decisions: ``allocate`` n=1 for a new sticky unit (one Redis script per decision;
  non-sticky decisions come from process memory and do not touch Redis at all).

On a machine with few cores the client processes, not Redis, are the ceiling: shards add
Redis capacity that only shows when the clients can use it. The script prints the CPU the
Redis servers used during each run, so the table says which side was the limit.

Usage: python -m benchmarks.bench_cluster [--seconds 5] [--clients 2] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from bandit.policy import warm_up_kernels
from bandit.serving.service import BanditService
from bandit.settings import Settings
from bandit.store.embedded import free_port
from bandit.store.redis_store import RedisStore
from tests.support.topologies import LocalCluster, Node

EXPERIMENTS = [f"bench-{i}" for i in range(30)]
ARMS = ["a", "b", "c", "d"]


async def _load(url: str, kind: str, seconds: float, concurrency: int, wait: int,
                worker: int) -> int:
    settings = Settings(redis_url=url, redis_wait_replicas=wait, redis_max_connections=64,
                        redis_timeout_s=5)
    store = RedisStore.from_settings(settings)
    service = BanditService(store, settings, seed=worker)
    done = 0
    deadline = time.monotonic() + seconds
    counter = 0

    async def events() -> None:
        nonlocal done, counter
        while time.monotonic() < deadline:
            counter += 1
            batch = [{"id": f"w{worker}-{counter}-{i}", "experiment": EXPERIMENTS[i % 30],
                      "arm": ARMS[i % 4], "reward": i % 2} for i in range(100)]
            result = await service.apply_events({"events": batch})
            done += result["accepted"]

    async def decisions() -> None:
        nonlocal done, counter
        while time.monotonic() < deadline:
            counter += 1
            await service.allocate(EXPERIMENTS[counter % 30],
                                   {"unit": f"u{worker}-{counter}", "sticky": True})
            done += 1

    task = events if kind == "events" else decisions
    await asyncio.gather(*(task() for _ in range(concurrency)))
    await store.close()
    return done


def _client(url: str, kind: str, seconds: float, concurrency: int, wait: int, worker: int,
            results: Any) -> None:
    results.put(asyncio.run(_load(url, kind, seconds, concurrency, wait, worker)))


def _measure(url: str, kind: str, arguments: argparse.Namespace, wait: int,
             servers: list[Node]) -> tuple[float, float]:
    """Operations/s over all client processes, and the Redis servers' CPU in cores."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_client, args=(
        url, kind, arguments.seconds, arguments.concurrency, wait, worker, results))
        for worker in range(arguments.clients)]
    cpu_before = sum(_cpu_seconds(node) for node in servers)
    started = time.monotonic()
    for process in processes:
        process.start()
    total = sum(results.get(timeout=arguments.seconds + 120) for _ in processes)
    for process in processes:
        process.join()
    elapsed = time.monotonic() - started
    cpu = (sum(_cpu_seconds(node) for node in servers) - cpu_before) / elapsed
    return total / arguments.seconds, cpu


def _cpu_seconds(node: Node) -> float:
    assert node.process is not None
    fields = Path(f"/proc/{node.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _prepare(url: str) -> None:
    async def create() -> None:
        settings = Settings(redis_url=url)
        store = RedisStore.from_settings(settings)
        service = BanditService(store, settings)
        for experiment in EXPERIMENTS:
            await service.create_experiment({"id": experiment, "arms": ARMS,
                                             "reward": "bernoulli"})
        await store.close()

    asyncio.run(create())


@contextmanager
def _single(directory: Path, replicas: int) -> Any:
    port = free_port()
    primary = Node(port, directory / str(port), _arguments(port))
    nodes = [primary]
    for _ in range(replicas):
        replica_port = free_port()
        nodes.append(Node(replica_port, directory / str(replica_port), _arguments(
            replica_port, "--replicaof", "127.0.0.1", str(port))))
    for node in nodes:
        node.start()
    try:
        time.sleep(1.0)
        for node in nodes[1:]:
            client = node.client()
            while client.info("replication").get("master_link_status") != "up":
                time.sleep(0.05)
            client.close()
        yield f"redis://127.0.0.1:{port}/0", nodes
    finally:
        for node in nodes:
            node.stop()


@contextmanager
def _cluster(directory: Path, masters: int, replicas: int) -> Any:
    with LocalCluster(directory, masters=masters, replicas=replicas) as cluster:
        yield cluster.url, cluster.nodes


def _arguments(port: int, *extra: str) -> list[str]:
    return ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--logfile", "redis.log", *extra]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--only", help="run only topologies whose name contains this")
    arguments = parser.parse_args()
    warm_up_kernels()
    root = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    Topology = Callable[[], AbstractContextManager[tuple[str, list[Node]]]]
    topologies: list[tuple[str, Topology, int]] = [
        ("single server", lambda: _single(root / "single", 0), 0),
        ("cluster, 1 shard", lambda: _cluster(root / "c1", 1, 0), 0),
        ("cluster, 2 shards", lambda: _cluster(root / "c2", 2, 0), 0),
        ("cluster, 3 shards", lambda: _cluster(root / "c3", 3, 0), 0),
        ("primary + 1 replica", lambda: _single(root / "r0", 1), 0),
        ("primary + 1 replica, wait 1", lambda: _single(root / "r1", 1), 1),
        ("3 shards + replicas", lambda: _cluster(root / "c3r0", 3, 1), 0),
        ("3 shards + replicas, wait 1", lambda: _cluster(root / "c3r1", 3, 1), 1),
    ]
    rows: dict[str, dict[str, tuple[float, float]]] = {}
    for name, topology, wait in topologies:
        if arguments.only and arguments.only not in name and name != "single server":
            continue
        with topology() as (url, nodes):
            _prepare(url)
            rows[name] = {kind: _measure(url, kind, arguments, wait, nodes)
                          for kind in ("events", "decisions")}
        print(f"  measured {name}", flush=True)
    print(f"\n{arguments.clients} client processes x {arguments.concurrency} tasks, "
          f"{arguments.seconds:.0f} s each, {os.cpu_count()} cores")
    print(f"{'topology':30} {'events/s':>10} {'ratio':>7} {'redis cpu':>9}   "
          f"{'sticky decisions/s':>18} {'ratio':>7} {'redis cpu':>9}")
    base = rows["single server"]
    baselines = {name: rows.get(name.replace(", wait 1", ""), base)
                 for name in rows if name.endswith(", wait 1")}
    for name, row in rows.items():
        reference = baselines.get(name, base)
        if reference is not base and name.replace(", wait 1", "") not in rows:
            reference = base
        cells = []
        for kind in ("events", "decisions"):
            rate, cpu = row[kind]
            cells.append(f"{rate:10,.0f} {rate / reference[kind][0]:6.2f}x {cpu:8.2f}c")
        print(f"{name:30} {cells[0]}   {cells[1]:>38}")
    print("ratios: against the single server, except the 'wait 1' rows, which are against "
          "the same topology without waiting")


if __name__ == "__main__":
    main()
