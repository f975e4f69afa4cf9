"""Where an allocate request's time goes: the same server answering through fewer and fewer layers.

Run: ``python -m benchmarks.bench_layers [--seconds 2] [--rounds 5]`` (needs wrk).

One process serves the real application (``bandit.app.create_app``) plus handlers that stop
after each layer an allocate request passes through; a second process is bench_http's no-op
handler (it reads its body), the baseline. wrk (1 thread, 16 connections) hits every route in
turn, ``--rounds`` times, so a burst of load from elsewhere touches every row alike. Printed:
the median requests/s per row, microseconds per request, the step from the row above, and the
ratio to the no-op.

The handlers reuse the application's own pieces (``_endpoint``, ``body_now``): this
is a profile of them, not an API. The request.read() row is how the service took bodies before
``body_now``; the row after it replaces that read rather than adding to it.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import textwrap
import urllib.request

from bandit.store.embedded import free_port, wait_port
from benchmarks.bench_http import NOOP_SERVER, Target, wrk
from tests.support.redis import RedisServer

LAYERS_SERVER = textwrap.dedent("""
    import sys
    import orjson
    from aiohttp import web
    from bandit.api import app as bandit_app
    from bandit.api.bodies import body_now
    from bandit.api.context import SERVICE
    from bandit.settings import Settings

    app = bandit_app.create_app(Settings(redis_url=sys.argv[2]))

    async def bare(request):
        return web.Response(body=orjson.dumps({"ok": True}), content_type="application/json")

    async def body_read(request):  # what the service did before body_now
        orjson.loads(await request.read() or b"null")
        return await bare(request)

    async def cache_lookup(request):
        body_now(request, optional=True)
        request.app[SERVICE].cache.peek(request.match_info["id"])
        return await bare(request)

    # Each under its own first path segment, so each is the first route aiohttp tries.
    app.router.add_route("POST", "/static", bare)
    app.router.add_route("POST", "/param/{id}/allocate", bare)
    app.router.add_route("POST", "/wrapped/{id}/allocate",
                         bandit_app._endpoint("w", bare, "decide"))
    app.router.add_route("POST", "/body/{id}/allocate",
                         bandit_app._endpoint("b", body_read, "decide"))
    app.router.add_route("POST", "/cache/{id}/allocate",
                         bandit_app._endpoint("c", cache_lookup, "decide"))
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
""")

#: (label, which server, path): each row adds one layer to the row above it.
ROWS = (
    ("no-op handler, reads its body (baseline)", "noop", "/noop"),
    ("bare handler in the app, static route", "app", "/static"),
    ("... on a route with a parameter", "app", "/param/bench/allocate"),
    ("... inside the endpoint wrapper", "app", "/wrapped/bench/allocate"),
    ("... awaiting request.read(), parsing the body", "app", "/body/bench/allocate"),
    ("... instead: body_now, a cache lookup", "app", "/cache/bench/allocate"),
    ("allocate n=1", "app", "/v1/experiments/bench/allocate"),
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=2, help="per wrk run")
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    app_port, noop_port = free_port(), free_port()
    redis_server = RedisServer()
    redis_server.start()
    assert redis_server.process is not None
    processes = [redis_server.process]
    try:
        processes.append(subprocess.Popen(
            [sys.executable, "-c", LAYERS_SERVER, str(app_port), redis_server.url],
            stderr=subprocess.DEVNULL))
        processes.append(subprocess.Popen([sys.executable, "-c", NOOP_SERVER, str(noop_port),
                                           "0"]))
        wait_port(app_port, timeout_s=120)
        wait_port(noop_port)
        request = urllib.request.Request(
            f"http://127.0.0.1:{app_port}/v1/experiments", method="POST",
            data=b'{"id": "bench", "arms": ["a", "b", "c"], "reward": "bernoulli"}',
            headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request).read()
        targets = {"app": Target(f"http://127.0.0.1:{app_port}", (processes[1].pid,),
                                 processes[0].pid),
                   "noop": Target(f"http://127.0.0.1:{noop_port}", (processes[2].pid,),
                                  processes[0].pid)}
        for _, server, path in ROWS:  # warm-up: the JIT, the cache, the connections
            wrk(targets[server], path, 1, 16, 1, body="{}")
        rates: dict[str, list[float]] = {label: [] for label, _, _ in ROWS}
        for _ in range(arguments.rounds):
            for label, server, path in ROWS:
                rates[label].append(wrk(targets[server], path, arguments.seconds, 16, 1,
                                        body="{}").rps)
        report(rates, arguments)
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait()


def report(rates: dict[str, list[float]], arguments: argparse.Namespace) -> None:
    print(f"wrk -t1 -c16, {arguments.rounds} rounds of {arguments.seconds} s, medians")
    print(f"{'layers':46s} {'req/s':>8s} {'us/req':>7s} {'step us':>8s} {'/ no-op':>8s}")
    baseline = statistics.median(rates[ROWS[0][0]])
    previous = None
    for label, _, _ in ROWS:
        rate = statistics.median(rates[label])
        micros = 1e6 / rate
        step = "" if previous is None else f"{micros - previous:+8.1f}"
        print(f"{label:46s} {rate:8.0f} {micros:7.1f} {step:>8s} {rate / baseline:7.2f}x")
        previous = micros


if __name__ == "__main__":
    main()
