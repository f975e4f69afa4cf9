"""``bandit experiments``' tables: each service answer rendered for people (``--json`` prints
the answer itself)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Any


def render_list(document: Any) -> str:
    experiments = document["experiments"]
    if not experiments:
        return "no experiments"
    return _table(["id", "status", "reward", "arms", "version", "owner", "tags", "changed"],
                  [[e["id"], e["status"], e["reward"], e["arms"], e["version"],
                    e.get("owner") or "-", ",".join(e.get("tags") or []) or "-",
                    _when(e.get("updated_at"))]
                   for e in experiments], numeric={3, 4})


def render_show(document: Any) -> str:
    fields = [
        ("experiment", document["id"]),
        ("status", document["status"]),
        ("owner", document.get("owner") or "-"),
        ("hypothesis", " ".join((document.get("hypothesis") or "-").split())),
        ("tags", ", ".join(document.get("tags") or []) or "-"),
        ("reward", document["reward"]),
        *_model_fields(document.get("model")),
        ("prior", _value(document["model"]["prior"] if document.get("model")
                         else document.get("prior"))),
        ("version", f"{document['version']} (updated {_when(document.get('updated_at'))})"),
        ("created", _when(document.get("created_at"))),
        ("attribution window", f"{_value(document.get('attribution_window_s'))} s"),
    ]
    fields += _policy_fields(document)
    fields += _guardrail_fields(document)
    width = max(len(name) for name, _ in fields)
    lines = [f"{name:<{width}}  {text}" for name, text in fields]
    return "\n".join([*lines, "", render_stats(document["stats"])])


def _policy_fields(document: Any) -> list[tuple[str, str]]:
    """A fixed A/B test's weights (exploration settings do not apply to it), or a bandit's
    exploration settings; then the targeting rule."""
    if document.get("policy") == "fixed":
        weights = document["weights"]
        total = sum(weights.values()) or 1.0
        fields = [("policy", "fixed (an A/B test serving its weights)"),
                  ("weights", ", ".join(f"{arm}={_value(weight)} ({weight / total:.1%})"
                                        for arm, weight in weights.items()))]
    else:
        fields = [("policy", document.get("policy") or "thompson")]
        fields += [(name, _value(value)) for name, value in document["exploration"].items()]
    rule = document.get("targeting")
    fields.append(("targeting", "everyone" if rule is None else targeting_text(rule)))
    return fields


def guardrail_text(guardrail: dict[str, Any]) -> str:
    """A guardrail as ``--guardrail`` takes it: ``revenue:gaussian:higher:relative=-0.02``."""
    [(which, level)] = guardrail["threshold"].items()
    return (f"{guardrail['metric']}:{guardrail['kind']}:{guardrail['direction']}:"
            f"{which}={_value(level)}")


def _guardrail_fields(document: Any) -> list[tuple[str, str]]:
    """The guardrails and the control they are judged against (nothing without them)."""
    guardrails = document.get("guardrails") or []
    fields = [(f"guardrail {i + 1}", f"{guardrail_text(g)} ({_threshold_words(g)})")
              for i, g in enumerate(guardrails)]
    if document.get("control") is not None or guardrails:
        control = document.get("control")
        share = (document.get("exploration") or {}).get("control")
        fields.append(("control arm", control if control is not None else
                       f"{share['arm']} (the control share's arm)" if share else "none"))
    return fields


def _threshold_words(guardrail: dict[str, Any]) -> str:
    [(which, level)] = guardrail["threshold"].items()
    better = guardrail["direction"]
    if which == "absolute":
        return f"mean {'>=' if better == 'higher' else '<='} {_value(level)}"
    return (f"mean {'>=' if better == 'higher' else '<='} control's "
            f"{'+' if level >= 0 else '-'} {abs(level):.4g} x |control's|")


def targeting_text(rule: Any) -> str:
    """A targeting rule on one line, values as JSON (``"true"`` and ``true`` are different
    rules): ``country in ["DE", "FR"] and app_version semver_gte "2.3.0" or beta eq true``."""
    def condition(item: dict[str, Any]) -> str:
        operand = item.get("values", item.get("value"))
        shown = f"[{', '.join(_json(v) for v in operand)}]" if isinstance(operand, list) \
            else _json(operand)
        return f"{item['attribute']} {item['op']} {shown}"

    alternatives = [" and ".join(condition(c) for c in branch["all"]) for branch in rule["any"]]
    if len(alternatives) == 1:
        return alternatives[0]
    return " or ".join(f"({text})" if " and " in text else text for text in alternatives)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _model_fields(model: Any) -> list[tuple[str, str]]:
    """A contextual experiment's model (its prior is the model's), or the context-free
    prior."""
    if model is None:
        return []
    features = ", ".join(f"{f['name']} ({f['type']})" for f in model["features"]) or "none"
    return [("model", f"linear, {model['dimension']} columns; features: {features}"
                      f"{'' if model['intercept'] else '; no intercept'}")]


def render_stats(document: Any) -> str:
    """The per-arm table, then the winner call and the serving-health checks."""
    arms = document["arms"]
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
    return "\n".join([table, *_guardrail_lines(document), "", *_call_lines(document)])


def _guardrail_lines(document: Any) -> list[str]:
    """With guardrails: a row per arm and metric (observations, mean, 95% interval,
    P(violates)), each arm's P(violates any), P(best feasible) and whether the gate holds
    it; then the arms held. Nothing without guardrails."""
    report = document.get("guardrails")
    if not report:
        return []
    arms = document["arms"]
    control = report.get("control")
    rows: list[list[Any]] = []
    for metric in report["metrics"]:
        name = metric["metric"]
        values = [arm["guardrails"][name] for arm in arms]
        decimals = _decimals([v["mean"] for v in values]
                             + [bound for v in values for bound in v["ci95"]])
        for arm, value in zip(arms, values, strict=True):
            rows.append([arm["arm"], name, _count(value["n"]), _fixed(value["mean"], decimals),
                         _interval(value["ci95"], decimals),
                         "control" if arm["arm"] == control else _p_violates(value["p_violates"])])
    gate = report.get("gate_min_samples")
    lines = ["", "guardrails (" + "; ".join(
        guardrail_text(g) for g in report["metrics"]) + f"; control {control or 'none'}; "
        + ("no hard gate" if gate is None else f"gate after {gate} observations") + "):",
        _table(["arm", "metric", "n", "mean", "95% CI", "P(violates)"], rows,
               numeric={2, 3, 5})]
    feasible = [[arm["arm"], "control" if arm["arm"] == control
                 else _p_violates(arm.get("p_violates")), _fixed(arm.get("p_best_feasible"), 4),
                 "HELD" if arm.get("held") else "-"] for arm in arms]
    lines += ["", _table(["arm", "P(violates any)", "P(best feasible)", "gate"], feasible,
                         numeric={1, 2})]
    held = [arm["arm"] for arm in arms if arm.get("held")]
    lines.append("held at the floor by the gate: " + (", ".join(held) if held else "none"))
    error = report.get("monte_carlo_error") or 0.0
    if error > 0:
        lines.append(f"(P(best feasible): Monte Carlo error up to {error:.2g})")
    return lines


def _p_violates(value: float | None) -> str:
    """P(violates), flagged from 0.8 (where the gate lets an arm go) up."""
    if value is None:
        return "-"
    return f"{value:.4f}" + (" !" if value >= 0.8 else "")


def _call_lines(document: Any) -> list[str]:
    rule = document["call_rule"]
    winner = document["winner"]
    if document.get("model") is not None:
        call = ("winner: no call for a contextual experiment (its best arm depends on the "
                "context; see the dashboard's coefficients and allocation by segment)")
    elif winner is None and document.get("guardrails"):
        call = (f"winner: none yet (needs P(best feasible) >= {rule['threshold']:g}, "
                f"P(feasible) >= {rule['threshold']:g} and expected loss <= "
                f"{rule['max_loss']:.4g})")
    elif winner is None:
        call = (f"winner: none yet (needs P(best) >= {rule['threshold']:g} and expected loss "
                f"<= {rule['max_loss']:.4g})")
    elif "p_feasible" in winner:
        call = (f"winner: {winner['arm']} (P(best feasible) {winner['p_best']:.4f}, "
                f"P(feasible) {winner['p_feasible']:.4f}, expected loss "
                f"{winner['expected_loss']:.4g})")
    else:
        call = (f"winner: {winner['arm']} (P(best) {winner['p_best']:.4f}, expected loss "
                f"{winner['expected_loss']:.4g})")
    health = document["health"]
    return [call, _sample_ratio_line(health.get("sample_ratio")),
            _reward_flow_line(health.get("rewards"))]


def _sample_ratio_line(check: dict[str, Any] | None) -> str:
    if check is None:
        return "sample ratio: not checked yet (too few decisions served)"
    over = f"p = {check['p_value']:.3g} over {check['decisions']:,} decisions"
    if check["ok"]:
        return f"sample ratio: ok ({over})"
    return (f"sample ratio: FAILED ({over}): the arms were served in other proportions than "
            f"their propensities promised; expected {_value(check['expected'])}, served "
            f"{_value(check['observed'])}")


def _reward_flow_line(check: dict[str, Any] | None) -> str:
    if check is None:
        return "rewards: not checked yet (no history samples)"
    quiet = (f"no new reward for {_duration(check['quiet_for_s'])} while "
             f"{check['decisions_since']:,} decisions were served")
    if check["stalled"]:
        return f"rewards: STALLED: {quiet}"
    return f"rewards: ok ({_count(check['observations'])} observations; {quiet})"


def render_create(document: Any) -> str:
    lines = [f"created {document['id']}: {document['reward']}, {len(document['arms'])} arms, "
             f"version {document['version']}"]
    if document.get("policy") == "fixed":
        lines[0] += ", fixed weights"
        lines += [f"  weights.{arm} = {_value(weight)}"
                  for arm, weight in document["weights"].items()]
    else:
        lines += [f"  {name} = {_value(value)}"
                  for name, value in document["exploration"].items()]
    if document.get("targeting") is not None:
        lines.append(f"  targeting = {targeting_text(document['targeting'])}")
    lines += [f"  guardrail = {guardrail_text(g)}" for g in document.get("guardrails") or []]
    if document.get("control") is not None:
        lines.append(f"  control arm = {document['control']}")
    return "\n".join(lines)


def render_archive(document: Any) -> str:
    unchanged = "" if document.get("changed", True) else ", unchanged"
    return f"{document['id']}: {document['status']} (version {document['version']}{unchanged})"


def render_advise(document: Any) -> str:
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
        if high == 0:  # the call is made before the first simulated decision
            return "now (already called)"
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
    lines += _guard_forecast_lines(document.get("guardrails"))
    better = document["difference"]["p_proposed_better"]
    if not document["changes"]:  # the same settings twice: the same futures, a tie
        lines += ["", "the proposal changes nothing: both columns are the current settings"]
    else:
        lines += ["", f"the proposal has less regret in {better:.0%} of the simulated futures"]
    return "\n".join(lines)


def _guard_forecast_lines(guard: Any) -> list[str]:
    """The advisor's guardrail forecast: decisions sent to arms that break a guardrail."""
    if not guard:
        return []

    def band(value: dict[str, Any], percent: bool) -> str:
        shown = _percent if percent else (lambda v: f"{v:,.0f}")
        low, high = value["ci95"]
        return f"{shown(value['mean'])} [{shown(max(low, 0.0))}, {shown(high)}]"

    current, proposed = guard["current"], guard["proposed"]
    difference = guard["difference"]["infeasible_share"]
    low, high = difference["ci95"]
    rows = [
        ["to infeasible arms [95% CI]", band(current["infeasible_share"], True),
         band(proposed["infeasible_share"], True),
         f"{difference['mean'] * 100:+.2f} pts [{low * 100:+.2f}, {high * 100:+.2f}]"],
        ["  decisions", band(current["infeasible_decisions"], False),
         band(proposed["infeasible_decisions"], False), ""],
        ["to arms the gate holds", _percent(current["held_share"]["mean"]),
         _percent(proposed["held_share"]["mean"]), ""],
        ["regret vs best feasible", band(current["regret"], False),
         band(proposed["regret"], False),
         "{:+,.1f} [{:+,.1f}, {:+,.1f}]".format(guard["difference"]["regret"]["mean"],
                                              *guard["difference"]["regret"]["ci95"])],
    ]
    risky = ", ".join(f"{arm} {p:.0%}" for arm, p in guard["p_infeasible"].items() if p > 0)
    safer = guard["difference"]["p_proposed_safer"]
    shares = [[arm, _percent(current["shares"][arm]), _percent(proposed["shares"][arm]),
               f"{p:.0%}"] for arm, p in guard["p_infeasible"].items()]
    return ["", f"guardrails ({', '.join(g['metric'] for g in guard['metrics'])}; control "
                f"{guard['control'] or 'none'}): arms breaking one in the simulated worlds: "
                f"{risky or 'none'}; allocation recomputed every {guard['recompute_every']:,} "
                "decisions",
            _table(["", "current", "proposed", "difference"], rows),
            f"the proposal sends less traffic to infeasible arms in {safer:.0%} of the "
            "simulated futures",
            "", "share of the horizon under the guarded allocation (the service's):",
            _table(["arm", "current", "proposed", "P(infeasible)"], shares, numeric={1, 2, 3})]


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


def render_patch(document: Any) -> str:
    return "\n".join(patch_lines(document, "the settings already were so", _setting))


def patch_lines(document: Any, unchanged: str, value: Callable[[str, Any], str]) -> list[str]:
    """A PATCH's answer: the version move and each change's old and new ``value``, or
    that nothing changed (and why: ``unchanged``)."""
    if not document.get("changed", True):
        return [f"{document['id']}: nothing changed ({unchanged}); version "
                f"{document['version']}"]
    # Every accepted change moves the version by exactly one.
    lines = [f"{document['id']}: version {document['version'] - 1} -> {document['version']}"]
    changes = document["changes"]
    width = max((len(key) for key in changes), default=0)
    return lines + ([f"  {key:<{width}}  {value(key, change['old'])} -> "
                     f"{value(key, change['new'])}"
                     for key, change in changes.items()] or ["  nothing changed"])


def render_audit(document: Any,
                 change_lines: Callable[[dict[str, Any], bool], list[str]] | None = None) -> str:
    """An audit log as a table, one row per changed setting (``change_lines``: how a change's
    lines read, an experiment's settings by default)."""
    lines_of = change_lines or (lambda changes, created: _change_lines(changes, created=created))
    rows: list[list[Any]] = []
    for entry in document["entries"]:
        changes = lines_of(entry["changes"], entry["action"] == "create") or ["-"]
        # Reasons are free text: keep each on its row.
        reason = " ".join((entry.get("reason") or "-").split())
        rows.append([entry["version"], _when(entry["at"]), entry["actor"], entry["action"],
                     changes[0], reason])
        rows += [["", "", "", "", line, ""] for line in changes[1:]]
    if not rows:
        return "no audit entries"
    return _table(["version", "at", "actor", "action", "changes", "reason"], rows, numeric={0})



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
            if isinstance(new, dict) and key in ("exploration", "prior", "weights"):
                lines += [f"{key}.{name}: {_value(value)}" for name, value in new.items()]
            else:
                lines.append(f"{key}: {_setting(key, new)}")
        else:
            lines.append(f"{key}: {_setting(key, change.get('old'))} -> "
                         f"{_setting(key, change.get('new'))}")
    return lines


def _setting(key: str, value: Any) -> str:
    """A changed setting's value: a targeting rule as its conditions, the rest as typed."""
    if key == "targeting" and isinstance(value, dict):
        return targeting_text(value)
    return _value(value)
