"""The ``bandit`` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from bandit import __version__
from bandit.api.auth import KeyRing, KeysFileError, is_loopback
from bandit.redisurl import redacted
from bandit.settings import Settings, SettingsError, environ
from bandit.store.embedded import EmbeddedRedis, EmbeddedRedisError

logger = logging.getLogger("bandit")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bandit", description=__doc__)
    parser.add_argument("--version", action="version", version=f"bandit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="run the HTTP service",
        description="Run the allocation service. Without --redis (or BANDIT_REDIS_URL) an "
                    "embedded redis-server is started, persisting to --data-dir.",
    )
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8080)")
    serve.add_argument("--redis", dest="redis_url", metavar="URL",
                       help="redis:// URL of the store (default: embedded redis-server)")
    serve.add_argument("--workers", type=int, help="service processes sharing the port")
    serve.add_argument("--data-dir", type=Path, help="embedded Redis data (default ./bandit-data)")
    serve.add_argument("--dedup-window", dest="dedup_window_s", type=float, metavar="SECONDS",
                       help="how long reward event ids are remembered (default 3600)")
    serve.add_argument("--api-keys", dest="api_keys_file", type=Path, metavar="FILE",
                       help="keys file written by `bandit keys new` (or BANDIT_API_KEYS_FILE); "
                            "without keys the service only binds a loopback address")
    serve.add_argument("--log-level", default="INFO")
    simulate = commands.add_parser(
        "simulate", help="offline simulations and replay of logged data",
        description="Run bandit policies (the service's own Thompson policy and classic "
                    "baselines) against simulated environments, many replications in parallel; "
                    "writes summary.json, regret.csv and plots to --out.",
    )
    from simulations.cli import add_arguments

    add_arguments(simulate)
    experiments = commands.add_parser(
        "experiments", help="operator commands against a running service",
        description="List, show, create and tune experiments, pause and resume arms, read "
                    "the audit log, against a running service (--url).",
    )
    from bandit.ops.operator_args import add_arguments as add_operator_arguments

    add_operator_arguments(experiments)
    layers = commands.add_parser(
        "layers", help="layers: which experiment owns which buckets of the traffic",
        description="List, show, create and change layers (disjoint bucket ranges of "
                    "experiments, the rest to a default) and read their audit log, against a "
                    "running service (--url).",
    )
    from bandit.ops.layerscli import add_arguments as add_layer_arguments

    add_layer_arguments(layers)
    keys = commands.add_parser(
        "keys", help="create, list and revoke API keys",
        description="Manage the keys file that `bandit serve --api-keys FILE` enforces. The "
                    "file holds names, scopes and hashes, never the keys themselves; a running "
                    "service re-reads it within a second of a change.",
    )
    from bandit.ops.keyscli import add_arguments as add_keys_arguments

    add_keys_arguments(keys)
    worker = commands.add_parser(
        "worker", help="apply reward events from a Redis Stream",
        description="Read reward events from a Redis Stream as one consumer of a consumer "
                    "group and apply them like POST /v1/events (same validation and dedup). "
                    "Each entry has a field 'event' holding the JSON of one event, e.g. "
                    "{\"id\": \"e1\", \"experiment\": \"checkout\", \"arm\": \"a\", "
                    "\"reward\": 1}, or 'events' holding a JSON list of them. Entries are "
                    "acknowledged once applied; what cannot be applied goes to the dead-letter "
                    "stream with the reason.",
    )
    from bandit.ops.worker import add_arguments as add_worker_arguments

    add_worker_arguments(worker)
    log = commands.add_parser(
        "log", help="the decision log: export decisions joined with their rewards",
        description="Every decision the service serves and every reward it accepts is "
                    "appended to the experiment's decision log. `bandit log export` writes "
                    "it as rows for off-policy evaluation (`bandit simulate replay --log`).")
    from bandit.ops.log_export import add_arguments as add_log_arguments

    add_log_arguments(log)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    logging.basicConfig(level=getattr(arguments, "log_level", "WARNING").upper(),
                        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    if arguments.command == "serve":
        return _serve(arguments)
    if arguments.command == "experiments":
        from bandit.ops.operator import run as run_operator

        return run_operator(arguments)
    if arguments.command == "layers":
        from bandit.ops.layerscli import run as run_layers

        return run_layers(arguments)
    if arguments.command == "keys":
        from bandit.ops.keyscli import run as run_keys

        return run_keys(arguments)
    if arguments.command == "log":
        from bandit.ops.log_export import run as run_log

        code = run_log(arguments)
        # pyarrow's thread pools can abort the interpreter's teardown ("terminate called
        # without an active exception", exit 134; apache/arrow#34314), once in about 40 runs
        # here: with everything written and flushed, nothing is left to tear down.
        with contextlib.suppress(OSError):  # a reader that went away (`| head`)
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    if arguments.command == "worker":
        from bandit.ops.worker import run as run_worker

        return run_worker(arguments)
    if arguments.command == "simulate":
        from simulations.cli import run

        return run(arguments)
    return 2  # argparse already rejects unknown commands


def _serve(arguments: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env(
            environ(), host=arguments.host, port=arguments.port,
            redis_url=arguments.redis_url, workers=arguments.workers,
            data_dir=arguments.data_dir, dedup_window_s=arguments.dedup_window_s,
            api_keys_file=arguments.api_keys_file,
        )
        ring = KeyRing.load(settings.api_keys_file, settings.api_keys)
    except (SettingsError, KeysFileError) as error:
        print(f"bandit serve: {error}", file=sys.stderr)
        return 2
    if not ring.enabled:
        if not is_loopback(settings.host):
            print(f"bandit serve: refusing to serve {settings.host} without API keys: anyone "
                  "who can reach it could change experiments. Create keys with `bandit keys "
                  "new NAME --scopes decide,read,admin --file FILE` and pass --api-keys FILE "
                  "(or bind 127.0.0.1).", file=sys.stderr)
            return 2
        logger.warning("no API keys configured: serving OPEN on loopback %s, every request "
                       "may decide, read and administer", settings.host)
    else:
        logger.info("API keys enforced: %s", ", ".join(ring.names))
    if settings.workers > 1 and settings.port == 0:
        print("bandit serve: --workers > 1 needs a fixed --port", file=sys.stderr)
        return 2
    embedded = None
    if settings.redis_url is None:
        embedded = EmbeddedRedis(settings.data_dir, appendfsync=settings.embedded_appendfsync)
        try:
            settings = settings.with_(redis_url=embedded.start())
        except EmbeddedRedisError as error:
            print(f"bandit serve: {error}", file=sys.stderr)
            return 1
        logger.info("embedded redis-server at %s, data in %s (appendfsync %s)",
                    settings.redis_url, embedded.data_dir, settings.embedded_appendfsync)
    try:
        from bandit.store.deployment import check_deployment

        try:
            asyncio.run(check_deployment(settings))
        except SettingsError as error:
            print(f"bandit serve: {error}", file=sys.stderr)
            return 2
        if settings.workers == 1:
            _run_worker(settings)
        else:
            _supervise(settings)
    finally:
        if embedded is not None:
            embedded.stop()
            logger.info("embedded redis-server stopped")
    return 0


def _run_worker(settings: Settings) -> None:
    from bandit.api.app import create_app
    from bandit.api.httpserver import connection_cap, serve

    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

    def announce() -> None:
        logger.info("serving on http://%s:%d (Redis %s; at most %d open connections)",
                    settings.host, settings.port, redacted(settings.redis_url or ""),
                    connection_cap(settings))

    asyncio.run(serve(create_app(settings), settings, announce))


def _supervise(settings: Settings) -> None:
    """Run ``workers`` processes on one port (SO_REUSEPORT) and restart any that dies."""
    context = multiprocessing.get_context("spawn")
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    workers = [context.Process(target=_run_worker, args=(settings,), daemon=False)
               for _ in range(settings.workers)]
    for worker in workers:
        worker.start()
    while not stopping:
        time.sleep(0.2)
        for position, worker in enumerate(workers):
            if not worker.is_alive() and not stopping:
                logger.warning("worker %s exited with %s; restarting", worker.pid,
                               worker.exitcode)
                workers[position] = context.Process(target=_run_worker, args=(settings,))
                workers[position].start()
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.join(timeout=30)
