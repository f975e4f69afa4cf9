"""Many service processes sharing one Redis: sticky units, dedup, settings, conversions.

Three ``bandit serve`` processes (real OS processes, three ports, one Redis) are driven at the
same time, so that first requests for a unit, resent events and conversions race between
processes. ``test_e2e`` covers the two-process basics one request at a time; this module is
about three processes and concurrency. The processes run with the default refresh and
served-flush intervals (conftest's ``ServiceProcess`` shortens the refresh for speed), so the
propagation times measured here are the ones operators get.

The last test runs two processes as separate "hosts": each in its own network namespace,
reaching Redis (password-protected, in the root namespace) over a veth pair, binding a
non-loopback address with API keys enforced, driven from the root namespace.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest
import redis

from bandit.settings import Settings
from bandit.store.embedded import stop_process
from bandit.store.keys import Keys
from tests.conftest import ServiceProcess
from tests.support.redis import RedisServer

#: The product's promise: a reward or a settings change reaches every process within 1 s.
PROPAGATION_BOUND_S = 1.0
#: The service's own defaults, not conftest's shorter refresh: we measure what operators get.
DEFAULTS = Settings()
DEFAULT_ENV = {"BANDIT_REFRESH_INTERVAL_S": repr(DEFAULTS.refresh_interval_s),
               "BANDIT_SERVED_FLUSH_INTERVAL_S": repr(DEFAULTS.served_flush_interval_s)}

Decisions = list[dict[str, Any]]


@pytest.fixture(scope="module")
def services(redis_server: RedisServer) -> Iterator[list[ServiceProcess]]:
    """Three processes for the whole module (starting them is the slow part); each test
    uses its own experiment ids, so no test sees another's data."""
    started: list[ServiceProcess] = []
    try:
        started = [ServiceProcess(redis_server.url, extra_env=DEFAULT_ENV) for _ in range(3)]
        for service in started:
            service.wait_ready()
        yield started
    finally:
        for service in started:
            service.stop()


def _unique(name: str) -> str:
    return f"{name}-{secrets.token_hex(4)}"


async def _call(session: aiohttp.ClientSession, method: str, url: str, body: Any = None, *,
                status: int = 200, headers: dict[str, str] | None = None) -> Any:
    async with session.request(method, url, json=body, headers=headers) as response:
        text = await response.text()
        assert response.status == status, f"{method} {url}: {response.status} {text}"
        return json.loads(text) if text else None


async def _create(session: aiohttp.ClientSession, url: str, experiment: str, arms: list[str],
                  headers: dict[str, str] | None = None) -> None:
    await _call(session, "POST", f"{url}/v1/experiments",
                {"id": experiment, "arms": arms, "reward": "bernoulli"},
                status=201, headers=headers)


async def _allocate(session: aiohttp.ClientSession, url: str, experiment: str, body: Any,
                    headers: dict[str, str] | None = None) -> Any:
    return await _call(session, "POST", f"{url}/v1/experiments/{experiment}/allocate", body,
                       headers=headers)


async def _events(session: aiohttp.ClientSession, url: str, events: list[dict[str, Any]],
                  headers: dict[str, str] | None = None) -> dict[str, Any]:
    result: dict[str, Any] = await _call(session, "POST", f"{url}/v1/events",
                                         {"events": events}, headers=headers)
    return result


async def _stats(session: aiohttp.ClientSession, url: str, experiment: str,
                 headers: dict[str, str] | None = None) -> dict[str, Any]:
    result: dict[str, Any] = await _call(session, "GET",
                                         f"{url}/v1/experiments/{experiment}/stats",
                                         headers=headers)
    return result


async def _until_counted(session: aiohttp.ClientSession, url: str, experiment: str,
                         total: int, started: float,
                         headers: dict[str, str] | None = None) -> tuple[float, dict[str, Any]]:
    """Poll ``url``'s stats (its cache) until it counts ``total`` observations; returns the
    seconds since ``started`` and those stats."""
    while True:
        stats = await _stats(session, url, experiment, headers)
        elapsed = time.monotonic() - started
        counted = sum(arm["n"] for arm in stats["arms"])
        if counted == total:
            return elapsed, stats
        assert counted < total, f"{url} counts {counted} observations, more than {total}"
        assert elapsed < PROPAGATION_BOUND_S, (
            f"{url} counts {counted} of {total} observations after {elapsed:.2f} s")
        await asyncio.sleep(0.005)


async def _until_version(session: aiohttp.ClientSession, url: str, experiment: str,
                         version: int, started: float,
                         check: Callable[[Decisions], None] = lambda decisions: None,
                         headers: dict[str, str] | None = None) -> float:
    """Allocate on ``url`` until its decisions come from ``version``; check those decisions
    and return the seconds since ``started``."""
    while True:
        result = await _allocate(session, url, experiment, {"n": 200}, headers)
        elapsed = time.monotonic() - started
        if result["version"] >= version:
            check(result["decisions"])
            return elapsed
        assert elapsed < PROPAGATION_BOUND_S, (
            f"{url} still allocates from version {result['version']} after {elapsed:.2f} s")
        await asyncio.sleep(0.005)


def _report(what: str, delays: list[float]) -> None:
    print(f"\n{what}: {len(delays)} measurements, median {statistics.median(delays):.3f} s, "
          f"max {max(delays):.3f} s (bound {PROPAGATION_BOUND_S} s)")


def _bernoulli_mean(successes: float, observations: float) -> float:
    return (1 + successes) / (2 + observations)  # the Beta(1, 1) prior


# -- sticky units ----------------------------------------------------------------------------


async def test_sticky_units_agree_on_every_process_when_first_requests_race(
    services: list[ServiceProcess], redis_server: RedisServer,
) -> None:
    urls = [service.url for service in services]
    experiment = _unique("sticky")
    arms = [f"a{i}" for i in range(10)]
    units = [f"u{i}" for i in range(150)]
    slate_units = [f"s{i}" for i in range(30)]
    async with aiohttp.ClientSession() as session:
        await _create(session, urls[0], experiment, arms)

        async def ask(url: str, unit: str, k: int | None = None) -> dict[str, Any]:
            body: dict[str, Any] = {"unit": unit, "sticky": True}
            if k is not None:
                body["k"] = k
            decision: dict[str, Any] = (await _allocate(session, url, experiment,
                                                        body))["decisions"][0]
            return decision

        def assigned(decision: dict[str, Any]) -> tuple[str, ...]:
            return tuple(decision["arms"]) if "arms" in decision else (decision["arm"],)

        # Every unit's first request goes to all three processes at once: each process
        # proposes its own draw (uniform over ten arms, so proposals differ nine times in
        # ten), and all must end up serving the one that was stored first.
        requests: list[tuple[str, str, int | None]] = [
            (url, unit, None) for unit in units for url in urls]
        requests += [(url, unit, 3) for unit in slate_units for url in urls]
        first = await asyncio.gather(*(ask(url, unit, k) for url, unit, k in requests))
        answers: dict[str, list[dict[str, Any]]] = {}
        for (_, unit, _), decision in zip(requests, first, strict=True):
            answers.setdefault(unit, []).append(decision)
        for unit, decisions in answers.items():
            assert len({assigned(d) for d in decisions}) == 1, (unit, decisions)
            assert len({d["propensity"] for d in decisions}) == 1, (unit, decisions)
            assert all(d["sticky"] for d in decisions)
        single = {unit: answers[unit][0]["arm"] for unit in units}
        assert len(set(single.values())) >= 6  # uniform draws over ten arms, not one arm
        for unit in units:  # a fresh experiment allocates uniformly: the first propensity
            assert answers[unit][0]["propensity"] == pytest.approx(0.1, abs=1e-9)

        # Again, in another order on each process (now from each process's memory).
        again = [(url, unit) for url in urls for unit in random.Random(1).sample(units, 150)]
        later = await asyncio.gather(*(ask(url, unit) for url, unit in again))
        assert all(d["arm"] == single[unit] for (_, unit), d in zip(again, later, strict=True))
        stored = redis.Redis(port=redis_server.port)
        try:
            assert stored.hlen(Keys(DEFAULTS.key_prefix, experiment).units) == 180
        finally:
            stored.close()

        # Served counts: each decision counted once, by the process that served it, never
        # once more for a proposal that lost the race (flushed every served-flush interval).
        decisions_served = len(units) * 3 * 2 + len(slate_units) * 3 * 3
        deadline = time.monotonic() + 3 * DEFAULTS.served_flush_interval_s + 1
        while True:
            counted = sum(arm["served"] for arm in (await _stats(session, urls[2],
                                                                 experiment))["arms"])
            if counted == decisions_served or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert counted == decisions_served

        # Pausing an arm on one process: its units get fresh, unstored decisions on every
        # process; resumed on another, they get their own arm back everywhere.
        paused, _ = Counter(single.values()).most_common(1)[0]
        affected = [unit for unit in units if single[unit] == paused]
        delays = []
        for version, action, patcher in [(1, "pause", 0), (2, "resume", 1)]:
            started = time.monotonic()
            await _call(session, "PATCH", f"{urls[patcher]}/v1/experiments/{experiment}",
                        {"version": version, "arms": {action: [paused]}})
            delays += await asyncio.gather(*(
                _until_version(session, url, experiment, version + 1, started)
                for i, url in enumerate(urls) if i != patcher))
            decisions = await asyncio.gather(*(ask(url, unit) for url in urls
                                               for unit in affected))
            if action == "pause":
                assert all(d["arm"] != paused and "sticky" not in d for d in decisions)
            else:
                assert all(d["arm"] == paused and d["sticky"] for d in decisions)
        assert max(delays) < PROPAGATION_BOUND_S
        _report("sticky: pause/resume reaching the other processes", delays)


# -- dedup -----------------------------------------------------------------------------------


async def test_events_resent_to_every_process_at_once_count_once(
    services: list[ServiceProcess],
) -> None:
    urls = [service.url for service in services]
    experiment = _unique("dedup")
    arms = ["a", "b", "c"]
    rewards = random.Random(3)
    events = [{"id": f"e{i}", "experiment": experiment, "arm": arms[i % 3],
               "reward": int(rewards.random() < 0.3 + 0.2 * (i % 3))} for i in range(900)]
    async with aiohttp.ClientSession() as session:
        await _create(session, urls[0], experiment, arms)
        # Every process gets every event, in its own order and batching, and every batch
        # twice (a client retry), all at the same time: 5,400 sends of 900 events.
        sends = []
        for position, url in enumerate(urls):
            order = random.Random(position).sample(events, len(events))
            for start in range(0, len(order), 100):
                sends += [(url, order[start:start + 100])] * 2
        random.Random(4).shuffle(sends)
        results = await asyncio.gather(*(_events(session, url, batch) for url, batch in sends))
        finished = time.monotonic()
        assert sum(r["accepted"] for r in results) == 900
        assert sum(r["duplicates"] for r in results) == 900 * 3 * 2 - 900
        assert all(r["rejected"] == [] for r in results)

        observations = Counter(str(e["arm"]) for e in events)
        successes = Counter(str(e["arm"]) for e in events if e["reward"])
        delays = []
        for url in urls:  # every process's cache: n per arm equals the distinct ids
            delay, stats = await _until_counted(session, url, experiment, 900, finished)
            delays.append(delay)
            for arm in stats["arms"]:
                assert arm["n"] == observations[arm["arm"]] == 300
                assert arm["mean"] == pytest.approx(
                    _bernoulli_mean(successes[arm["arm"]], 300), rel=1e-9)

        # One decision rewarded through all three processes, under a new event id on each:
        # once per decision and arm, whichever process is first.
        decisions = (await _allocate(session, urls[1], experiment, {"n": 60}))["decisions"]
        results = await asyncio.gather(*(
            _events(session, url, [{"id": f"r{j}-{position}", "experiment": experiment,
                                    "arm": d["arm"], "reward": 1,
                                    "decision_id": d["decision_id"]}
                                   for j, d in enumerate(decisions)])
            for position, url in enumerate(urls)))
        finished = time.monotonic()
        assert sum(r["accepted"] for r in results) == 60
        refused = [item for r in results for item in r["rejected"]]
        assert len(refused) == 120
        assert all("already has a reward" in item["error"] for item in refused)
        for url in urls:
            delay, stats = await _until_counted(session, url, experiment, 960, finished)
            delays.append(delay)
        per_arm = Counter(d["arm"] for d in decisions)
        for arm in stats["arms"]:
            assert arm["n"] == 300 + per_arm[arm["arm"]]
            assert arm["mean"] == pytest.approx(_bernoulli_mean(
                successes[arm["arm"]] + per_arm[arm["arm"]], arm["n"]), rel=1e-9)
        assert max(delays) < PROPAGATION_BOUND_S
        _report("rewards reaching every process's cache", delays)


# -- settings changes ------------------------------------------------------------------------


def _absent(arm: str) -> Callable[[Decisions], None]:
    def check(decisions: Decisions) -> None:
        assert all(d["arm"] != arm for d in decisions)
    return check


def _present(arm: str, at_least: float) -> Callable[[Decisions], None]:
    def check(decisions: Decisions) -> None:
        chosen = [d for d in decisions if d["arm"] == arm]
        assert chosen, f"no decision for {arm} in {len(decisions)}"
        assert all(d["propensity"] >= at_least - 1e-9 for d in chosen)
    return check


def _floored(best: str, floor: float) -> Callable[[Decisions], None]:
    def check(decisions: Decisions) -> None:
        others = [d for d in decisions if d["arm"] != best]
        assert others, "the floor should send traffic to the other arms"
        assert all(d["propensity"] >= floor - 1e-9 for d in others)
    return check


def _capped(arm: str, cap: float) -> Callable[[Decisions], None]:
    def check(decisions: Decisions) -> None:
        assert all(d["propensity"] <= cap + 1e-9 for d in decisions if d["arm"] == arm)
    return check


def _fixed(arm: str, share: float) -> Callable[[Decisions], None]:
    def check(decisions: Decisions) -> None:
        assert all(d["propensity"] == pytest.approx(share, abs=1e-9)
                   for d in decisions if d["arm"] == arm)
    return check


async def test_settings_changed_on_one_process_reach_the_others_within_a_second(
    services: list[ServiceProcess],
) -> None:
    urls = [service.url for service in services]
    experiment = _unique("tune")
    async with aiohttp.ClientSession() as session:
        await _create(session, urls[0], experiment, ["a", "b", "c", "d"])
        # Evidence that "a" is best, so floors and caps visibly move the allocation.
        await _events(session, urls[0], [
            {"id": f"w{arm}{i}", "experiment": experiment, "arm": arm,
             "reward": int(arm == "a")} for arm in "abcd" for i in range(100)])
        for url in urls:  # cached by every process, and the evidence seen
            await _until_counted(session, url, experiment, 400, time.monotonic())
        changes: list[tuple[dict[str, Any], set[str], Callable[[Decisions], None]]] = [
            ({"arms": {"pause": ["d"]}}, {"arms.d"}, _absent("d")),
            ({"exploration": {"min_share": 0.1}}, {"exploration.min_share"},
             _floored("a", 0.1)),
            ({"arms": {"resume": ["d"]}}, {"arms.d"}, _present("d", 0.1)),
            ({"exploration": {"max_share": 0.5}}, {"exploration.max_share"},
             _capped("a", 0.5)),
            ({"exploration": {"control": {"arm": "b", "share": 0.4}}},
             {"exploration.control"}, _fixed("b", 0.4)),
        ]
        for round_number in range(6):  # and pausing and resuming back and forth
            action = "pause" if round_number % 2 == 0 else "resume"
            changes.append(({"arms": {action: ["c"]}}, {"arms.c"},
                            _absent("c") if action == "pause" else _present("c", 0.1)))
        changes.append(({"arms": {"pause": ["a"]}}, {"arms.a"}, _absent("a")))
        delays = []
        for number, (body, _, check) in enumerate(changes):
            version = number + 1
            patcher = number % 3
            started = time.monotonic()
            await _call(session, "PATCH", f"{urls[patcher]}/v1/experiments/{experiment}",
                        {"version": version, "reason": f"round {number}", **body})
            # The process that made the change serves it at once (it dropped its cache);
            # the others within the bound, from their polling.
            own = await _allocate(session, urls[patcher], experiment, {"n": 200})
            assert own["version"] == version + 1
            check(own["decisions"])
            delays += await asyncio.gather(*(
                _until_version(session, url, experiment, version + 1, started, check)
                for i, url in enumerate(urls) if i != patcher))
        assert max(delays) < PROPAGATION_BOUND_S
        _report("settings changes reaching the other processes", delays)

        # Three processes change the same version at once: one wins, whole, audited once.
        async def change(url: str, epsilon: float) -> tuple[int, Any]:
            async with session.patch(f"{url}/v1/experiments/{experiment}", json={
                    "version": len(changes) + 1, "exploration": {"epsilon": epsilon}}) as answer:
                return answer.status, await answer.json()

        answers = await asyncio.gather(*(change(url, 0.1 * (position + 1))
                                         for position, url in enumerate(urls)))
        assert sorted(status for status, _ in answers) == [200, 409, 409]
        winner = next(document for status, document in answers if status == 200)

        audits = await asyncio.gather(*(
            _call(session, "GET", f"{url}/v1/experiments/{experiment}/audit") for url in urls))
        assert audits[0] == audits[1] == audits[2]
        entries = audits[0]["entries"]
        assert [e["version"] for e in entries] == list(range(1, len(changes) + 3))
        assert [e["action"] for e in entries] == ["create"] + ["update"] * (len(changes) + 1)
        for entry, (_, keys, _) in zip(entries[1:], changes, strict=False):
            assert set(entry["changes"]) == keys
            assert entry["reason"] == f"round {entry['version'] - 2}"
        assert entries[-1]["changes"]["exploration.epsilon"]["new"] == winner["exploration"][
            "epsilon"]
        assert all(e["actor"] == "anonymous" for e in entries)


# -- provisional decisions -------------------------------------------------------------------


async def test_provisional_decisions_convert_at_most_once_across_processes(
    services: list[ServiceProcess],
) -> None:
    urls = [service.url for service in services]
    experiment = _unique("delayed")
    async with aiohttp.ClientSession() as session:
        await _create(session, urls[0], experiment, ["a", "b", "c"])
        served = await asyncio.gather(*(
            _allocate(session, url, experiment, {"n": 20, "provisional": True})
            for url in urls))
        decisions = [d for result in served for d in result["decisions"]]
        started = time.monotonic()
        failures = Counter(d["arm"] for d in decisions)  # each counts as a failure at once
        for url in urls:
            _, stats = await _until_counted(session, url, experiment, 60, started)
            for arm in stats["arms"]:
                assert arm["n"] == failures[arm["arm"]]
                assert arm["mean"] == pytest.approx(_bernoulli_mean(0, arm["n"]), rel=1e-9)

        # Two thirds of them convert; each conversion is sent to all three processes under
        # three event ids, and one of them resent, all at once.
        converting = random.Random(5).sample(decisions, 40)

        def conversion(j: int, position: int, d: dict[str, Any]) -> dict[str, Any]:
            return {"id": f"c{j}-{position}", "experiment": experiment, "arm": d["arm"],
                    "reward": 1, "decision_id": d["decision_id"]}

        sends = [(url, [conversion(j, position, d) for j, d in enumerate(converting)])
                 for position, url in enumerate(urls)]
        sends.append((urls[2], [conversion(j, 0, d) for j, d in enumerate(converting)]))
        sends = [(url, batch[start:start + 10]) for url, batch in sends
                 for start in range(0, len(batch), 10)]
        random.Random(6).shuffle(sends)
        results = await asyncio.gather(*(_events(session, url, batch) for url, batch in sends))
        finished = time.monotonic()
        assert sum(r["accepted"] for r in results) == 40
        assert sum(r["duplicates"] for r in results) == 40 * 4 - 40
        assert all(r["rejected"] == [] for r in results)
        # A conversion naming another arm than the decision's is refused, on any process.
        other = next(d for d in decisions if d not in converting)
        wrong = {"a": "b", "b": "c", "c": "a"}[other["arm"]]
        refused = await _events(session, urls[1], [{
            "id": "wrong", "experiment": experiment, "arm": wrong, "reward": 1,
            "decision_id": other["decision_id"]}])
        assert refused["accepted"] == 0 and len(refused["rejected"]) == 1

        conversions = Counter(d["arm"] for d in converting)
        delays = []
        for url in urls:  # conversions move a failure to a success: n stays
            while True:
                stats = await _stats(session, url, experiment)
                means = {arm["arm"]: arm["mean"] for arm in stats["arms"]}
                if all(means[arm] == pytest.approx(_bernoulli_mean(conversions[arm],
                                                                   failures[arm]), rel=1e-9)
                       for arm in "abc"):
                    break
                assert time.monotonic() - finished < PROPAGATION_BOUND_S, (url, means)
                await asyncio.sleep(0.005)
            delays.append(time.monotonic() - finished)
            assert [arm["n"] for arm in stats["arms"]] == [failures[arm] for arm in "abc"]
        _report("conversions reaching every process's cache", delays)


# -- separate hosts: network namespaces ------------------------------------------------------


@dataclass(frozen=True)
class _Host:
    namespace: str
    #: The service's address inside its namespace, and the root side's address of its link.
    address: str
    gateway: str

    @property
    def url(self) -> str:
        return f"http://{self.address}:8080"


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)


def _must(*command: str) -> None:
    result = _run(*command)
    assert result.returncode == 0, f"{' '.join(command)}: {result.stderr.strip()}"


def _namespaces_unavailable() -> str | None:
    """Why this machine cannot create network namespaces, or None when it can."""
    if sys.platform != "linux":
        return "network namespaces are a Linux feature"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"bandit-probe-{secrets.token_hex(3)}"
    created = _run("ip", "netns", "add", probe)
    if created.returncode != 0:
        return (f"`ip netns add` failed ({created.stderr.strip()}): creating network namespaces "
                f"needs CAP_SYS_ADMIN and CAP_NET_ADMIN (root), running as uid {os.geteuid()}")
    _run("ip", "netns", "del", probe)
    return None


def _free_subnet() -> int:
    """A third octet X such that nothing on this machine uses 10.213.X.0/24."""
    used = _run("ip", "-o", "-4", "addr").stdout + _run("ip", "-4", "route").stdout
    choices = [x for x in range(1, 255) if f"10.213.{x}." not in used]
    return random.choice(choices)


def _make_hosts(count: int, cleanup: ExitStack) -> list[_Host]:
    """``count`` namespaces, each joined to the root namespace by a veth pair on its own /30,
    with a default route through the root side. Registers their removal on ``cleanup``."""
    tag, subnet = secrets.token_hex(3), _free_subnet()
    hosts = []
    for i in range(count):
        namespace, outside, inside = f"bandit-{tag}-{i}", f"bh{tag}r{i}", f"bh{tag}n{i}"
        gateway, address = f"10.213.{subnet}.{4 * i + 1}", f"10.213.{subnet}.{4 * i + 2}"
        _must("ip", "netns", "add", namespace)
        cleanup.callback(_run, "ip", "netns", "del", namespace)
        _must("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        # Deleting one end deletes both (also when the namespace went first).
        cleanup.callback(_run, "ip", "link", "del", outside)
        _must("ip", "link", "set", inside, "netns", namespace)
        _must("ip", "addr", "add", f"{gateway}/30", "dev", outside)
        _must("ip", "link", "set", outside, "up")
        inside_ns = ("ip", "netns", "exec", namespace, "ip")
        _must(*inside_ns, "addr", "add", f"{address}/30", "dev", inside)
        _must(*inside_ns, "link", "set", inside, "up")
        _must(*inside_ns, "link", "set", "lo", "up")
        _must(*inside_ns, "route", "add", "default", "via", gateway)
        hosts.append(_Host(namespace, address, gateway))
    return hosts


def _start_redis(directory: Path, binds: list[str], password: str,
                 cleanup: ExitStack) -> int:
    """A password-protected redis-server listening on ``binds``; returns its port."""
    server = RedisServer(directory, binds=tuple(binds), password=password)
    server.start()
    cleanup.callback(server.stop)
    return server.port


def _serve_in(host: _Host, redis_url: str, keys_file: Path, log: IO[bytes],
              cleanup: ExitStack) -> subprocess.Popen[bytes]:
    """``bandit serve`` inside the host's namespace (``ip netns exec`` execs, so the Popen is
    the service process itself)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANDIT_")}
    process = subprocess.Popen(
        ["ip", "netns", "exec", host.namespace, sys.executable, "-m", "bandit", "serve",
         "--host", host.address, "--port", "8080", "--redis", redis_url,
         "--api-keys", str(keys_file), "--log-level", "WARNING"],
        env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    cleanup.callback(stop_process, process)
    return process


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    """Until ``/readyz`` (no key needed, as a load balancer asks) says Redis answers."""
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as answer:
                if answer.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            raise AssertionError(f"service at {url} not ready:\n{log.read().decode()[-3000:]}")
        time.sleep(0.1)


def _new_key(name: str, scopes: str, keys_file: Path) -> str:
    created = subprocess.run(
        [sys.executable, "-m", "bandit", "keys", "new", name, "--scopes", scopes,
         "--file", str(keys_file)], capture_output=True, text=True, timeout=60, check=True)
    return created.stdout.splitlines()[0].strip()


@dataclass(frozen=True)
class _Deployment:
    hosts: list[_Host]
    processes: list[subprocess.Popen[bytes]]
    ranker: dict[str, str]
    operator: dict[str, str]


@pytest.fixture
def two_hosts() -> Iterator[_Deployment]:
    """Redis in the root namespace; two `bandit serve` processes, each in its own network
    namespace ("host"), with API keys. Everything is removed afterwards, also on failure."""
    reason = _namespaces_unavailable()
    if reason is not None:
        if os.environ.get("BANDIT_TEST_REQUIRE_NETNS") == "1":
            pytest.fail(f"BANDIT_TEST_REQUIRE_NETNS=1 but {reason}")
        pytest.skip(reason)
    with ExitStack() as cleanup:
        directory = Path(tempfile.mkdtemp(prefix="bandit-hosts-"))
        cleanup.callback(shutil.rmtree, directory, ignore_errors=True)
        # Registered first, so they are removed last: after the processes inside them stop.
        hosts = _make_hosts(2, cleanup)
        password = secrets.token_hex(16)
        port = _start_redis(directory, ["127.0.0.1", *(h.gateway for h in hosts)], password,
                            cleanup)
        keys_file = directory / "keys.txt"
        ranker = _new_key("ranker", "decide", keys_file)
        operator = _new_key("operator", "read,admin", keys_file)
        processes, logs = [], []
        for host in hosts:
            log = cleanup.enter_context(tempfile.TemporaryFile())
            redis_url = f"redis://:{password}@{host.gateway}:{port}/0"
            processes.append(_serve_in(host, redis_url, keys_file, log, cleanup))
            logs.append(log)
        for host, process, log in zip(hosts, processes, logs, strict=True):
            _wait_ready(host.url, process, log)
            # It really runs inside that namespace.
            assert str(process.pid) in _run("ip", "netns", "pids", host.namespace).stdout
        yield _Deployment(hosts, processes, {"Authorization": f"Bearer {ranker}"},
                          {"Authorization": f"Bearer {operator}"})


async def test_two_hosts_in_network_namespaces_share_one_redis(two_hosts: _Deployment) -> None:
    first, second = (host.url for host in two_hosts.hosts)
    ranker, operator = two_hosts.ranker, two_hosts.operator
    experiment = _unique("hosts")
    arms = [f"a{i}" for i in range(6)]
    async with aiohttp.ClientSession() as session:
        for url in (first, second):  # a public address: keys are enforced
            await _call(session, "GET", f"{url}/v1/experiments", status=401)
            await _call(session, "POST", f"{url}/v1/experiments",
                        {"id": experiment, "arms": arms}, status=403, headers=ranker)
        await _create(session, first, experiment, arms, headers=operator)

        # Sticky units: first requests race between the hosts.
        units = [f"u{i}" for i in range(40)]
        requests = [(url, unit) for unit in units for url in (first, second, second, first)]
        answers = await asyncio.gather(*(
            _allocate(session, url, experiment, {"unit": unit, "sticky": True}, ranker)
            for url, unit in requests))
        assigned: dict[str, set[str]] = {}
        for (_, unit), answer in zip(requests, answers, strict=True):
            assigned.setdefault(unit, set()).add(answer["decisions"][0]["arm"])
        assert all(len(arms_of_unit) == 1 for arms_of_unit in assigned.values()), assigned

        # Events sent to both hosts at once, twice each: counted once, seen by both.
        events = [{"id": f"e{i}", "experiment": experiment, "arm": arms[i % 6],
                   "reward": i % 2} for i in range(300)]
        sends = [(url, events[start:start + 50]) for url in (first, second, first, second)
                 for start in range(0, 300, 50)]
        results = await asyncio.gather(*(_events(session, url, batch, ranker)
                                         for url, batch in sends))
        finished = time.monotonic()
        assert sum(r["accepted"] for r in results) == 300
        assert sum(r["duplicates"] for r in results) == 900
        delays = []
        for url in (first, second):
            delay, stats = await _until_counted(session, url, experiment, 300, finished,
                                                operator)
            delays.append(delay)
            assert [arm["n"] for arm in stats["arms"]] == [50] * 6

        # A change on the second host reaches the first host's allocations.
        started = time.monotonic()
        await _call(session, "PATCH", f"{second}/v1/experiments/{experiment}",
                    {"version": 1, "arms": {"pause": ["a0"]}, "reason": "across hosts"},
                    headers=operator)
        delays.append(await _until_version(session, first, experiment, 2, started,
                                           _absent("a0"), ranker))
        assert max(delays) < PROPAGATION_BOUND_S
        _report("across hosts (rewards, then a pause)", delays)
        audit = await _call(session, "GET", f"{first}/v1/experiments/{experiment}/audit",
                            headers=operator)
        assert [(e["version"], e["action"], e["actor"]) for e in audit["entries"]] == [
            (1, "create", "operator"), (2, "update", "operator")]
        assert audit["entries"][1]["changes"] == {"arms.a0": {"old": "active",
                                                              "new": "paused"}}
    for process in two_hosts.processes:
        assert process.poll() is None  # nothing crashed along the way
