"""``bandit layers``: a running service's layers, shown and changed (``/v1/layers``).

Commands: ``list``, ``show LAYER``, ``create LAYER [--salt S] [--default NAME] [--range
EXP=START:END ...]``, ``grow LAYER EXP START:END ...`` (buckets given to an experiment),
``shrink LAYER EXP START:END ...`` (buckets taken from it), ``remove LAYER EXP`` (the
experiment leaves the layer), ``default LAYER NAME|--none``, ``audit LAYER``.

Ranges are ``START:END``: buckets START to END - 1 of the layer's 10,000, as the API's
``[start, end)``. A change is based on the version read just before it (or ``--version N``);
if the layer changed in between, the service refuses it (409, exit code 4) and nothing is
changed: the command says so and is not retried, since the change was chosen against a layer
that is no longer current. The connection options, ``--json`` and the exit codes are those
of ``bandit experiments`` (``bandit.ops.operator``).
"""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from bandit.assignment import BUCKETS
from bandit.ops.layer_render import (
    render_audit,
    render_created,
    render_layer,
    render_list,
    render_patch,
)
from bandit.ops.operator import (
    EXIT_CONFLICT,
    Client,
    Command,
    Failure,
    execute,
    versioned_patch,
)
from bandit.ops.operator_args import add_connection_options, version_number

PROG = "bandit layers"

EPILOG = f"""\
ranges:
  START:END is buckets START to END - 1 of the layer's {BUCKETS:,} (0 <= START < END <= {BUCKETS});
  a unit's bucket is a hash of the layer's salt and the unit id

exit codes:
  0  success
  2  usage error (bad arguments or range syntax; nothing was sent)
  3  the service refused the request (4xx): overlapping ranges, an unknown experiment...;
     its message is printed on stderr and nothing was changed
  4  conflict (409): the layer changed since it was read (or a stale --version), the id
     exists, or the experiment is in another layer; nothing was changed
  5  the service is unreachable, timed out, answered 5xx (e.g. 503), or not the API's JSON

environment:
  BANDIT_URL      service URL (default http://127.0.0.1:8080)
  BANDIT_API_KEY  API key, sent as "Authorization: Bearer KEY"
"""


def parse_range(text: str) -> list[int]:
    """``START:END`` as ``[start, end]``; a usage error naming the range otherwise."""
    start_text, colon, end_text = text.strip().partition(":")
    try:
        if not colon:
            raise ValueError
        start, end = int(start_text), int(end_text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad range {text!r}: expected START:END, whole numbers, e.g. 0:2000 for "
            f"buckets 0 to 1999") from None
    if not 0 <= start < end <= BUCKETS:
        raise argparse.ArgumentTypeError(
            f"bad range {text!r}: expected 0 <= START < END <= {BUCKETS}")
    return [start, end]


def parse_experiment_ranges(text: str) -> tuple[str, list[list[int]]]:
    """``EXP=START:END[,START:END...]`` from ``--range``."""
    experiment, separator, ranges = text.partition("=")
    if not separator or not experiment.strip() or not ranges.strip():
        raise argparse.ArgumentTypeError(
            f"expected EXPERIMENT=START:END (e.g. headline=0:2000), got {text!r}")
    return experiment.strip(), [parse_range(part) for part in ranges.split(",")]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``layers`` options and commands to ``parser``; ``run`` executes them."""
    parser.description = parser.description or __doc__
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_connection_options(parser, inherited=False)
    commands = parser.add_subparsers(dest="operation", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, *, layer: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, epilog=EPILOG,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        add_connection_options(sub, inherited=True)
        if layer:
            sub.add_argument("layer", metavar="LAYER")
        return sub

    command("list", "list layers: experiments, the share of buckets in use, the default",
            layer=False)
    command("show", "who owns which buckets of a layer, each experiment's share, the free "
                    "ranges and the default, with a bar of the buckets")
    create = command("create", "create a layer")
    create.add_argument("--salt", metavar="S", help="hashed with each unit id into its bucket "
                                                    "(default: the layer id)")
    create.add_argument("--default", metavar="NAME",
                        help="what a unit in no experiment of the layer gets")
    create.add_argument("--range", dest="ranges", type=parse_experiment_ranges,
                        action="append", default=[], metavar="EXP=START:END",
                        help="buckets of an experiment (repeatable; several ranges as "
                             "EXP=0:1000,5000:6000)")
    grow = command("grow", "give buckets to an experiment (it may be new to the layer); "
                           "nobody already in it moves")
    shrink = command("shrink", "take buckets from an experiment; only the units in them "
                               "leave it")
    for sub in (grow, shrink):
        sub.add_argument("experiment", metavar="EXP")
        sub.add_argument("ranges", nargs="+", type=parse_range, metavar="START:END")
    remove = command("remove", "take an experiment out of the layer (all its buckets)")
    remove.add_argument("experiment", metavar="EXP")
    default = command("default", "set what a unit in no experiment gets (--none: nothing)")
    choice = default.add_mutually_exclusive_group(required=True)
    choice.add_argument("name", nargs="?", metavar="NAME")
    choice.add_argument("--none", action="store_true", help="no default")
    for sub in (create, grow, shrink, remove, default):
        sub.add_argument("--reason", metavar="TEXT", help="why, for the audit log")
    for sub in (grow, shrink, remove, default):
        sub.add_argument("--version", type=version_number, metavar="N",
                         help="the version the change is based on (default: the current one, "
                              "read first); a stale version is refused with exit code 4")
    command("audit", "the layer's audit log: every version, who made it and why")


def run(arguments: argparse.Namespace) -> int:
    """Execute the command parsed by a parser given to ``add_arguments``; the exit code."""
    return execute(arguments, PROG, _COMMANDS)


def _path(layer_id: str, suffix: str = "") -> str:
    return f"/v1/layers/{urllib.parse.quote(layer_id, safe='')}{suffix}"


def _fetch_list(client: Client, arguments: argparse.Namespace) -> Any:
    return client.get("/v1/layers")


def _fetch_show(client: Client, arguments: argparse.Namespace) -> Any:
    return client.get(_path(arguments.layer))


def _fetch_audit(client: Client, arguments: argparse.Namespace) -> Any:
    return client.get(_path(arguments.layer, "/audit"))


def _fetch_create(client: Client, arguments: argparse.Namespace) -> Any:
    body: dict[str, Any] = {"id": arguments.layer}
    for name in ("salt", "default", "reason"):
        if getattr(arguments, name) is not None:
            body[name] = getattr(arguments, name)
    ranges: dict[str, list[list[int]]] = {}
    for experiment, spans in arguments.ranges:
        ranges.setdefault(experiment, []).extend(spans)
    if ranges:
        body["ranges"] = ranges
    return client.request("POST", "/v1/layers", body)


def _patch(client: Client, arguments: argparse.Namespace, change: dict[str, Any]) -> Any:
    """The change based on ``--version`` or on the version read first; a 409 is reported
    with what to do, never retried."""
    def conflict(failure: Failure, version: int) -> Failure:
        current = client.get(_path(arguments.layer))["version"]
        if current == version:  # not stale: the experiment is in another layer
            return Failure(EXIT_CONFLICT, f"{failure.message}\nnothing was changed")
        again = " without --version" if arguments.version else ""
        return Failure(EXIT_CONFLICT, f"{failure.message}\nnothing was changed: the layer is "
                       f"at version {current} now; review it (`{PROG} show {arguments.layer}`), "
                       f"then run the command again{again}")

    return versioned_patch(client, _path(arguments.layer), arguments, change, conflict)


def _fetch_grow(client: Client, arguments: argparse.Namespace) -> Any:
    return _patch(client, arguments, {"add": {arguments.experiment: arguments.ranges}})


def _fetch_shrink(client: Client, arguments: argparse.Namespace) -> Any:
    return _patch(client, arguments, {"remove": {arguments.experiment: arguments.ranges}})


def _fetch_remove(client: Client, arguments: argparse.Namespace) -> Any:
    return _patch(client, arguments, {"ranges": {arguments.experiment: None}})


def _fetch_default(client: Client, arguments: argparse.Namespace) -> Any:
    return _patch(client, arguments, {"default": None if arguments.none else arguments.name})


_COMMANDS: dict[str, Command] = {
    "list": (_fetch_list, render_list),
    "show": (_fetch_show, render_layer),
    "create": (_fetch_create, render_created),
    "grow": (_fetch_grow, render_patch),
    "shrink": (_fetch_shrink, render_patch),
    "remove": (_fetch_remove, render_patch),
    "default": (_fetch_default, render_patch),
    "audit": (_fetch_audit, render_audit),
}
