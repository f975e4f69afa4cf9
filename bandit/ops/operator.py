"""``bandit experiments``: operator commands against a running service.

Commands: ``list``, ``show ID``, ``create ID --arms a,b,c``, ``tune ID --set name=value
[--add-arm ARM]``, ``pause ID ARM...``, ``resume ID ARM...``, ``archive ID``, ``audit ID``,
``advise ID --set name=value ...`` (the tuning advisor's forecast; nothing is changed).
Tables are for people; ``--json`` prints the service's JSON as it answered (``show --json``
adds the stats response under ``"stats"``), for scripts.

Exit codes (scripts can rely on them)::

    0  success
    2  usage error: bad arguments or a bad --set value; nothing was sent
    3  the service refused the request (4xx other than 409): its message is on stderr
    4  conflict (409): the experiment changed meanwhile (stale --version) or the id exists;
       nothing was changed, reload and run the command again
    5  the service is unreachable, timed out, answered 5xx (e.g. 503 when Redis is down),
       or answered something that is not the API's JSON
    130  interrupted (Ctrl-C)

Only the standard library talks HTTP here (``urllib.request``): the operator command line
needs no client dependency beyond what ``bandit`` already installs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from http.client import HTTPException
from typing import Any

from bandit import __version__

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT_S = 10.0
#: A forecast simulates for seconds: ``advise`` waits this long unless --timeout says otherwise.
ADVISE_TIMEOUT_S = 120.0

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_CONFLICT = 4
EXIT_UNAVAILABLE = 5
EXIT_INTERRUPTED = 130

_PROG = "bandit experiments"

EPILOG = """\
exit codes:
  0  success
  2  usage error (bad arguments or --set value; nothing was sent)
  3  the service refused the request (4xx); its message is printed on stderr
  4  conflict (409): a stale --version or an existing id; reload and run again
  5  the service is unreachable, timed out, answered 5xx (e.g. 503), or not the API's JSON

environment:
  BANDIT_URL      service URL (default http://127.0.0.1:8080)
  BANDIT_API_KEY  API key, sent as "Authorization: Bearer KEY"
"""

# The exploration settings of the SPEC and how a --set value for each is read.
_SETTINGS = ("epsilon", "min_share", "max_share", "temperature", "half_life_s", "warmup",
             "top_two", "control")


class _Failure(Exception):
    """A command that cannot succeed: the message for stderr and the exit code."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


# -- arguments ---------------------------------------------------------------------------------


def parse_setting(text: str) -> tuple[str, Any]:
    """``name=value`` from ``--set`` as ``(name, JSON value)``.

    Numbers are floats (integers for ``warmup``), ``none``/``null`` is null, ``control`` takes
    ``ARM:SHARE``. Raises ``argparse.ArgumentTypeError`` (a usage error) on anything else.
    """
    name, separator, raw = text.partition("=")
    name, raw = name.strip(), raw.strip()
    if not separator or not name or not raw:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    if name not in _SETTINGS:
        raise argparse.ArgumentTypeError(
            f"unknown setting {name!r} (one of: {', '.join(_SETTINGS)})")
    if raw.lower() in ("none", "null"):
        return name, None
    if name == "control":
        arm, colon, share = raw.rpartition(":")
        if not colon or not arm:
            raise argparse.ArgumentTypeError(
                f"control: expected ARM:SHARE (e.g. control=arm0:0.2) or none, got {raw!r}")
        return name, {"arm": arm, "share": _finite(share, "control share")}
    if name == "warmup":
        try:
            return name, int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"warmup: expected a whole number of observations, got {raw!r}") from None
    return name, _finite(raw, name)


def _finite(raw: str, what: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: expected a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{what}: expected a finite number, got {raw!r}")
    return value


def _arm_list(text: str) -> list[str]:
    arms = [arm.strip() for arm in text.split(",") if arm.strip()]
    if not arms:
        raise argparse.ArgumentTypeError("expected comma-separated arm ids, e.g. a,b,c")
    return arms


def _number_above(low: float, *, inclusive: bool, name: str | None = None,
                  what: str = "a number") -> Callable[[str], float]:
    """An argparse type: a finite number above ``low`` (or equal to it, ``inclusive``)."""
    relation = ">=" if inclusive else ">"
    prefix = f"{name}: " if name else ""

    def parse(text: str) -> float:
        value = _finite(text, name or "value")
        if value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(
                f"{prefix}expected {what} {relation} {low:g}, got {text!r}")
        return value

    return parse


def _whole_number(low: int, what: str = "a whole number") -> Callable[[str], int]:
    """An argparse type: an integer of at least ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {what} >= {low}, got {text!r}")
        return value

    return parse


_timeout = _number_above(0, inclusive=False, name="timeout", what="seconds")
_version = _whole_number(1, "a version number")
_positive_int = _whole_number(1)
_non_negative_int = _whole_number(0)
_positive_float = _number_above(0, inclusive=False)
_non_negative_float = _number_above(0, inclusive=True)


def _add_connection_options(parser: argparse.ArgumentParser, *, inherited: bool) -> None:
    # The options are accepted before and after the command (`--json list`, `list --json`);
    # on the commands they default to SUPPRESS so they never overwrite the ones given before.
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if inherited else value

    group = parser.add_argument_group("connection and output")
    group.add_argument("--url", default=default(None),
                       help=f"service URL (default: $BANDIT_URL or {DEFAULT_URL})")
    group.add_argument("--api-key", default=default(None), metavar="KEY",
                       help="API key sent as 'Authorization: Bearer KEY' "
                            "(default: $BANDIT_API_KEY)")
    group.add_argument("--timeout", type=_timeout, default=default(None),
                       metavar="SECONDS",
                       help=f"seconds to wait for the service (default {DEFAULT_TIMEOUT_S:g}; "
                            f"{ADVISE_TIMEOUT_S:g} for advise, which simulates)")
    group.add_argument("--json", action="store_true", default=default(False),
                       help="print the service's JSON instead of tables")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``experiments`` options and commands to ``parser``; ``run`` executes them."""
    parser.description = parser.description or (
        "Operator commands against a running service: list, show, create, tune, pause and\n"
        "resume arms, archive, audit, advise. Tables for people, --json for scripts.")
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    _add_connection_options(parser, inherited=False)
    commands = parser.add_subparsers(dest="operation", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, epilog=EPILOG,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_connection_options(sub, inherited=True)
        return sub

    command("list", "list experiments (id, reward, arms, version, status)")
    show = command("show", "settings, arm states and per-arm statistics of one experiment")
    show.add_argument("id", metavar="ID")
    create = command("create", "create an experiment")
    create.add_argument("id", metavar="ID")
    create.add_argument("--arms", type=_arm_list, required=True, metavar="A,B,C",
                        help="arm ids, comma-separated (2 to 1000)")
    create.add_argument("--reward", choices=("bernoulli", "gaussian"), default="bernoulli",
                        help="bernoulli: rewards in [0, 1]; gaussian: any finite number "
                             "(default bernoulli)")
    create.add_argument("--set", dest="settings", type=parse_setting, action="append",
                        default=[], metavar="NAME=VALUE",
                        help="an exploration setting (repeatable), e.g. min_share=0.05")
    tune = command("tune", "change exploration settings live, add arms")
    advise = command("advise", "forecast a change against the current settings (the tuning "
                               "advisor; nothing is changed)")
    for sub in (tune, advise):
        sub.add_argument("id", metavar="ID")
        sub.add_argument("--set", dest="settings", type=parse_setting, action="append",
                         default=[], metavar="NAME=VALUE",
                         help="a setting to change (repeatable): epsilon=0.1, half_life_s=none, "
                              "warmup=50, control=ARM:SHARE, ...")
        sub.add_argument("--add-arm", dest="add", action="append", default=[], metavar="ARM",
                         help="a new arm (repeatable); it starts from the prior")
    for flag in ("pause", "resume"):
        advise.add_argument(f"--{flag}", action="append", default=[], metavar="ARM",
                            help=f"{flag} this arm in the proposal (repeatable)")
    advise.add_argument("--decisions", type=_positive_int, metavar="N",
                        help="horizon in decisions (default: an hour of the measured traffic)")
    advise.add_argument("--traffic", type=_positive_float, metavar="PER_S",
                        help="decisions per second (default: measured from the history)")
    advise.add_argument("--delay", type=_non_negative_float, metavar="SECONDS",
                        help="mean reward delay (default: measured from the history)")
    advise.add_argument("--reps", type=_positive_int, metavar="N",
                        help="simulated futures (default 100)")
    advise.add_argument("--seed", type=_non_negative_int, metavar="N",
                        help="seed, to repeat a forecast exactly")
    for name, verb in (("pause", "pause arms (no traffic; their posterior is kept)"),
                       ("resume", "resume paused arms")):
        sub = command(name, verb)
        sub.add_argument("id", metavar="ID")
        sub.add_argument("arms", nargs="+", metavar="ARM")
    for sub in (tune, commands.choices["pause"], commands.choices["resume"]):
        sub.add_argument("--reason", metavar="TEXT", help="why, for the audit log")
        sub.add_argument("--version", type=_version, metavar="N",
                         help="the version the change is based on (default: the current one, "
                              "read first); a stale version is refused with exit code 4")
    archive = command("archive", "archive an experiment (it stops serving; its data is kept)")
    archive.add_argument("id", metavar="ID")
    audit = command("audit", "the audit log of configuration changes")
    audit.add_argument("id", metavar="ID")


# -- HTTP --------------------------------------------------------------------------------------


class _Client:
    """JSON over HTTP with every failure turned into a ``_Failure`` with its exit code."""

    def __init__(self, url: str, *, timeout_s: float, api_key: str | None) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.headers = {"Accept": "application/json", "User-Agent": f"bandit/{__version__}"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data=data, headers=headers,
                                         method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            with error:
                raise _http_failure(error.code, _error_message(error)) from None
        except (urllib.error.URLError, OSError, HTTPException) as error:
            raise _Failure(EXIT_UNAVAILABLE, self._unreachable(error)) from None
        try:
            return json.loads(raw)
        except ValueError:
            raise _Failure(EXIT_UNAVAILABLE,
                           f"{self.url} did not answer JSON: is it a bandit service?") from None

    def _unreachable(self, error: Exception) -> str:
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        if isinstance(reason, TimeoutError | socket.timeout):
            return f"no answer from {self.url} within {self.timeout_s:g} s"
        return f"cannot reach the service at {self.url}: {reason}"


def _error_message(error: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(error.read())
        message = body["error"]["message"]
    except (ValueError, KeyError, TypeError, OSError, HTTPException):
        message = error.reason
    return str(message)


def _http_failure(status: int, message: str) -> _Failure:
    if status == 409:
        return _Failure(EXIT_CONFLICT, f"conflict (HTTP 409): {message}")
    if status >= 500:
        return _Failure(EXIT_UNAVAILABLE, f"service unavailable (HTTP {status}): {message}")
    return _Failure(EXIT_REFUSED, f"refused (HTTP {status}): {message}")


def _experiment_path(experiment_id: str, suffix: str = "") -> str:
    return f"/v1/experiments/{urllib.parse.quote(experiment_id, safe='')}{suffix}"


# -- commands ----------------------------------------------------------------------------------


def run(arguments: argparse.Namespace) -> int:
    """Execute the command parsed by a parser given to ``add_arguments``; the exit code."""
    url = arguments.url or os.environ.get("BANDIT_URL") or DEFAULT_URL
    if not _valid_url(url):
        print(f"{_PROG}: --url must be an http:// or https:// URL, got {url!r}",
              file=sys.stderr)
        return EXIT_USAGE
    timeout_s = arguments.timeout
    if timeout_s is None:
        timeout_s = ADVISE_TIMEOUT_S if arguments.operation == "advise" else DEFAULT_TIMEOUT_S
    client = _Client(url, timeout_s=timeout_s,
                     api_key=arguments.api_key or os.environ.get("BANDIT_API_KEY"))
    fetch, render = _COMMANDS[arguments.operation]
    try:
        document = fetch(client, arguments)
        text = json.dumps(document, indent=2) if arguments.json else render(document)
    except _Failure as failure:
        print(f"{_PROG} {arguments.operation}: {failure.message}", file=sys.stderr)
        return failure.exit_code
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as error:
        # JSON of another shape than the API's: a foreign server or an incompatible version.
        print(f"{_PROG} {arguments.operation}: unexpected answer from {client.url} "
              f"({type(error).__name__}: {error})", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    try:
        print(text)
    except BrokenPipeError:
        # The reader went away (`... | head`): not an error worth a traceback. Point stdout
        # at /dev/null so the interpreter's final flush does not fail again.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


def _valid_url(url: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


# Each command is a fetch (HTTP; its result is what --json prints) and a pure render to text.

def _fetch_list(client: _Client, arguments: argparse.Namespace) -> Any:
    """Every experiment: the list answers a page at a time."""
    experiments: list[Any] = []
    after: str | None = None
    while True:
        query = "?limit=1000" + ("" if after is None else f"&after={after}")
        page = client.get(f"/v1/experiments{query}")
        experiments += page["experiments"]
        after = page["next"]
        if after is None:
            return {"experiments": experiments, "next": None}


def _render_list(document: Any) -> str:
    experiments = document["experiments"]
    if not experiments:
        return "no experiments"
    return _table(["id", "reward", "arms", "version", "status"],
                  [[e["id"], e["reward"], e["arms"], e["version"], e["status"]]
                   for e in experiments], numeric={2, 3})


def _fetch_show(client: _Client, arguments: argparse.Namespace) -> Any:
    experiment = client.get(_experiment_path(arguments.id))
    return {**experiment, "stats": client.get(_experiment_path(arguments.id, "/stats"))}


def _render_show(document: Any) -> str:
    fields = [
        ("experiment", document["id"]),
        ("status", document["status"]),
        ("reward", document["reward"]),
        ("prior", _value(document.get("prior"))),
        ("version", f"{document['version']} (updated {_when(document.get('updated_at'))})"),
        ("created", _when(document.get("created_at"))),
        ("attribution window", f"{_value(document.get('attribution_window_s'))} s"),
    ]
    fields += [(name, _value(value)) for name, value in document["exploration"].items()]
    width = max(len(name) for name, _ in fields)
    lines = [f"{name:<{width}}  {text}" for name, text in fields]
    arms = document["stats"]["arms"]
    # One number of decimals per column, so values line up on the decimal point.
    mean_decimals = _decimals([arm["mean"] for arm in arms]
                              + [bound for arm in arms for bound in arm["ci95"]])
    loss_decimals = _decimals([arm["expected_loss"] for arm in arms])
    rows = [[arm["arm"], arm["state"], _count(arm["n"]), arm["served"],
             _fixed(arm["mean"], mean_decimals), _interval(arm["ci95"], mean_decimals),
             _fixed(arm["p_best"], 4), _fixed(arm["expected_loss"], loss_decimals),
             _fixed(arm["share"], 4)]
            for arm in arms]
    table = _table(["arm", "state", "n", "served", "mean", "95% CI", "P(best)",
                    "expected loss", "share"], rows, numeric={2, 3, 4, 6, 7, 8})
    return "\n".join([*lines, "", table])


def _fetch_create(client: _Client, arguments: argparse.Namespace) -> Any:
    body: dict[str, Any] = {"id": arguments.id, "arms": arguments.arms,
                            "reward": arguments.reward}
    if arguments.settings:
        body["exploration"] = dict(arguments.settings)
    return client.request("POST", "/v1/experiments", body)


def _render_create(document: Any) -> str:
    lines = [f"created {document['id']}: {document['reward']}, {len(document['arms'])} arms, "
             f"version {document['version']}"]
    lines += [f"  {name} = {_value(value)}" for name, value in document["exploration"].items()]
    return "\n".join(lines)


def _patch(client: _Client, arguments: argparse.Namespace, change: dict[str, Any]) -> Any:
    version = arguments.version
    if version is None:
        version = client.get(_experiment_path(arguments.id))["version"]
    body: dict[str, Any] = {"version": version, **change}
    if arguments.reason is not None:
        body["reason"] = arguments.reason
    try:
        return client.request("PATCH", _experiment_path(arguments.id), body)
    except _Failure as failure:
        if failure.exit_code == EXIT_CONFLICT:
            raise _Failure(EXIT_CONFLICT, f"{failure.message}\nnothing was changed: review "
                           f"the current settings (`{_PROG} show {arguments.id}`), then "
                           f"run the command again without --version") from None
        raise


def _proposal(arguments: argparse.Namespace) -> dict[str, Any]:
    """The PATCH-shaped change that ``tune`` sends and ``advise`` forecasts."""
    change: dict[str, Any] = {}
    if arguments.settings:
        change["exploration"] = dict(arguments.settings)
    arms = {action: getattr(arguments, action, [])
            for action in ("add", "pause", "resume") if getattr(arguments, action, [])}
    if arms:
        change["arms"] = arms
    return change


def _fetch_tune(client: _Client, arguments: argparse.Namespace) -> Any:
    change = _proposal(arguments)
    if not change:
        raise _Failure(EXIT_USAGE, "nothing to change: give --set NAME=VALUE or --add-arm ARM")
    return _patch(client, arguments, change)


def _fetch_archive(client: _Client, arguments: argparse.Namespace) -> Any:
    return client.request("DELETE", _experiment_path(arguments.id))


def _render_archive(document: Any) -> str:
    return f"{document['id']}: {document['status']} (version {document['version']})"


def _fetch_advise(client: _Client, arguments: argparse.Namespace) -> Any:
    body = _proposal(arguments)
    for option, field in (("decisions", "decisions"), ("traffic", "traffic_per_s"),
                          ("delay", "reward_delay_s"), ("reps", "reps"), ("seed", "seed")):
        if getattr(arguments, option) is not None:
            body[field] = getattr(arguments, option)
    return client.request("POST", _experiment_path(arguments.id, "/advise"), body)


def _render_advise(document: Any) -> str:
    assumed = document["assumptions"]
    lines = [
        f"{document['experiment']} (version {document['version']}): the next "
        f"{assumed['decisions']:,} decisions, {_duration(assumed['horizon_s'])} at "
        f"{assumed['traffic_per_s']:.4g}/s ({assumed['traffic_source']}), reward delay "
        f"{_duration(assumed['reward_delay_s'])} ({assumed['delay_source']}); "
        f"{assumed['reps']} simulated futures, seed {assumed['seed']}",
    ]
    lines += [f"note: {note}" for note in assumed["notes"]]
    changes = _change_lines(document["changes"], created=False)
    lines.append("change: " + ("; ".join(changes) if changes else "none (current settings)"))
    current, proposed = document["current"], document["proposed"]
    difference = document["difference"]["regret"]

    def regret(scenario: dict[str, Any]) -> str:
        value = scenario["regret"]
        return f"{value['mean']:.4g} [{value['ci95'][0]:.4g}, {value['ci95'][1]:.4g}]"

    def futures(scenario: dict[str, Any]) -> str:
        low, high = scenario["regret"]["range80"]
        return f"{low:.4g} to {high:.4g}"

    def call(scenario: dict[str, Any]) -> str:
        winner = scenario["winner_call"]
        return f"{winner['probability']:.0%}"

    def call_time(scenario: dict[str, Any]) -> str:
        seconds = scenario["winner_call"]["seconds"]
        if seconds is None:
            return "-"
        low, high = seconds["range80"]
        return f"{_duration(seconds['median'])} ({_duration(low)} to {_duration(high)})"

    def correct(scenario: dict[str, Any]) -> str:
        value = scenario["winner_call"]["correct"]
        return "-" if value is None else f"{value:.0%}"

    rows = [
        ["expected regret [95% CI]", regret(current), regret(proposed),
         f"{difference['mean']:+.4g} [{difference['ci95'][0]:+.4g}, "
         f"{difference['ci95'][1]:+.4g}]"],
        ["  80% of futures", futures(current), futures(proposed), ""],
        ["decisions on the best arm", f"{current['best_arm_rate']['mean']:.1%}",
         f"{proposed['best_arm_rate']['mean']:.1%}", ""],
        ["winner called", call(current), call(proposed), ""],
        ["  time to the call (80%)", call_time(current), call_time(proposed), ""],
        ["  called arm truly best", correct(current), correct(proposed), ""],
    ]
    lines += ["", _table(["", "current", "proposed", "difference"], rows)]
    share_rows = [[arm, _percent(current["shares"][arm]["mean"][-1]),
                   _percent(proposed["shares"][arm]["mean"][-1])] for arm in document["arms"]]
    lines += ["", "share of the last decisions of the horizon:",
              _table(["arm", "current", "proposed"], share_rows, numeric={1, 2})]
    better = document["difference"]["p_proposed_better"]
    lines += ["", f"the proposal has less regret in {better:.0%} of the simulated futures"]
    return "\n".join(lines)


def _percent(value: float) -> str:
    return f"{value:.1%}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 86400:.3g} d"


def _fetch_pause(client: _Client, arguments: argparse.Namespace) -> Any:
    return _patch(client, arguments, {"arms": {"pause": arguments.arms}})


def _fetch_resume(client: _Client, arguments: argparse.Namespace) -> Any:
    return _patch(client, arguments, {"arms": {"resume": arguments.arms}})


def _render_patch(document: Any) -> str:
    # Every accepted change moves the version by exactly one.
    lines = [f"{document['id']}: version {document['version'] - 1} -> {document['version']}"]
    changes = document["changes"]
    width = max((len(key) for key in changes), default=0)
    lines += [f"  {key:<{width}}  {_value(change['old'])} -> {_value(change['new'])}"
              for key, change in changes.items()] or ["  nothing changed"]
    return "\n".join(lines)


def _fetch_audit(client: _Client, arguments: argparse.Namespace) -> Any:
    return client.get(_experiment_path(arguments.id, "/audit"))


def _render_audit(document: Any) -> str:
    rows: list[list[Any]] = []
    for entry in document["entries"]:
        changes = _change_lines(entry["changes"], created=entry["action"] == "create") or ["-"]
        # Reasons are free text: keep each on its row.
        reason = " ".join((entry.get("reason") or "-").split())
        rows.append([entry["version"], _when(entry["at"]), entry["actor"], entry["action"],
                     changes[0], reason])
        rows += [["", "", "", "", line, ""] for line in changes[1:]]
    if not rows:
        return "no audit entries"
    return _table(["version", "at", "actor", "action", "changes", "reason"], rows, numeric={0})


_Fetch = Callable[[_Client, argparse.Namespace], Any]
_COMMANDS: dict[str, tuple[_Fetch, Callable[[Any], str]]] = {
    "list": (_fetch_list, _render_list),
    "show": (_fetch_show, _render_show),
    "create": (_fetch_create, _render_create),
    "tune": (_fetch_tune, _render_patch),
    "pause": (_fetch_pause, _render_patch),
    "resume": (_fetch_resume, _render_patch),
    "archive": (_fetch_archive, _render_archive),
    "audit": (_fetch_audit, _render_audit),
    "advise": (_fetch_advise, _render_advise),
}


# -- formatting --------------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *,
           numeric: Collection[int] = ()) -> str:
    """Aligned columns: numeric ones right-aligned, the rest left-aligned."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(header)] + [len(row[i]) for row in cells])
              for i, header in enumerate(headers)]

    def line(row: Sequence[str]) -> str:
        parts = [cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
                 for i, cell in enumerate(row)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(row) for row in cells)])


def _decimals(values: Sequence[float | None], digits: int = 4) -> int:
    """Decimals that give the largest of ``values`` ``digits`` significant digits."""
    largest = max((abs(v) for v in values if v is not None and math.isfinite(v)), default=0.0)
    if largest == 0:
        return digits
    return min(max(digits - 1 - math.floor(math.log10(largest)), 0), 8)


def _fixed(value: float | None, decimals: int) -> str:
    return "-" if value is None else f"{value:.{decimals}f}"


def _count(value: float) -> str:
    # With forgetting on, observation counts are fractional.
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _interval(bounds: Sequence[float | None], decimals: int) -> str:
    if len(bounds) != 2 or None in bounds:
        return "-"
    return f"[{_fixed(bounds[0], decimals)}, {_fixed(bounds[1], decimals)}]"


def _when(epoch_s: float | None) -> str:
    if epoch_s is None:
        return "-"
    moment = datetime.fromtimestamp(epoch_s, tz=UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _value(value: Any) -> str:
    """A setting's value as an operator would type it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.10g}"
    if isinstance(value, dict):
        if set(value) == {"id", "state"}:  # an arm
            return value["id"] if value["state"] == "active" else f"{value['id']} (paused)"
        if set(value) == {"arm", "share"}:  # the control setting, as --set takes it
            return f"{value['arm']}:{_value(value['share'])}"
        return ", ".join(f"{key}={_value(item)}" for key, item in value.items())
    if isinstance(value, list):
        return ", ".join(_value(item) for item in value)
    return str(value)


def _change_lines(changes: dict[str, Any], *, created: bool) -> list[str]:
    """One line per changed setting: ``old -> new``; a creation lists its initial settings."""
    lines = []
    for key, change in changes.items():
        if not isinstance(change, dict):
            lines.append(f"{key}: {_value(change)}")
        elif created:
            new = change.get("new")
            if isinstance(new, dict) and key in ("exploration", "prior"):
                lines += [f"{key}.{name}: {_value(value)}" for name, value in new.items()]
            else:
                lines.append(f"{key}: {_value(new)}")
        else:
            lines.append(f"{key}: {_value(change.get('old'))} -> {_value(change.get('new'))}")
    return lines
