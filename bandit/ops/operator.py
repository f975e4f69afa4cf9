"""``bandit experiments``: operator commands against a running service.

Commands: ``list``, ``show ID``, ``stats ID``, ``create ID --arms a,b,c``, ``tune ID --set
name=value [--add-arm ARM]``, ``pause ID ARM...``, ``resume ID ARM...``, ``archive ID``,
``unarchive ID``, ``audit ID``, ``advise ID --set name=value ...`` (the tuning advisor's
forecast; nothing is changed).
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
import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.client import HTTPException
from typing import Any

from bandit import __version__
from bandit.ops.operator_args import ADVISE_TIMEOUT_S, DEFAULT_TIMEOUT_S, DEFAULT_URL, PROG
from bandit.ops.operator_render import (
    render_advise,
    render_archive,
    render_audit,
    render_create,
    render_list,
    render_patch,
    render_show,
    render_stats,
)

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_CONFLICT = 4
EXIT_UNAVAILABLE = 5
EXIT_INTERRUPTED = 130


class Failure(Exception):
    """A command that cannot succeed: the message for stderr and the exit code."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


class Client:
    """JSON over HTTP with every failure turned into a ``Failure`` with its exit code."""

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
                raise _http_failure(error.code, error_message(error)) from None
        except (urllib.error.URLError, OSError, HTTPException) as error:
            raise Failure(EXIT_UNAVAILABLE, self._unreachable(error)) from None
        try:
            return json.loads(raw)
        except ValueError:
            raise Failure(EXIT_UNAVAILABLE,
                          f"{self.url} did not answer JSON: is it a bandit service?") from None

    def _unreachable(self, error: Exception) -> str:
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        if isinstance(reason, TimeoutError | socket.timeout):
            return f"no answer from {self.url} within {self.timeout_s:g} s"
        return f"cannot reach the service at {self.url}: {reason}"


def error_message(error: urllib.error.HTTPError) -> str:
    """The message of an error answer of the service (its reason when the body has none)."""
    try:
        body = json.loads(error.read())
        message = body["error"]["message"]
    except (ValueError, KeyError, TypeError, OSError, HTTPException):
        message = error.reason
    return str(message)


def _http_failure(status: int, message: str) -> Failure:
    if status == 409:
        return Failure(EXIT_CONFLICT, f"conflict (HTTP 409): {message}")
    if status >= 500:
        return Failure(EXIT_UNAVAILABLE, f"service unavailable (HTTP {status}): {message}")
    return Failure(EXIT_REFUSED, f"refused (HTTP {status}): {message}")


def _experiment_path(experiment_id: str, suffix: str = "") -> str:
    return f"/v1/experiments/{urllib.parse.quote(experiment_id, safe='')}{suffix}"


def run(arguments: argparse.Namespace) -> int:
    """Execute the command parsed by a parser given to ``add_arguments``; the exit code."""
    return execute(arguments, PROG, _COMMANDS)


#: A command: its fetch (HTTP; what --json prints) and its render to text.
Command = tuple[Callable[["Client", argparse.Namespace], Any], Callable[[Any], str]]


def execute(arguments: argparse.Namespace, prog: str, commands: dict[str, Command]) -> int:
    """Run ``commands[arguments.operation]`` against the service (``--url``, ``--api-key``,
    ``--timeout``, ``--json``): the shared body of ``bandit experiments`` and ``bandit
    layers``, with their exit codes."""
    url = arguments.url or os.environ.get("BANDIT_URL") or DEFAULT_URL
    if not _valid_url(url):
        print(f"{prog}: --url must be an http:// or https:// URL, got {url!r}",
              file=sys.stderr)
        return EXIT_USAGE
    timeout_s = arguments.timeout
    if timeout_s is None:
        timeout_s = ADVISE_TIMEOUT_S if arguments.operation == "advise" else DEFAULT_TIMEOUT_S
    client = Client(url, timeout_s=timeout_s,
                    api_key=arguments.api_key or os.environ.get("BANDIT_API_KEY"))
    fetch, render = commands[arguments.operation]
    try:
        document = fetch(client, arguments)
        text = json.dumps(document, indent=2) if arguments.json else render(document)
    except Failure as failure:
        print(f"{prog} {arguments.operation}: {failure.message}", file=sys.stderr)
        return failure.exit_code
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as error:
        # JSON of another shape than the API's: a foreign server or an incompatible version.
        print(f"{prog} {arguments.operation}: unexpected answer from {client.url} "
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


def _fetch_list(client: Client, arguments: argparse.Namespace) -> Any:
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


def _fetch_show(client: Client, arguments: argparse.Namespace) -> Any:
    experiment = client.get(_experiment_path(arguments.id))
    return {**experiment, "stats": client.get(_experiment_path(arguments.id, "/stats"))}


def _fetch_stats(client: Client, arguments: argparse.Namespace) -> Any:
    query = urllib.parse.urlencode({name: value for name, value in (
        ("threshold", arguments.threshold), ("max_loss", arguments.max_loss))
        if value is not None})
    return client.get(_experiment_path(arguments.id, "/stats") + (f"?{query}" if query else ""))


def _metadata(arguments: argparse.Namespace) -> dict[str, Any]:
    """``--owner``, ``--hypothesis``, ``--tags`` as given ('' clears: null, or no tags)."""
    metadata: dict[str, Any] = {}
    for name in ("owner", "hypothesis"):
        value = getattr(arguments, name)
        if value is not None:
            metadata[name] = value or None
    if arguments.tags is not None:
        metadata["tags"] = arguments.tags
    return metadata


def _fetch_create(client: Client, arguments: argparse.Namespace) -> Any:
    body: dict[str, Any] = {"id": arguments.id, "arms": arguments.arms,
                            "reward": arguments.reward, **_metadata(arguments)}
    if arguments.settings:
        body["exploration"] = dict(arguments.settings)
    if arguments.prior:
        body["prior"] = dict(arguments.prior)
    if arguments.attribution_window is not None:
        body["attribution_window_s"] = arguments.attribution_window
    if arguments.policy is not None:
        body["policy"] = arguments.policy
    return client.request("POST", "/v1/experiments", {**body, **_ab_fields(arguments)})


def _ab_fields(arguments: argparse.Namespace) -> dict[str, Any]:
    """``--weight ARM=W`` (a fixed experiment's weights), ``--targeting``, ``--guardrail``
    (the whole list; ``none``: no guardrails) and ``--control``, as given."""
    fields: dict[str, Any] = {}
    if arguments.weights:
        fields["weights"] = dict(arguments.weights)
    if arguments.targeting is not None:
        fields["targeting"] = arguments.targeting.rule
    if arguments.guardrails is not None:
        fields["guardrails"] = arguments.guardrails
    if "control" in arguments:
        fields["control"] = arguments.control
    return fields


def _patch(client: Client, arguments: argparse.Namespace, change: dict[str, Any]) -> Any:
    return versioned_patch(client, _experiment_path(arguments.id), arguments, change,
                           lambda failure, _: Failure(
                               EXIT_CONFLICT, f"{failure.message}\nnothing was changed: review "
                               f"the current settings (`{PROG} show {arguments.id}`), then "
                               f"run the command again without --version"))


def versioned_patch(client: Client, path: str, arguments: argparse.Namespace,
                    change: dict[str, Any], conflict: Callable[[Failure, int], Failure]) -> Any:
    """PATCH ``change`` (with ``--reason``) based on ``--version``, or on the version read
    first; a 409 is never retried: it becomes ``conflict(failure, version based on)``."""
    version = arguments.version
    if version is None:
        version = client.get(path)["version"]
    body: dict[str, Any] = {"version": version, **change}
    if arguments.reason is not None:
        body["reason"] = arguments.reason
    try:
        return client.request("PATCH", path, body)
    except Failure as failure:
        if failure.exit_code == EXIT_CONFLICT:
            raise conflict(failure, version) from None
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


def _fetch_tune(client: Client, arguments: argparse.Namespace) -> Any:
    change = {**_proposal(arguments), **_metadata(arguments), **_ab_fields(arguments)}
    if not change:
        raise Failure(EXIT_USAGE, "nothing to change: give --set NAME=VALUE, --add-arm ARM, "
                                  "--weight ARM=W, --targeting, --guardrail, --control, "
                                  "--owner, --hypothesis or --tags")
    return _patch(client, arguments, change)


def _fetch_archive(client: Client, arguments: argparse.Namespace) -> Any:
    return client.request("DELETE", _experiment_path(arguments.id))


def _fetch_unarchive(client: Client, arguments: argparse.Namespace) -> Any:
    return client.request("POST", _experiment_path(arguments.id, "/unarchive"))


#: The advise request's fields and the ``advise`` options that set them.
_ADVISE_OPTIONS = (("decisions", "decisions"), ("traffic", "traffic_per_s"),
                   ("delay", "reward_delay_s"), ("reps", "reps"), ("seed", "seed"))


def _fetch_advise(client: Client, arguments: argparse.Namespace) -> Any:
    body = _proposal(arguments)
    for option, field in _ADVISE_OPTIONS:
        if getattr(arguments, option) is not None:
            body[field] = getattr(arguments, option)
    try:
        return client.request("POST", _experiment_path(arguments.id, "/advise"), body)
    except Failure as failure:
        # The service names its request's field first; say which option sets it.
        field = failure.message.partition("): ")[2].partition(":")[0]
        options = {field: option for option, field in _ADVISE_OPTIONS}
        if failure.exit_code != EXIT_REFUSED or field not in options:
            raise
        raise Failure(failure.exit_code, f"{failure.message}\n(on the command line, "
                                         f"{field} is --{options[field]})") from None


def _fetch_pause(client: Client, arguments: argparse.Namespace) -> Any:
    return _patch(client, arguments, {"arms": {"pause": arguments.arms}})


def _fetch_resume(client: Client, arguments: argparse.Namespace) -> Any:
    return _patch(client, arguments, {"arms": {"resume": arguments.arms}})


def _fetch_audit(client: Client, arguments: argparse.Namespace) -> Any:
    return client.get(_experiment_path(arguments.id, "/audit"))


_COMMANDS: dict[str, Command] = {
    "list": (_fetch_list, render_list),
    "show": (_fetch_show, render_show),
    "stats": (_fetch_stats, render_stats),
    "create": (_fetch_create, render_create),
    "tune": (_fetch_tune, render_patch),
    "pause": (_fetch_pause, render_patch),
    "resume": (_fetch_resume, render_patch),
    "archive": (_fetch_archive, render_archive),
    "unarchive": (_fetch_unarchive, render_archive),
    "audit": (_fetch_audit, render_audit),
    "advise": (_fetch_advise, render_advise),
}
