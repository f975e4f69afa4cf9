"""``bandit experiments``' arguments: the commands, their options and ``--set`` values."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bandit.model import SETTINGS_BY_NAME

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT_S = 10.0
#: A forecast simulates for seconds: ``advise`` waits this long unless --timeout says otherwise.
ADVISE_TIMEOUT_S = 120.0

PROG = "bandit experiments"

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

# How a --set value is read: by the kind of setting it names (bandit.model).


def parse_setting(text: str) -> tuple[str, Any]:
    """``name=value`` from ``--set`` as ``(name, JSON value)``.

    The settings and their kinds are ``bandit.model.EXPLORATION_SETTINGS``: numbers are floats
    (integers for integer settings such as ``warmup``), ``none``/``null`` is null, ``control``
    takes ``ARM:SHARE``. Raises ``argparse.ArgumentTypeError`` (a usage error) on anything else.
    """
    name, separator, raw = text.partition("=")
    name, raw = name.strip(), raw.strip()
    if not separator or not name or not raw:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    setting = SETTINGS_BY_NAME.get(name)
    if setting is None:
        raise argparse.ArgumentTypeError(
            f"unknown setting {name!r} (one of: {', '.join(SETTINGS_BY_NAME)})")
    if raw.lower() in ("none", "null"):
        return name, None
    if setting.kind == "control":
        arm, colon, share = raw.rpartition(":")
        if not colon or not arm:
            raise argparse.ArgumentTypeError(
                f"control: expected ARM:SHARE (e.g. control=arm0:0.2) or none, got {raw!r}")
        return name, {"arm": arm, "share": _finite(share, "control share")}
    if setting.kind == "integer":
        try:
            return name, int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name}: expected a whole number, got {raw!r}") from None
    return name, _finite(raw, name)


def _finite(raw: str, what: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: expected a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{what}: expected a finite number, got {raw!r}")
    return value


class _Weights(argparse.Action):
    """``--weight`` repeated, each arm at most once (a second weight of one arm is a typo
    whichever was meant)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        weights = list(getattr(namespace, self.dest, None) or [])
        arm, _ = values
        if any(arm == given for given, _ in weights):
            parser.error(f"--weight: arm {arm!r} given twice")
        setattr(namespace, self.dest, [*weights, values])


def parse_weight(text: str) -> tuple[str, float]:
    """``ARM=W`` from ``--weight``: an arm and its weight, a finite number >= 0."""
    arm, separator, raw = text.partition("=")
    arm, raw = arm.strip(), raw.strip()
    if not separator or not arm or not raw:
        raise argparse.ArgumentTypeError(f"expected ARM=WEIGHT (e.g. a=1), got {text!r}")
    weight = _finite(raw, f"weight of {arm}")
    if weight < 0:
        raise argparse.ArgumentTypeError(f"weight of {arm}: expected a number >= 0, got {raw!r}")
    return arm, weight


def parse_guardrail(text: str) -> dict[str, Any] | None:
    """``--guardrail METRIC:KIND:DIRECTION:relative=R`` (or ``absolute=X``) as the API's
    guardrail object, e.g. ``revenue:gaussian:higher:relative=-0.02``; ``none`` (None) for
    no guardrails. The service checks the rest (names, bounds, the control)."""
    if text.strip().lower() in ("none", "null"):
        return None
    parts = [part.strip() for part in text.split(":")]
    example = "e.g. revenue:gaussian:higher:relative=-0.02 or unsubscribe:bernoulli:lower:" \
              "absolute=0.01"
    if len(parts) != 4 or not parts[0]:
        raise argparse.ArgumentTypeError(
            f"expected METRIC:KIND:DIRECTION:relative=R or ...:absolute=X ({example}), got "
            f"{text!r}")
    metric, kind, direction, threshold = parts
    if kind not in ("bernoulli", "gaussian"):
        raise argparse.ArgumentTypeError(f"guardrail {metric}: kind must be bernoulli or "
                                         f"gaussian, got {kind!r}")
    if direction not in ("higher", "lower"):
        raise argparse.ArgumentTypeError(f"guardrail {metric}: direction must be higher or "
                                         f"lower (which is better), got {direction!r}")
    which, separator, raw = threshold.partition("=")
    if not separator or which.strip() not in ("relative", "absolute"):
        raise argparse.ArgumentTypeError(f"guardrail {metric}: threshold must be relative=R "
                                         f"or absolute=X ({example}), got {threshold!r}")
    return {"metric": metric, "kind": kind, "direction": direction,
            "threshold": {which.strip(): _finite(raw.strip(), f"guardrail {metric} threshold")}}


class _Guardrails(argparse.Action):
    """``--guardrail`` repeated: the whole list; ``--guardrail none`` alone clears it."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        given = getattr(namespace, self.dest, None)
        if (values is None and given) or (values is not None and given == []):
            parser.error("--guardrail none: no other --guardrail goes with it")
        setattr(namespace, self.dest, [] if values is None else [*(given or []), values])


def parse_control(text: str) -> str | None:
    """``--control ARM`` (``none``: no control arm)."""
    text = text.strip()
    if not text:
        raise argparse.ArgumentTypeError("expected an arm id, or none")
    return None if text.lower() in ("none", "null") else text


@dataclass(frozen=True)
class Targeting:
    """A ``--targeting`` value: the rule's JSON (None clears it)."""

    rule: Any


def parse_targeting(text: str) -> Targeting:
    """``--targeting``: a rule as JSON, ``@FILE`` holding it, or ``none`` (null). The service
    checks the rule itself; here only that it is JSON."""
    if text.strip().lower() in ("none", "null"):
        return Targeting(None)
    source = "the rule"
    if text.startswith("@"):
        source = text[1:]
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise argparse.ArgumentTypeError(f"cannot read {source}: {error}") from None
    try:
        rule = json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{source} is not JSON ({error}); expected e.g. "
                                         '{"any": [{"all": [{"attribute": "country", '
                                         '"op": "eq", "value": "DE"}]}]}') from None
    return Targeting(rule)


def _arm_list(text: str) -> list[str]:
    arms = [arm.strip() for arm in text.split(",") if arm.strip()]
    if not arms:
        raise argparse.ArgumentTypeError("expected comma-separated arm ids, e.g. a,b,c")
    return arms


def _tag_list(text: str) -> list[str]:
    return [tag.strip() for tag in text.split(",") if tag.strip()]


def _prior_value(text: str) -> tuple[str, float]:
    name, separator, raw = text.partition("=")
    if not separator or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE (e.g. alpha=2), got {text!r}")
    return name.strip(), _finite(raw.strip(), name.strip())


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
version_number = _whole_number(1, "a version number")
_positive_int = _whole_number(1)
_non_negative_int = _whole_number(0)
_positive_float = _number_above(0, inclusive=False)
_non_negative_float = _number_above(0, inclusive=True)


def add_connection_options(parser: argparse.ArgumentParser, *, inherited: bool) -> None:
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
    add_connection_options(parser, inherited=False)
    commands = parser.add_subparsers(dest="operation", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, epilog=EPILOG,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        add_connection_options(sub, inherited=True)
        return sub

    command("list", "list experiments (id, status, owner, tags, version, last change)")
    show = command("show", "settings, metadata, per-arm statistics, the winner call and "
                           "serving health of one experiment")
    show.add_argument("id", metavar="ID")
    stats = command("stats", "per-arm statistics, the winner call and serving health")
    stats.add_argument("id", metavar="ID")
    stats.add_argument("--threshold", type=_number_above(0.5, inclusive=True,
                                                         name="threshold"),
                       metavar="P", help="P(best) a winner needs (default 0.95)")
    stats.add_argument("--max-loss", type=_non_negative_float, metavar="LOSS",
                       help="largest expected loss of a winner, in reward units (default 1%% "
                            "of the best mean)")
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
    create.add_argument("--prior", type=_prior_value, action="append", default=[],
                        metavar="NAME=VALUE",
                        help="a prior parameter (repeatable): alpha, beta for bernoulli; "
                             "mean, kappa, alpha, beta for gaussian (default: uniform Beta(1, "
                             "1), a weak Normal-Gamma)")
    create.add_argument("--attribution-window", type=_positive_float, metavar="SECONDS",
                        help="how long a provisional decision can convert (default 86400)")
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
        sub.add_argument("--version", type=version_number, metavar="N",
                         help="the version the change is based on (default: the current one, "
                              "read first); a stale version is refused with exit code 4")
    create.add_argument("--policy", choices=("thompson", "fixed"),
                        help="thompson: a bandit (default); fixed: an A/B test serving "
                             "--weight's shares")
    for sub in (create, tune):
        sub.add_argument("--weight", dest="weights", type=parse_weight, action=_Weights,
                         default=[], metavar="ARM=W",
                         help="a fixed experiment's weight of an arm (repeatable; relative, "
                              "e.g. --weight a=1 --weight b=1 for 50/50)")
        sub.add_argument("--targeting", type=parse_targeting, metavar="JSON|@FILE",
                         help="who is eligible: a targeting rule as JSON, or @FILE holding "
                              "it ('none' clears)")
        sub.add_argument("--guardrail", dest="guardrails", type=parse_guardrail,
                         action=_Guardrails, default=None,
                         metavar="METRIC:KIND:DIRECTION:relative=R|absolute=X",
                         help="a guardrail metric an arm must not break (repeatable, at most "
                              "5; on tune the whole new list, 'none' clears), e.g. "
                              "revenue:gaussian:higher:relative=-0.02 (no worse than 2%% "
                              "below the control) or unsubscribe:bernoulli:lower:"
                              "absolute=0.01")
        sub.add_argument("--control", type=parse_control, default=argparse.SUPPRESS,
                         metavar="ARM",
                         help="the control arm relative guardrails are judged against "
                              "('none' clears; a control share's arm is the control anyway)")
    for sub in (create, tune):
        sub.add_argument("--owner", metavar="TEXT", help="who runs the experiment ('' clears)")
        sub.add_argument("--hypothesis", metavar="TEXT",
                         help="what the experiment is expected to show ('' clears)")
        sub.add_argument("--tags", type=_tag_list, metavar="A,B",
                         help="labels to filter by, comma-separated (replaces the tags; '' "
                              "clears)")
    archive = command("archive", "archive an experiment (it stops serving; its data is kept)")
    archive.add_argument("id", metavar="ID")
    unarchive = command("unarchive", "serve an archived experiment again, from the posteriors "
                                     "it had")
    unarchive.add_argument("id", metavar="ID")
    audit = command("audit", "the audit log of configuration changes")
    audit.add_argument("id", metavar="ID")
