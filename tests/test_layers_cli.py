"""`bandit layers` and the fixed/targeted options of `bandit experiments`, against a real
service: tables, the bucket bar, --json, and the exit codes of bad input (with nothing changed).

As in test_operator_cli: most tests talk to the in-process aiohttp test server (a real HTTP
server on a loopback port, on the test session's redis-server), the synchronous command line
running in a thread; one drives `python -m bandit` in a process against `bandit serve`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bandit.ops import layerscli, operator, operator_args
from bandit.settings import Settings
from tests.conftest import ServiceProcess
from tests.test_layers_api import _redis_keys

Client = TestClient[Any, Any]


def _invoke(add_arguments: Callable[[argparse.ArgumentParser], None],
            run: Callable[[argparse.Namespace], int], arguments: tuple[str, ...]) -> int:
    parser = argparse.ArgumentParser(prog="bandit")
    add_arguments(parser)
    try:
        namespace = parser.parse_args(arguments)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    return run(namespace)


async def layers(url: str, *arguments: str) -> int:
    """`bandit layers --url URL ...`: the exit code (argparse's included)."""
    return await asyncio.to_thread(_invoke, layerscli.add_arguments, layerscli.run,
                                   ("--url", url, *arguments))


async def experiments(url: str, *arguments: str) -> int:
    return await asyncio.to_thread(_invoke, operator_args.add_arguments, operator.run,
                                   ("--url", url, *arguments))


@pytest.fixture
async def url(client: Client) -> str:
    return str(client.make_url("")).rstrip("/")


async def get(client: Client, path: str) -> Any:
    response = await client.get(path)
    assert response.status == 200, await response.text()
    return await response.json()


async def homepage(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Experiments headline, ranking, colour; layer homepage: headline [0, 2000), ranking
    [5000, 6000) and [9000, 9010)."""
    for name in ("headline", "ranking", "colour"):
        assert await experiments(url, "create", name, "--arms", "a,b") == 0
    assert await layers(url, "create", "homepage", "--default", "control", "--range",
                        "headline=0:2000", "--range", "ranking=5000:6000,9000:9010",
                        "--reason", "spring launch") == 0
    capsys.readouterr()


def table_rows(out: str, header_start: str) -> list[list[str]]:
    """The rows of the table whose header line starts with ``header_start``, split on runs of
    two or more spaces."""
    lines = out.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[first + 1:]:
        if not line.strip():
            break
        rows.append([cell for cell in line.split("  ") if cell.strip()])
    return [[cell.strip() for cell in row] for row in rows]


def bar_of(out: str) -> str:
    line = next(line for line in out.splitlines() if line.startswith("|"))
    assert line.endswith("|") and len(line) == 102, line
    return line[1:-1]


async def test_create_show_and_list_print_owners_shares_free_ranges_and_the_bar(
        url: str, client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("headline", "ranking"):
        assert await experiments(url, "create", name, "--arms", "a,b") == 0
    capsys.readouterr()
    assert await layers(url, "create", "homepage", "--salt", "hp-2024", "--default",
                        "control", "--range", "headline=0:2000", "--range",
                        "ranking=5000:6000,9000:9010") == 0
    out = capsys.readouterr().out
    assert out.startswith("created layer homepage, version 1\n")
    layer = await get(client, "/v1/layers/homepage")
    assert layer["salt"] == "hp-2024" and layer["default"] == "control"
    assert layer["ranges"] == {"headline": [[0, 2000]], "ranking": [[5000, 6000], [9000, 9010]]}

    assert await layers(url, "show", "homepage") == 0
    out = capsys.readouterr().out
    head = dict(line.split(None, 1) for line in out.splitlines()[:4])
    assert head == {"layer": "homepage", "salt": "hp-2024", "default": "control",
                    "version": "1"}
    assert table_rows(out, "experiment") == [
        ["headline", "A", "0:2000", "2,000", "20.00%"],
        ["ranking", "B", "5000:6000, 9000:9010", "1,010", "10.10%"],
        ["free (default: control)", ".", "2000:5000, 6000:9000, 9010:10000", "6,990",
         "69.90%"]]
    # 100 characters of 100 buckets: headline's 20 cells, ranking's 10, and the cell of
    # 9000:9010 in lower case (ranking owns 10 of its 100 buckets).
    assert bar_of(out) == "A" * 20 + "." * 30 + "B" * 10 + "." * 30 + "b" + "." * 9

    assert await layers(url, "list") == 0
    assert table_rows(capsys.readouterr().out, "layer") == [
        ["homepage", "1", "2", "30.1%", "69.9%", "control", "hp-2024"]]
    assert await layers(url, "list", "--json") == 0
    assert json.loads(capsys.readouterr().out) == await get(client, "/v1/layers")
    assert await layers(url, "--json", "show", "homepage") == 0
    assert json.loads(capsys.readouterr().out) == layer


async def test_grow_shrink_remove_and_default_change_the_layer_and_its_audit(
        url: str, client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    await homepage(url, capsys)
    assert await layers(url, "grow", "homepage", "headline", "2000:2500", "3000:3500",
                        "--reason", "more traffic") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:2] == [
        "homepage: version 1 -> 2",
        "  ranges.headline  0:2000 -> 0:2500, 3000:3500"]
    assert bar_of(out)[:35] == "A" * 25 + "." * 5 + "A" * 5
    # A new experiment joins by growing from nothing.
    assert await layers(url, "grow", "homepage", "colour", "7000:8000") == 0
    assert "ranges.colour  none -> 7000:8000" in capsys.readouterr().out
    assert await layers(url, "shrink", "homepage", "ranking", "5500:6000", "9000:9010") == 0
    assert "ranges.ranking  5000:6000, 9000:9010 -> 5000:5500" in capsys.readouterr().out
    assert await layers(url, "remove", "homepage", "colour") == 0
    assert "ranges.colour  7000:8000 -> none" in capsys.readouterr().out
    assert await layers(url, "default", "homepage", "--none") == 0
    assert "default  control -> none" in capsys.readouterr().out
    assert await layers(url, "--json", "default", "homepage", "old-page") == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["changes"] == {"default": {"old": None, "new": "old-page"}}
    layer = await get(client, "/v1/layers/homepage")
    assert (layer["version"], layer["default"]) == (7, "old-page")
    assert layer["ranges"] == {"headline": [[0, 2500], [3000, 3500]], "ranking": [[5000, 5500]]}
    assert layer["shares"] == {"headline": 0.3, "ranking": 0.05}
    # The same default again changes nothing, and says so.
    assert await layers(url, "default", "homepage", "old-page") == 0
    assert capsys.readouterr().out.strip() == (
        "homepage: nothing changed (the layer already was so); version 7")

    assert await layers(url, "audit", "homepage") == 0
    out = capsys.readouterr().out
    rows = table_rows(out, "version")
    entries = [row for row in rows if row[0].isdigit()]
    assert [row[0] for row in entries] == ["1", "2", "3", "4", "5", "6", "7"]
    assert [row[3] for row in entries] == ["create"] + ["update"] * 6
    assert entries[0][-1] == "spring launch" and entries[1][-1] == "more traffic"
    assert "ranges.ranking: 5000:6000, 9000:9010" in out  # the creation's ranges
    assert "ranges.headline: 0:2000 -> 0:2500, 3000:3500" in out
    assert "default: none -> old-page" in out
    assert await layers(url, "audit", "homepage", "--json") == 0
    assert json.loads(capsys.readouterr().out) == await get(client, "/v1/layers/homepage/audit")


@pytest.mark.parametrize(("command", "code", "words"), [
    # The service refuses (exit 3) and names what is wrong.
    (["grow", "homepage", "ranking", "1500:2500"], 3, ["422", "overlap"]),
    (["grow", "homepage", "headline", "1000:3000"], 3, ["overlap"]),
    (["grow", "homepage", "nobody", "3000:4000"], 3, ["no experiment 'nobody'"]),
    (["shrink", "homepage", "colour", "0:10"], 3, ["colour", "no range"]),
    (["create", "other", "--range", "colour=0:100,50:200"], 3, ["overlap"]),
    (["show", "nope"], 3, ["404"]),
    (["grow", "nope", "headline", "0:10"], 3, ["404"]),
    # Conflicts (exit 4): the id exists, the experiment is in another layer, a stale version.
    (["create", "homepage"], 4, ["409", "already exists"]),
    (["create", "other", "--range", "headline=3000:4000"], 4,
     ["'headline' is in layer 'homepage'"]),
    (["grow", "homepage", "headline", "3000:3100", "--version", "7"], 4,
     ["version 1", "nothing was changed", "bandit layers show homepage"]),
    # Usage errors (exit 2): nothing is sent.
    (["grow", "homepage", "headline", "3000-4000"], 2, ["bad range '3000-4000'", "START:END"]),
    (["grow", "homepage", "headline", "3000:abc"], 2, ["bad range '3000:abc'"]),
    (["grow", "homepage", "headline", "4000:3000"], 2, ["0 <= START < END <= 10000"]),
    (["grow", "homepage", "headline", "9000:10001"], 2, ["bad range '9000:10001'"]),
    (["shrink", "homepage", "headline", "--", "-5:10"], 2, ["bad range '-5:10'"]),
    (["grow", "homepage", "headline"], 2, ["START:END"]),
    (["create", "other", "--range", "colour"], 2, ["EXPERIMENT=START:END"]),
    (["create", "other", "--range", "colour=0:10,"], 2, ["bad range ''"]),
    (["default", "homepage"], 2, ["NAME", "--none"]),
    (["default", "homepage", "x", "--none"], 2, ["not allowed"]),
    (["grow", "homepage", "headline", "3000:3100", "--version", "0"], 2, ["version"]),
])
async def test_bad_input_is_named_exits_nonzero_and_changes_nothing(
        url: str, settings: Settings, capsys: pytest.CaptureFixture[str],
        command: list[str], code: int, words: list[str]) -> None:
    await homepage(url, capsys)
    before = _redis_keys(settings)
    assert await layers(url, *command) == code
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    for word in words:
        assert word in captured.err, captured.err
    assert _redis_keys(settings) == before


async def test_a_change_based_on_a_read_layer_is_refused_once_the_layer_moved_on(
        url: str, client: Client, settings: Settings,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Someone else changed the layer after ours was read: 409, exit 4, nothing changed,
    and no retry (the command says to review and run again)."""
    await homepage(url, capsys)
    response = await client.patch("/v1/layers/homepage", json={
        "version": 1, "add": {"colour": [[8000, 9000]]}})
    assert response.status == 200
    before = _redis_keys(settings)
    assert await layers(url, "remove", "homepage", "ranking", "--version", "1") == 4
    err = capsys.readouterr().err
    assert "is at version 2, not 1" in err
    assert "run the command again without --version" in err
    assert _redis_keys(settings) == before
    # Read afresh (no --version), the same command goes through.
    assert await layers(url, "remove", "homepage", "ranking") == 0
    assert "homepage: version 2 -> 3" in capsys.readouterr().out


async def test_experiments_create_and_tune_a_fixed_targeted_test(
        url: str, client: Client, settings: Settings, scratch_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    rule = {"any": [{"all": [{"attribute": "country", "op": "in", "values": ["DE", "FR"]},
                             {"attribute": "app_version", "op": "semver_gte",
                              "value": "2.3.0"}]},
                    {"all": [{"attribute": "beta", "op": "eq", "value": True}]}]}
    assert await experiments(url, "create", "colour", "--arms", "red,green", "--policy",
                             "fixed", "--weight", "red=3", "--weight", "green=1",
                             "--targeting", json.dumps(rule)) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "created colour: bernoulli, 2 arms, version 1, fixed weights"
    assert "  weights.red = 3" in out and "epsilon" not in out
    document = await get(client, "/v1/experiments/colour")
    assert (document["policy"], document["weights"], document["targeting"]) == (
        "fixed", {"red": 3.0, "green": 1.0}, rule)

    assert await experiments(url, "show", "colour") == 0
    out = capsys.readouterr().out
    fields = dict(line.split(None, 1) for line in out.split("\n\n")[0].splitlines())
    assert fields["policy"] == "fixed (an A/B test serving its weights)"
    assert fields["weights"] == "red=3 (75.0%), green=1 (25.0%)"
    assert fields["targeting"] == ('(country in ["DE", "FR"] and app_version semver_gte "2.3.0") '
                                   "or beta eq true")
    assert "epsilon" not in fields  # exploration settings do not apply to a fixed test

    # Weights and targeting change by tune (the rule from a file here), audited.
    rule_file = scratch_dir / "rule.json"
    rule_file.write_text(json.dumps({"any": [{"all": [
        {"attribute": "country", "op": "eq", "value": "DE"}]}]}))
    assert await experiments(url, "tune", "colour", "--weight", "green=3", "--targeting",
                             f"@{rule_file}", "--reason", "even split, Germany only") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "colour: version 1 -> 2"
    assert [line.split(None, 1) for line in lines[1:]] == [
        ["targeting", '(country in ["DE", "FR"] and app_version semver_gte "2.3.0") or beta '
                      'eq true -> country eq "DE"'],
        ["weights.green", "1 -> 3"]]
    assert await experiments(url, "tune", "colour", "--targeting", "none") == 0
    document = await get(client, "/v1/experiments/colour")
    assert (document["version"], document["weights"], document["targeting"]) == (
        3, {"red": 3.0, "green": 3.0}, None)
    assert await experiments(url, "show", "colour") == 0
    assert "targeting           everyone" in capsys.readouterr().out

    # A bandit shows its policy and exploration settings as before.
    assert await experiments(url, "create", "bandit", "--arms", "a,b") == 0
    assert await experiments(url, "show", "bandit") == 0
    out = capsys.readouterr().out
    assert "policy              thompson" in out and "epsilon             0" in out

    await asyncio.sleep(0.2)  # the change feed's 100 ms `notified` marks expire
    before = _redis_keys(settings)
    refusals: list[tuple[list[str], int, list[str]]] = [
        # The service's own checks (exit 3), its message shown.
        (["tune", "colour", "--set", "epsilon=0.1"], 3, ["exploration"]),
        (["tune", "bandit", "--weight", "a=1"], 3, ["weights", "fixed"]),
        (["tune", "colour", "--add-arm", "blue"], 3, ["weights", "'blue'"]),
        (["create", "ab", "--arms", "a,b", "--policy", "fixed"], 3, ["weights"]),
        (["create", "ab", "--arms", "a,b", "--targeting",
          '{"any": [{"all": [{"attribute": "x", "op": "like", "value": 1}]}]}'], 3,
         ["targeting.any[0].all[0]"]),
        # Usage errors (exit 2): nothing is sent.
        (["tune", "colour", "--weight", "red"], 2, ["ARM=WEIGHT"]),
        (["tune", "colour", "--weight", "red=-1"], 2, ["weight of red", ">= 0"]),
        (["tune", "colour", "--weight", "red=lots"], 2, ["weight of red", "a number"]),
        # A second weight of one arm is a typo whichever was meant (the attacker run: kept the
        # last silently).
        (["tune", "colour", "--weight", "red=1", "--weight", "red=2"], 2,
         ["--weight", "'red' given twice"]),
        (["tune", "colour", "--targeting", "{country: DE}"], 2, ["not JSON"]),
        (["tune", "colour", "--targeting", f"@{scratch_dir / 'missing.json'}"], 2,
         ["cannot read", "missing.json"]),
        (["create", "ab", "--arms", "a,b", "--policy", "greedy"], 2, ["invalid choice"]),
    ]
    for command, code, words in refusals:
        assert await experiments(url, *command) == code, command
        captured = capsys.readouterr()
        assert captured.out == "" and "Traceback" not in captured.err
        for word in words:
            assert word in captured.err, (command, captured.err)
    assert _redis_keys(settings) == before


def test_the_bandit_command_runs_layers_against_a_real_service_process(
        service_process: Callable[..., ServiceProcess]) -> None:
    service = service_process()

    def bandit(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bandit", *arguments, "--url",
                               service.url], capture_output=True, text=True, timeout=60,
                              check=False)

    assert bandit("experiments", "create", "ab", "--arms", "a,b", "--policy", "fixed",
                  "--weight", "a=1", "--weight", "b=1").returncode == 0
    created = bandit("layers", "create", "checkout", "--range", "ab=0:5000")
    assert created.returncode == 0, created.stderr
    grown = bandit("layers", "grow", "checkout", "ab", "5000:7500")
    assert grown.returncode == 0, grown.stderr
    assert "ranges.ab  0:5000 -> 0:7500" in grown.stdout
    assert bar_of(grown.stdout) == "A" * 75 + "." * 25
    overlapping = bandit("layers", "grow", "checkout", "ab", "7000:8000")
    assert overlapping.returncode == 3 and "overlap" in overlapping.stderr
    bad = bandit("layers", "shrink", "checkout", "ab", "7000")
    assert bad.returncode == 2 and "bad range '7000'" in bad.stderr
    shown = bandit("layers", "show", "checkout", "--json")
    assert shown.returncode == 0
    assert json.loads(shown.stdout)["shares"] == {"ab": 0.75}
    helped = bandit("layers", "--help")
    assert helped.returncode == 0 and "4  conflict (409)" in helped.stdout
