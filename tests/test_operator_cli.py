"""`bandit experiments` against a real service: tables, --json, and the exit codes scripts use.

Most tests talk to the in-process aiohttp test server (a real HTTP server on a loopback port,
on a real Redis); the command line is synchronous, so it runs in a thread while the server's
event loop keeps serving. One test drives a real `python -m bandit serve` process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bandit.ops import operator, operator_args
from bandit.store.embedded import free_port
from tests.conftest import ServiceProcess

Client = TestClient[Any, Any]


def invoke(*arguments: str) -> int:
    """Parse as `bandit experiments ...` would and run; the exit code (argparse's included)."""
    parser = argparse.ArgumentParser(prog="bandit experiments")
    operator_args.add_arguments(parser)
    try:
        namespace = parser.parse_args(arguments)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    return operator.run(namespace)


async def cli(url: str, *arguments: str) -> int:
    return await asyncio.to_thread(invoke, "--url", url, *arguments)


@pytest.fixture
async def url(client: Client) -> str:
    return str(client.make_url("")).rstrip("/")


async def create(url: str, experiment_id: str = "hero", *extra: str) -> None:
    assert await cli(url, "create", experiment_id, "--arms", "control,blue,green", *extra) == 0


async def current(client: Client, experiment_id: str = "hero") -> dict[str, Any]:
    response = await client.get(f"/v1/experiments/{experiment_id}")
    assert response.status == 200
    document: dict[str, Any] = await response.json()
    return document


async def test_create_then_list_and_show_print_tables(
        url: str, client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    await create(url, "hero", "--set", "min_share=0.05", "--set", "warmup=10")
    assert "created hero: bernoulli, 3 arms, version 1" in capsys.readouterr().out
    assert (await current(client))["exploration"]["warmup"] == 10

    assert await cli(url, "list") == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["id", "status", "reward", "arms", "version", "owner", "tags",
                              "changed"]
    assert row.split()[:7] == ["hero", "active", "bernoulli", "3", "1", "-", "-"]

    assert await cli(url, "show", "hero") == 0
    out = capsys.readouterr().out
    assert "min_share           0.05" in out
    table = out[out.index("arm "):].split("\n\n")[0].splitlines()
    assert out.rstrip().endswith("rewards: not checked yet (no history samples)")
    assert table[0].split() == ["arm", "state", "n", "served", "mean", "95%", "CI", "P(best)",
                                "expected", "loss", "share"]
    assert [line.split()[:3] for line in table[1:]] == [
        ["control", "active", "0"], ["blue", "active", "0"], ["green", "active", "0"]]
    assert "0.3333" in table[1]  # a uniform share, rounded
    # Aligned columns: every row's state starts where the header's does.
    assert {line.index("active") for line in table[1:]} == {table[0].index("state")}


async def test_show_and_stats_print_the_winner_call_and_health(
        url: str, client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    await create(url)
    assert await cli(url, "stats", "hero", "--threshold", "0.99", "--max-loss", "0.001") == 0
    assert "winner: none yet (needs P(best) >= 0.99 and expected loss <= 0.001)" in \
        capsys.readouterr().out
    events = [{"id": f"e{i}", "experiment": "hero", "arm": "blue", "reward": 1}
              for i in range(300)]
    events += [{"id": f"{arm}{i}", "experiment": "hero", "arm": arm, "reward": 0}
               for i in range(300) for arm in ("control", "green")]
    answer = await (await client.post("/v1/events", json={"events": events})).json()
    assert answer["accepted"] == 900
    await asyncio.sleep(0.2)  # the cache catches up (test refresh interval 0.05 s)
    capsys.readouterr()
    assert await cli(url, "stats", "hero") == 0
    out = capsys.readouterr().out
    assert "winner: blue (P(best) 1.0000" in out
    # No decisions served and no history yet: the checks say so rather than pass or fail.
    assert "sample ratio: not checked yet" in out and "rewards: not checked yet" in out
    assert await cli(url, "stats", "hero", "--threshold", "0.2") == 2
    assert await cli(url, "show", "hero") == 0
    shown = capsys.readouterr().out
    assert "winner: blue" in shown and "sample ratio:" in shown and "owner" in shown


async def test_create_sets_prior_window_and_metadata_and_tune_changes_them(
        url: str, client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    await create(url, "hero", "--prior", "alpha=2", "--prior", "beta=8",
                 "--attribution-window", "3600", "--owner", "growth", "--hypothesis",
                 "blue sells more", "--tags", "homepage,q4")
    document = await current(client)
    assert document["prior"] == {"alpha": 2.0, "beta": 8.0}
    assert document["attribution_window_s"] == 3600.0
    assert (document["owner"], document["hypothesis"], document["tags"]) == (
        "growth", "blue sells more", ["homepage", "q4"])
    capsys.readouterr()
    assert await cli(url, "tune", "hero", "--owner", "", "--tags", "homepage") == 0
    assert capsys.readouterr().out.splitlines()[0] == "hero: version 1 -> 2"
    document = await current(client)
    assert (document["owner"], document["tags"]) == (None, ["homepage"])
    # A change that changes nothing says so and leaves the version alone.
    assert await cli(url, "resume", "hero", "blue") == 0
    assert capsys.readouterr().out.strip() == (
        "hero: nothing changed (the settings already were so); version 2")
    assert (await current(client))["version"] == 2
    assert await cli(url, "create", "bad", "--arms", "a,b", "--prior", "alpha") == 2
    assert await cli(url, "create", "bad", "--arms", "a,b", "--prior", "gamma=1") == 3
    assert "prior: unknown field(s) ['gamma']" in capsys.readouterr().err


async def test_archive_and_unarchive(url: str, client: Client,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    await create(url)
    capsys.readouterr()
    assert await cli(url, "archive", "hero") == 0
    assert capsys.readouterr().out.strip() == "hero: archived (version 2)"
    assert await cli(url, "tune", "hero", "--set", "epsilon=0.1") == 3
    assert "unarchive" in capsys.readouterr().err
    assert await cli(url, "unarchive", "hero") == 0
    assert capsys.readouterr().out.strip() == "hero: active (version 3)"
    assert await cli(url, "unarchive", "hero") == 0
    assert capsys.readouterr().out.strip() == "hero: active (version 3, unchanged)"


async def test_tune_prints_old_and_new_and_json_parses(
        url: str, client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    await create(url)
    capsys.readouterr()
    assert await cli(url, "tune", "hero", "--set", "epsilon=0.1", "--set", "half_life_s=3600",
                     "--reason", "explore more") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "hero: version 1 -> 2"
    assert [line.split() for line in lines[1:]] == [
        ["exploration.epsilon", "0", "->", "0.1"],
        ["exploration.half_life_s", "none", "->", "3600"]]
    assert (await current(client))["exploration"]["epsilon"] == 0.1

    assert await cli(url, "tune", "hero", "--json", "--set", "half_life_s=none",
                     "--set", "control=control:0.2", "--set", "warmup=5") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["version"] == 3
    assert result["changes"] == {
        "exploration.control": {"old": None, "new": {"arm": "control", "share": 0.2}},
        "exploration.half_life_s": {"old": 3600.0, "new": None},
        "exploration.warmup": {"old": 0, "new": 5},
    }
    assert (await current(client))["exploration"]["control"] == {"arm": "control", "share": 0.2}


async def test_stale_version_exits_4_and_changes_nothing(
        url: str, client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    await create(url)
    assert await cli(url, "tune", "hero", "--set", "epsilon=0.1", "--version", "1") == 0
    capsys.readouterr()
    assert await cli(url, "tune", "hero", "--set", "epsilon=0.3", "--version", "1") == 4
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "409" in captured.err and "version 2" in captured.err
    assert "run the command again" in captured.err
    document = await current(client)
    assert (document["version"], document["exploration"]["epsilon"]) == (2, 0.1)


async def test_duplicate_create_is_a_conflict(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    await create(url)
    assert await cli(url, "create", "hero", "--arms", "a,b") == 4
    assert "already exists" in capsys.readouterr().err


async def test_invalid_value_exits_3_with_the_service_message(
        url: str, client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    await create(url)
    refused = await client.patch("/v1/experiments/hero",
                                 json={"version": 1, "exploration": {"min_share": 0.9}})
    message = (await refused.json())["error"]["message"]
    capsys.readouterr()
    assert await cli(url, "tune", "hero", "--set", "min_share=0.9") == 3
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err and "Traceback" not in captured.err
    assert (await current(client))["version"] == 1


@pytest.mark.parametrize("command", [["show", "nope"], ["audit", "nope"],
                                     ["tune", "nope", "--set", "epsilon=0.1"],
                                     ["pause", "nope", "a"]])
async def test_unknown_experiment_exits_3(url: str, command: list[str],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert await cli(url, *command) == 3
    assert "'nope' does not exist" in capsys.readouterr().err


async def test_pause_and_resume_change_arm_states(
        url: str, client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    async def states() -> dict[str, str]:
        return {arm["id"]: arm["state"] for arm in (await current(client))["arms"]}

    await create(url)
    capsys.readouterr()
    assert await cli(url, "pause", "hero", "blue", "green", "--reason", "broken creative") == 0
    assert [line.split() for line in capsys.readouterr().out.splitlines()[1:]] == [
        ["arms.blue", "active", "->", "paused"], ["arms.green", "active", "->", "paused"]]
    assert await states() == {"control": "active", "blue": "paused", "green": "paused"}
    assert await cli(url, "resume", "hero", "green") == 0
    assert await states() == {"control": "active", "blue": "paused", "green": "active"}
    assert await cli(url, "pause", "hero", "purple") == 3
    assert "purple" in capsys.readouterr().err


async def test_audit_lists_create_and_updates_with_reasons(
        url: str, capsys: pytest.CaptureFixture[str]) -> None:
    await create(url)
    assert await cli(url, "tune", "hero", "--set", "epsilon=0.2", "--reason", "more traffic") == 0
    assert await cli(url, "pause", "hero", "green", "--reason", "broken creative") == 0
    capsys.readouterr()
    assert await cli(url, "audit", "hero") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["version", "at", "actor", "action", "changes", "reason"]
    entries = [line.split() for line in lines[1:] if line[:8].strip()]
    assert [(entry[0], entry[3]) for entry in entries] == [
        ("1", "create"), ("2", "update"), ("3", "update")]
    year = time.strftime("%Y", time.gmtime())
    assert all(entry[1].startswith(year) and entry[1].endswith("Z") for entry in entries)
    text = "\n".join(lines)
    assert "exploration.epsilon: 0 -> 0.2" in text and "more traffic" in text
    assert "arms.green: active -> paused" in text and "broken creative" in text
    assert "arms: control, blue, green" in text

    assert await cli(url, "audit", "hero", "--json") == 0
    audit = json.loads(capsys.readouterr().out)
    assert [entry["reason"] for entry in audit["entries"]] == [
        None, "more traffic", "broken creative"]


def test_unreachable_service_exits_5_quickly(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    assert invoke("--url", f"http://127.0.0.1:{free_port()}", "list") == 5
    assert time.monotonic() - started < 5
    captured = capsys.readouterr()
    assert "cannot reach the service" in captured.err and "Traceback" not in captured.err


@pytest.fixture
async def fake_service() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A server answering like a sick or foreign service, recording the headers it got."""
    seen: list[dict[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        if request.path == "/v1/experiments":
            return web.json_response({"experiments": [], "next": None})
        if "/other-shape" in request.path:
            return web.json_response({"unexpected": True})
        if "/slow" in request.path:
            await asyncio.sleep(5)
        if request.path.startswith("/v1/experiments/down"):
            return web.json_response({"error": {"code": "store_unavailable",
                                                "message": "Redis is unreachable"}}, status=503)
        return web.Response(text="<html>not an API</html>")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    async with TestServer(app) as server:
        yield str(server.make_url("")).rstrip("/"), seen


async def test_5xx_timeouts_and_foreign_answers_exit_5(
        fake_service: tuple[str, list[dict[str, str]]],
        capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = fake_service
    assert await cli(url, "show", "down") == 5
    assert "503" in (err := capsys.readouterr().err) and "Redis is unreachable" in err
    assert await cli(url, "audit", "other") == 5
    assert "did not answer JSON" in capsys.readouterr().err
    assert await cli(url, "audit", "other-shape") == 5
    assert "unexpected answer" in (err := capsys.readouterr().err) and "Traceback" not in err
    started = time.monotonic()
    assert await cli(url, "--timeout", "0.3", "show", "slow") == 5
    assert time.monotonic() - started < 3
    assert "no answer" in capsys.readouterr().err
    # advise waits longer by default, but an explicit --timeout still rules.
    started = time.monotonic()
    assert await cli(url, "advise", "slow", "--traffic", "1", "--timeout", "0.3") == 5
    assert time.monotonic() - started < 3
    assert "no answer from" in capsys.readouterr().err


async def test_environment_gives_url_and_api_key(
        fake_service: tuple[str, list[dict[str, str]]], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    url, seen = fake_service
    monkeypatch.setenv("BANDIT_URL", url)
    monkeypatch.setenv("BANDIT_API_KEY", "secret-key")
    assert await asyncio.to_thread(invoke, "list") == 0
    assert capsys.readouterr().out == "no experiments\n"
    assert seen[-1]["Authorization"] == "Bearer secret-key"
    assert await asyncio.to_thread(invoke, "list", "--api-key", "other", "--json") == 0
    assert seen[-1]["Authorization"] == "Bearer other"
    assert json.loads(capsys.readouterr().out) == {"experiments": [], "next": None}


@pytest.mark.parametrize("setting", [
    "epsilon", "epsilon=", "=0.1", "speed=2", "epsilon=abc", "epsilon=nan", "warmup=1.5",
    "control=0.2", "control=arm0:", "control=arm0:lots",
])
def test_bad_settings_are_usage_errors_and_send_nothing(
        setting: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Nothing listens at this URL: a request would exit 5, not 2.
    url = f"http://127.0.0.1:{free_port()}"
    assert invoke("--url", url, "tune", "hero", "--set", setting) == 2
    assert invoke("--url", url, "create", "hero", "--arms", "a,b", "--set", setting) == 2
    assert "--set" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "expected"), [
    ("epsilon=0.1", ("epsilon", 0.1)), ("half_life_s=none", ("half_life_s", None)),
    ("top_two=NULL", ("top_two", None)), ("warmup=50", ("warmup", 50)),
    ("control=arm0:0.2", ("control", {"arm": "arm0", "share": 0.2})),
    ("control=none", ("control", None)), ("temperature=2", ("temperature", 2.0)),
])
def test_setting_values(text: str, expected: tuple[str, Any]) -> None:
    assert operator_args.parse_setting(text) == expected
    assert type(operator_args.parse_setting(text)[1]) is type(expected[1])


@pytest.mark.parametrize("arguments", [
    [], ["pause", "hero"], ["create", "hero"], ["--timeout", "0", "list"],
    ["tune", "hero", "--set", "epsilon=0.1", "--version", "0"], ["frobnicate"],
    ["advise", "hero", "--traffic", "0"], ["advise", "hero", "--seed", "-1"],
    ["advise", "hero", "--delay", "x"],
])
def test_usage_errors_exit_2(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke(*arguments) == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize("url", ["localhost:8080", "http://", "http://127.0.0.1:port"])
def test_bad_url_is_a_usage_error(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke("--url", url, "list") == 2
    assert "--url" in capsys.readouterr().err


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke("--help") == 0
    out = capsys.readouterr().out
    for code in ("0  success", "2  usage error", "3  the service refused", "4  conflict",
                 "5  the service is unreachable"):
        assert code in out
    assert invoke("tune", "--help") == 0
    assert "4  conflict" in capsys.readouterr().out


def test_against_a_real_service_process(service_process: Callable[..., ServiceProcess],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    service = service_process()
    assert invoke("--url", service.url, "create", "live", "--arms", "a,b", "--reward",
                  "gaussian") == 0
    assert invoke("--url", service.url, "tune", "live", "--set", "top_two=0.5") == 0
    assert "exploration.top_two  none -> 0.5" in capsys.readouterr().out
    assert invoke("--url", service.url, "--json", "show", "live") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["exploration"]["top_two"] == 0.5
    assert [arm["arm"] for arm in shown["stats"]["arms"]] == ["a", "b"]
    assert invoke("--url", service.url, "show", "live") == 0
    out = capsys.readouterr().out
    assert "reward              gaussian" in out and "top_two             0.5" in out
    table = out[out.index("arm "):].split("\n\n")[0].splitlines()
    assert [line.split()[:2] for line in table[1:]] == [["a", "active"], ["b", "active"]]


async def test_tune_adds_arms_and_needs_something_to_change(
        url: str, client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    await create(url)
    capsys.readouterr()
    assert await cli(url, "tune", "hero", "--add-arm", "purple", "--add-arm", "teal",
                     "--set", "epsilon=0.05") == 0
    assert [line.split() for line in capsys.readouterr().out.splitlines()[1:]] == [
        ["arms.purple", "none", "->", "active"], ["arms.teal", "none", "->", "active"],
        ["exploration.epsilon", "0", "->", "0.05"]]
    document = await current(client)
    assert [arm["id"] for arm in document["arms"]] == ["control", "blue", "green", "purple",
                                                       "teal"]
    assert await cli(url, "tune", "hero") == 2
    assert "nothing to change" in capsys.readouterr().err
    assert (await current(client))["version"] == 2


async def test_archive(url: str, client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    await create(url)
    capsys.readouterr()
    assert await cli(url, "archive", "hero") == 0
    assert capsys.readouterr().out.strip() == "hero: archived (version 2)"
    assert (await current(client))["status"] == "archived"
    assert await cli(url, "archive", "nope") == 3


async def test_advise_prints_the_forecast_and_changes_nothing(
        url: str, client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    await create(url)
    capsys.readouterr()
    arguments = ["advise", "hero", "--set", "epsilon=0.2", "--add-arm", "teal",
                 "--pause", "blue", "--traffic", "20", "--delay", "5", "--decisions", "500",
                 "--reps", "10", "--seed", "3"]
    assert await cli(url, *arguments) == 0
    text = capsys.readouterr().out
    assert text.startswith("hero (version 1): the next 500 decisions, 25 s at 20/s (given), "
                           "reward delay 5 s (given); 10 simulated futures, seed 3")
    assert ("change: arms.blue: active -> paused; arms.teal: none -> active; "
            "exploration.epsilon: 0 -> 0.2") in text
    assert await cli(url, "--json", *arguments) == 0
    forecast = json.loads(capsys.readouterr().out)
    assert forecast["arms"] == ["control", "blue", "green", "teal"]
    assert forecast["assumptions"]["seed"] == 3
    regret = forecast["difference"]["regret"]["mean"]
    # The same seed gives the same forecast, and the table prints its numbers.
    assert f"{regret:+.4g}" in text
    assert await current(client) == {**await current(client), "version": 1}
    assert [arm["state"] for arm in (await current(client))["arms"]] == ["active"] * 3
    # A proposal the service would refuse is refused here too (exit 3), with its message.
    assert await cli(url, "advise", "hero", "--set", "min_share=0.5", "--traffic", "1") == 3
    assert "min_share" in capsys.readouterr().err


async def test_advise_names_its_options_and_a_call_already_made(
        url: str, client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    await create(url)
    capsys.readouterr()
    # In the first minute no traffic is measured yet: the message names the option to give.
    assert await cli(url, "advise", "hero", "--set", "epsilon=0.1") == 3
    assert "(on the command line, traffic_per_s is --traffic)" in capsys.readouterr().err
    events = [{"id": f"{arm}{i}", "experiment": "hero", "arm": arm,
               "reward": 1 if arm == "blue" else 0}
              for i in range(400) for arm in ("control", "blue", "green")]
    answer = await (await client.post("/v1/events", json={"events": events})).json()
    assert answer["accepted"] == 1200
    await asyncio.sleep(0.2)
    assert await cli(url, "advise", "hero", "--set", "epsilon=0.1", "--traffic", "10",
                     "--decisions", "200", "--reps", "10", "--seed", "1") == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "time to the call" in line)
    assert row.split() == ["time", "to", "the", "call", "(80%)", "now", "(already", "called)",
                           "now", "(already", "called)"]
    # No change proposed: a tie, not "less regret in 0% of the futures".
    assert await cli(url, "advise", "hero", "--traffic", "10", "--decisions", "200", "--reps",
                     "10", "--seed", "1") == 0
    out = capsys.readouterr().out
    assert "the proposal changes nothing" in out and "0% of the simulated futures" not in out


async def test_the_api_key_is_sent_and_named_in_the_audit(
        redis_url: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from bandit.api.app import create_app
    from bandit.api.auth import key_line, new_key
    from bandit.settings import Settings

    operator_key, reader_key = new_key(), new_key()
    keys = ";".join([key_line("ops", ["read", "admin"], operator_key),
                     key_line("viewer", ["read"], reader_key)])
    settings = Settings(redis_url=redis_url, refresh_interval_s=0.05, api_keys=keys)
    async with TestClient(TestServer(create_app(settings))) as keyed:
        url = str(keyed.make_url("")).rstrip("/")
        assert await cli(url, "list") != 0
        assert "401" in capsys.readouterr().err
        assert await cli(url, "--api-key", reader_key, "create", "hero",
                         "--arms", "a,b") != 0
        assert "admin" in capsys.readouterr().err
        monkeypatch.setenv("BANDIT_API_KEY", operator_key)
        assert await cli(url, "create", "hero", "--arms", "a,b") == 0
        capsys.readouterr()
        assert await cli(url, "--api-key", reader_key, "--json", "audit", "hero") == 0
        entries = json.loads(capsys.readouterr().out)["entries"]
        assert [(e["actor"], e["action"]) for e in entries] == [("ops", "create")]


async def test_list_follows_every_page(capsys: pytest.CaptureFixture[str]) -> None:
    """The service answers the list a page at a time; the command shows all of them."""
    pages = {None: ([f"e{i:04d}" for i in range(1000)], "e0999"), "e0999": (["e1000"], None)}
    asked: list[str | None] = []

    async def handle(request: web.Request) -> web.Response:
        after = request.query.get("after")
        asked.append(after)
        ids, following = pages[after]
        return web.json_response({"experiments": [
            {"id": i, "reward": "bernoulli", "arms": 2, "version": 1, "status": "active"}
            for i in ids], "next": following})

    app = web.Application()
    app.router.add_get("/v1/experiments", handle)
    async with TestServer(app) as server:
        url = str(server.make_url("")).rstrip("/")
        assert await asyncio.to_thread(invoke, "--url", url, "list", "--json") == 0
    assert asked == [None, "e0999"]
    listed = json.loads(capsys.readouterr().out)
    assert [e["id"] for e in listed["experiments"]] == [f"e{i:04d}" for i in range(1001)]


async def test_show_prints_a_contextual_experiments_model(
        url: str, client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    response = await client.post("/v1/experiments", json={
        "id": "feed", "arms": ["a", "b"], "reward": "bernoulli", "model": {
            "type": "linear", "features": [
                {"name": "region", "type": "categorical", "values": ["eu", "us"]},
                {"name": "visits", "type": "numeric", "scale": [0, 10]}]}})
    assert response.status == 201
    assert await cli(url, "show", "feed") == 0
    out = capsys.readouterr().out
    assert "model               linear, 5 columns; features: region (categorical), " \
           "visits (numeric)" in out
    assert "prior               precision=1, intercept_precision=0.01, alpha=1, beta=0.25" in out
    assert "winner: no call for a contextual experiment" in out
