"""Local Redis Cluster and Sentinel deployments from the one ``redis-server`` binary we ship.

For tests, benchmarks and trying the service's cluster and sentinel modes on one machine: every
node is a real ``redis-server`` process on a free loopback port, configured with the commands
an operator would use (``CLUSTER MEET`` / ``ADDSLOTS`` / ``REPLICATE``; ``replicaof`` and
``sentinel monitor``). Production deployments are built by operators; the service only needs
their URL (``redis+cluster://`` or ``redis+sentinel://``).
"""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis

from bandit.store.embedded import free_port, redis_server_binary, stop_process

CLUSTER_SLOTS = 16384


class TopologyError(RuntimeError):
    """A local deployment did not come up (or did not settle) in time."""


@dataclass
class Node:
    """One redis-server process."""

    port: int
    directory: Path
    arguments: list[str]
    process: subprocess.Popen[bytes] | None = None
    node_id: str = ""
    extra: list[str] = field(default_factory=list)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [redis_server_binary(), *self.arguments], cwd=self.directory,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def client(self, timeout_s: float = 2.0) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=timeout_s,
                           socket_connect_timeout=timeout_s, decode_responses=True)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the node vanishes with whatever it had not replicated."""
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.alive:
            assert self.process is not None
            stop_process(self.process, timeout_s=10)

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def _command(client: redis.Redis, *args: Any) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _server_arguments(port: int, *extra: str) -> list[str]:
    return ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--logfile", "redis.log", *extra]


def _wait(condition: Callable[[], bool], timeout_s: float, what: str,
          logs: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TopologyError(f"{what} after {timeout_s} s\n{logs()}")
        time.sleep(0.05)


class _Deployment:
    nodes: list[Node]

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def _start_nodes(self) -> None:
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            _wait(lambda node=node: bool(node.client().ping()), 20,  # type: ignore[misc]
                  f"redis-server on port {node.port} did not start", node.log)

    def node(self, port: int) -> Node:
        return next(node for node in self.nodes if node.port == port)


class LocalCluster(_Deployment):
    """``masters`` primaries splitting the 16384 slots evenly, each with ``replicas`` replicas.

    ``node_timeout_ms`` is how long a primary may be unreachable before its replica is
    promoted (``cluster-node-timeout``); short here so failover tests take seconds.
    """

    def __init__(self, directory: Path, *, masters: int = 3, replicas: int = 1,
                 node_timeout_ms: int = 1000, extra: tuple[str, ...] = ()) -> None:
        if masters < 1 or replicas < 0:
            raise ValueError("a cluster needs at least one master and replicas >= 0")
        self.masters_count = masters
        self.replicas_count = replicas
        self.nodes = []
        for _ in range(masters * (1 + replicas)):
            port = cluster_port()
            self.nodes.append(Node(port, directory / str(port), _server_arguments(
                port, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(node_timeout_ms),
                # A lone survivor still serves the slots it owns while another shard fails over.
                "--cluster-require-full-coverage", "no", *extra)))

    @property
    def url(self) -> str:
        """The service's ``--redis`` URL: every node as a startup node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self) -> None:
        self._start_nodes()
        clients = [node.client() for node in self.nodes]
        for node, client in zip(self.nodes, clients, strict=True):
            node.node_id = str(_command(client, "CLUSTER", "MYID"))
        masters = self.nodes[: self.masters_count]
        for position, client in enumerate(clients[: self.masters_count]):
            low = position * CLUSTER_SLOTS // self.masters_count
            high = (position + 1) * CLUSTER_SLOTS // self.masters_count
            _command(client, "CLUSTER", "ADDSLOTS", *range(low, high))
        for client in clients[1:]:
            _command(client, "CLUSTER", "MEET", "127.0.0.1", str(self.nodes[0].port))
        everyone = len(self.nodes)
        _wait(lambda: all(len(str(_command(c, "CLUSTER", "NODES")).splitlines())
                          == everyone for c in clients), 30, "cluster nodes did not meet")
        replicas = self.nodes[self.masters_count:]
        for position, replica in enumerate(replicas):
            master = masters[position % self.masters_count]
            _command(replica.client(), "CLUSTER", "REPLICATE", master.node_id)
        self.wait_ok()
        for client in clients:
            client.close()

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Until every live node reports ``cluster_state:ok`` and every replica is in sync."""
        def settled() -> bool:
            for node in self.nodes:
                if not node.alive:
                    continue
                client = node.client()
                info = str(_command(client, "CLUSTER", "INFO"))
                replication = client.info("replication")
                client.close()
                if "cluster_state:ok" not in info:
                    return False
                if replication["role"] == "slave" and replication.get(
                        "master_link_status") != "up":
                    return False
            return True

        _wait(settled, timeout_s, "cluster did not reach cluster_state:ok", self._logs)

    def _logs(self) -> str:
        return "\n".join(f"--- {node.port}\n{node.log()}" for node in self.nodes)

    def roles(self) -> dict[int, str]:
        """Port -> ``master`` or ``slave`` for the live nodes, as each node reports itself."""
        roles = {}
        for node in self.nodes:
            if node.alive:
                client = node.client()
                roles[node.port] = str(client.info("replication")["role"])
                client.close()
        return roles

    def master_of_slot(self, slot: int) -> Node:
        for node in self.nodes:
            if not node.alive:
                continue
            client = node.client()
            for low, high, master, *_ in _command(client, "CLUSTER", "SLOTS"):
                if low <= slot <= high:
                    client.close()
                    return self.node(int(master[1]))
            client.close()
        raise TopologyError(f"no live node serves slot {slot}")

    def wait_promoted(self, old_master: Node, timeout_s: float = 30.0) -> Node:
        """After ``old_master`` died: wait until its slots are served by a promoted replica."""
        slot = self._first_slot_of(old_master)

        def promoted() -> bool:
            return self.master_of_slot(slot).port != old_master.port

        _wait(promoted, timeout_s, f"no replica of {old_master.port} was promoted", self._logs)
        self.wait_ok(timeout_s)
        return self.master_of_slot(slot)

    def _first_slot_of(self, master: Node) -> int:
        position = self.nodes.index(master) % self.masters_count
        return position * CLUSTER_SLOTS // self.masters_count


class LocalSentinel(_Deployment):
    """A primary, ``replicas`` replicas and ``sentinels`` sentinels watching them as
    ``service``; ``down_after_ms`` is how long the primary may be unreachable before the
    sentinels agree to fail over."""

    def __init__(self, directory: Path, *, replicas: int = 2, sentinels: int = 3,
                 service: str = "bandit", down_after_ms: int = 1000) -> None:
        self.service = service
        primary_port = free_port()
        self.nodes = [Node(primary_port, directory / str(primary_port),
                           _server_arguments(primary_port))]
        for _ in range(replicas):
            port = free_port()
            self.nodes.append(Node(port, directory / str(port), _server_arguments(
                port, "--replicaof", "127.0.0.1", str(primary_port))))
        self.sentinels: list[Node] = []
        quorum = sentinels // 2 + 1
        for _ in range(sentinels):
            port = free_port()
            config = directory / f"sentinel-{port}" / "sentinel.conf"
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(
                f"port {port}\nbind 127.0.0.1\nlogfile redis.log\ndaemonize no\n"
                f"sentinel monitor {service} 127.0.0.1 {primary_port} {quorum}\n"
                f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
                f"sentinel failover-timeout {service} {max(4 * down_after_ms, 3000)}\n"
                f"sentinel parallel-syncs {service} 1\n")
            self.sentinels.append(Node(port, config.parent, [str(config), "--sentinel"]))

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    def start(self) -> None:
        self._start_nodes()
        primary = self.nodes[0]
        for replica in self.nodes[1:]:
            _wait(lambda replica=replica: replica.client().info("replication").get(  # type: ignore[misc]
                "master_link_status") == "up", 30, "replica did not sync", replica.log)
        for sentinel in self.sentinels:
            sentinel.start()
        needed = len(self.nodes) - 1

        def watching() -> bool:
            for sentinel in self.sentinels:
                client = sentinel.client()
                replicas = _command(client, "SENTINEL", "REPLICAS", self.service)
                others = _command(client, "SENTINEL", "SENTINELS", self.service)
                client.close()
                if len(replicas) < needed or len(others) < len(self.sentinels) - 1:
                    return False
            return True

        _wait(watching, 30, "sentinels did not discover the replicas and each other",
              lambda: "\n".join(s.log() for s in self.sentinels))
        assert primary.alive

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        super().stop()

    def primary(self) -> Node:
        """The node the sentinels currently name as primary."""
        client = self.sentinels[0].client()
        _, port = _command(client, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        client.close()
        return self.node(int(port))

    def wait_failover(self, old_primary: Node, timeout_s: float = 30.0) -> Node:
        def moved() -> bool:
            current = self.primary()
            if current.port == old_primary.port or not current.alive:
                return False
            client = current.client()
            role = client.info("replication")["role"]
            client.close()
            return bool(role == "master")

        _wait(moved, timeout_s, "sentinels did not fail over",
              lambda: "\n".join(s.log() for s in self.sentinels))
        return self.primary()


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too, below 55536 as Redis needs."""
    for _ in range(1000):
        port = random.randrange(20000, 45000)
        if all(_bindable(candidate) for candidate in (port, port + 10000)):
            return port
    raise TopologyError("no free port pair for a cluster node")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
