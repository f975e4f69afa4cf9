"""``bandit log export``: an experiment's decision log as rows for off-policy evaluation.

Each decision served (``bandit.serving.decision_log``) becomes one row, a slate one row per
position, joined with the reward reported for that decision and arm within the experiment's
attribution window. The rows are what the Open Bandit Pipeline's ``bandit_feedback`` holds
(context or features, action, position, reward, propensity), plus the decision id, the
experiment's version, the time and the sticky unit: Parquet (pyarrow) or JSON lines, which
pandas, polars or ``bandit simulate replay --log`` read without code of ours.

Columns, in order: ``decision_id``, ``experiment``, ``version``, ``timestamp`` (POSIX
seconds), ``action`` (arm index), ``arm``, ``n_actions``, ``position`` (0 for a single
decision), ``propensity`` (of this action at this position), ``reward`` and
``reward_timestamp`` (null without a reward in the window), ``unit``, ``context`` (JSON text)
and ``features`` (the context encoded by the experiment's model), for contextual experiments
only (null otherwise), and ``guardrails`` (JSON text, ``{metric: reward}``: each guardrail
metric's first reward for this decision and arm within the window; null without one). A
Parquet file carries the experiment (arms, reward kind, model, attribution window, the range
exported) as schema metadata under ``bandit``.

A decision logged twice (a flush resent after a lost answer) is exported once.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.client import HTTPException
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from bandit import __version__
from bandit.errors import BanditError
from bandit.model import GUARD_SEPARATOR, Experiment
from bandit.ops.operator import error_message
from bandit.ops.operator_args import DEFAULT_URL
from bandit.settings import Settings, SettingsError, environ
from bandit.store.redis_store import RedisStore
from bandit.tokens import SLATE_KEY_LENGTH, decision_key

#: Log entries are stored when a process flushes, after the decisions they hold were served
#: (50 ms later, or however long Redis was unreachable): the read starts this much before
#: ``--since`` (clock skew between the service's processes and Redis) and ends this much after
#: ``--until``.
READ_MARGIN_S = 3600.0
FORMATS = ("parquet", "jsonl")
#: The latest time accepted (POSIX seconds, the year 5138), as the service's log route.
MAX_TIME = 1e11
COLUMNS = ("decision_id", "experiment", "version", "timestamp", "action", "arm", "n_actions",
           "position", "propensity", "reward", "reward_timestamp", "unit", "context",
           "features", "guardrails")


class ExportError(ValueError):
    """What the export cannot do; the message says why."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="log_command", required=True, metavar="{export}")
    export = commands.add_parser(
        "export", help="write an experiment's decisions, joined with their rewards",
        description="Write every decision of an experiment's decision log in the range, one "
                    "row per decision (per position for a slate), joined with the reward "
                    "reported for it within the attribution window: Parquet or JSON lines, "
                    "to --out or standard output.")
    export.add_argument("experiment", metavar="EXPERIMENT")
    export.add_argument("--since", metavar="T",
                        help="first decision time: ISO 8601 (UTC unless it says) or POSIX "
                             "seconds (default: the oldest kept)")
    export.add_argument("--until", metavar="T", help="last decision time (default: now)")
    export.add_argument("--format", choices=FORMATS, required=True)
    export.add_argument("--out", type=Path, metavar="FILE",
                        help="file to write (default: standard output)")
    source = export.add_argument_group(
        "where the log is read (default: the service at $BANDIT_URL or "
        f"{DEFAULT_URL})")
    source.add_argument("--url", help="the service's URL")
    source.add_argument("--api-key", metavar="KEY",
                        help="API key with the read scope (default: $BANDIT_API_KEY)")
    source.add_argument("--redis", dest="redis_url", metavar="URL",
                        help="read the service's store directly instead (or "
                             "BANDIT_REDIS_URL): no service needed, and faster")


def run(arguments: argparse.Namespace) -> int:
    try:
        since = parse_time(arguments.since, "since") if arguments.since else 0.0
        until = parse_time(arguments.until, "until") if arguments.until else time.time()
        if until < since:
            raise ExportError(f"--since ({arguments.since}) is after --until "
                              f"({arguments.until or 'now'})")
        if arguments.format == "parquet" and arguments.out is None and sys.stdout.isatty():
            raise ExportError("--format parquet: binary; give --out FILE or redirect the "
                              "output to a file")
        redis_url = arguments.redis_url or os.environ.get("BANDIT_REDIS_URL")
        if redis_url:
            settings = Settings.from_env(environ(), redis_url=redis_url)
            rows = asyncio.run(_export(settings, arguments.experiment, since, until))
        else:
            url = arguments.url or os.environ.get("BANDIT_URL") or DEFAULT_URL
            rows = export_from_service(
                url, arguments.api_key or os.environ.get("BANDIT_API_KEY"),
                arguments.experiment, since, until)
        write(rows, arguments.format, arguments.out)
    except (SettingsError, ExportError, BanditError) as error:
        print(f"bandit log export: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # --out in a directory that does not exist, a full disk
        print(f"bandit log export: cannot write {arguments.out or 'the output'}: "
              f"{error.strerror or error}", file=sys.stderr)
        return 2
    print(f"bandit log export: {rows.count} rows of {rows.decisions} decisions, "
          f"{rows.rewarded} of them with a reward, of {arguments.experiment!r}"
          + (f" to {arguments.out}" if arguments.out else ""), file=sys.stderr)
    return 0


def parse_time(raw: str, name: str) -> float:
    """POSIX seconds, or an ISO 8601 time (naive times are UTC)."""
    try:
        value = float(raw)
    except ValueError:
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            raise ExportError(f"--{name}: {raw!r} is neither an ISO 8601 time (e.g. "
                              "2026-12-06T09:00:00Z) nor POSIX seconds") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        value = moment.timestamp()
    if not math.isfinite(value) or not 0 <= value <= MAX_TIME:
        raise ExportError(f"--{name}: {raw!r} is not a time (POSIX seconds from 0 to "
                          f"{MAX_TIME:.0e})")
    return value


async def _export(settings: Settings, experiment_id: str, since: float,
                  until: float) -> LogRows:
    assert settings.redis_url is not None
    store = RedisStore.from_settings(settings)
    try:
        return await export(store, experiment_id, since, until)
    finally:
        await store.close()


@dataclass(frozen=True)
class LogRows:
    """The exported rows (a pyarrow Table of ``COLUMNS``, its schema carrying the metadata)
    and how many decisions they hold, and how many rows have a reward."""

    table: Any
    decisions: int
    rewarded: int

    @property
    def count(self) -> int:
        return int(self.table.num_rows)


async def export(store: RedisStore, experiment_id: str, since: float, until: float) -> LogRows:
    """The decisions served from ``since`` to ``until`` (POSIX seconds), joined with their
    rewards, read from the store."""
    state = await store.read(experiment_id)
    if state is None:
        raise ExportError(f"experiment {experiment_id!r} does not exist")
    start, end = _read_range(state.experiment.attribution_window_s, since, until)
    decisions: list[str] = []
    rewards: list[str] = []
    async for kind, lines in store.read_log(experiment_id, start, end):
        (decisions if kind == "d" else rewards).append(lines)
    return rows_of_log(state.experiment, decisions, rewards, since, until)


def export_from_service(url: str, api_key: str | None, experiment_id: str, since: float,
                        until: float, timeout_s: float = 60.0) -> LogRows:
    """``export``, with the log read through the service (``GET /v1/experiments/{id}/log``)."""
    headers = {"User-Agent": f"bandit/{__version__}"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    base = f"{url.rstrip('/')}/v1/experiments/{urllib.parse.quote(experiment_id, safe='')}"
    decisions: list[str] = []
    rewards: list[str] = []
    try:
        # The attribution window is the experiment's: ask for it first, then the range.
        with urllib.request.urlopen(urllib.request.Request(base, headers=headers),
                                    timeout=timeout_s) as response:
            shown = orjson.loads(response.read())
        start, end = _read_range(float(shown["attribution_window_s"]), since, until)
        query = urllib.parse.urlencode({"since": start / 1000, "until": end / 1000})
        request = urllib.request.Request(f"{base}/log?{query}", headers=headers)
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            experiment = Experiment.from_json(orjson.loads(response.readline())["experiment"])
            for line in response:
                entry = orjson.loads(line)
                (decisions if entry["kind"] == "d" else rewards).append(entry["records"])
    except urllib.error.HTTPError as error:
        with error:
            raise ExportError(f"the service at {url} refused (HTTP {error.code}): "
                              f"{error_message(error)}") from None
    except (urllib.error.URLError, OSError, HTTPException, ValueError, KeyError) as error:
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        raise ExportError(f"cannot read the log from the service at {url}: {reason} (or "
                          "read the store directly: --redis URL)") from None
    return rows_of_log(experiment, decisions, rewards, since, until)


def _read_range(window_s: float, since: float, until: float) -> tuple[int, int]:
    """The entries to read, in ms: from ``READ_MARGIN_S`` before ``since`` to the attribution
    window and ``READ_MARGIN_S`` after ``until`` (an entry is stored after its records)."""
    return (max(0, math.floor((since - READ_MARGIN_S) * 1000)),
            math.ceil((until + window_s + READ_MARGIN_S) * 1000))


def rows_of_log(experiment: Experiment, decisions: list[str], rewards: list[str],
                since: float, until: float) -> LogRows:
    """The rows of the decision records ``decisions`` served in the range, joined with the
    reward records ``rewards`` (both: the log's lines, entry by entry)."""
    pa = _pyarrow()
    window_ms = experiment.attribution_window_s * 1000
    metadata = {"bandit": orjson.dumps(_metadata(experiment, since, until))}
    schema = pa.schema([(name, _types(pa)[name]) for name in COLUMNS], metadata=metadata)
    if not decisions:
        return LogRows(schema.empty_table(), 0, 0)
    table = _decision_rows(pa, "".join(decisions), since * 1000, until * 1000,
                           contextual=experiment.model is not None)
    decided = table.num_rows
    if not decided:
        return LogRows(schema.empty_table(), 0, 0)
    table = _positions(pa, table)
    text = "".join(rewards)
    table, rewarded = _join_rewards(pa, table, text, window_ms)
    guardrails = _guardrail_rewards(pa, table, experiment, text, window_ms)
    return LogRows(_finish(pa, table, experiment, schema, guardrails), decided, rewarded)


def _guardrail_rewards(pa: Any, rows: Any, experiment: Experiment, text: str,
                       window_ms: float) -> Any:
    """Each row's guardrail rewards, as JSON text ``{metric: reward}`` (null when none): the
    first record of each of the experiment's guardrail metrics (of its current kind) naming
    the row's decision (a slate's head) and arm, applied within the attribution window."""
    keys = {g.key: g.metric for g in experiment.guardrails}
    if not keys or GUARD_SEPARATOR not in text:
        return pa.nulls(rows.num_rows, pa.string())
    first: dict[tuple[str, int], dict[str, tuple[float, int]]] = {}
    for line in text.splitlines():
        _, decision, token, reward, _, applied = line.split("\t")
        arm, bar, key = token.partition(GUARD_SEPARATOR)
        if not bar or decision == "-" or key not in keys:
            continue
        first.setdefault((decision, int(arm)), {}).setdefault(
            keys[key], (float(reward), int(applied)))
    values: list[str | None] = []
    for decision_id, action, served in zip(rows["decision_id"].to_pylist(),
                                           rows["action"].to_pylist(),
                                           rows["t"].to_pylist(), strict=True):
        kept = {metric: reward for metric, (reward, applied)
                in first.get((decision_key(decision_id), action), {}).items()
                if applied - served <= window_ms}
        values.append(orjson.dumps(kept).decode() if kept else None)
    return pa.array(values, pa.string())


def _pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.compute
        import pyarrow.csv
    except ImportError:
        raise ExportError("the export needs pyarrow, in the research extra: pip install "
                          "'bandit-service[research]'") from None
    return pa


def _types(pa: Any) -> dict[str, Any]:
    return {"decision_id": pa.string(), "experiment": pa.string(), "version": pa.int64(),
            "timestamp": pa.float64(), "action": pa.int64(), "arm": pa.string(),
            "n_actions": pa.int64(), "position": pa.int64(), "propensity": pa.float64(),
            "reward": pa.float64(), "reward_timestamp": pa.float64(), "unit": pa.string(),
            "context": pa.string(), "features": pa.list_(pa.float64()),
            "guardrails": pa.string()}


def _read_lines(pa: Any, text: str, columns: dict[str, Any]) -> Any:
    """Tab-separated lines (no quoting: nothing logged holds a tab or a newline) as a table;
    empty fields of string columns are null."""
    return pa.csv.read_csv(
        pa.py_buffer(text.encode()),
        read_options=pa.csv.ReadOptions(column_names=list(columns), block_size=1 << 24),
        parse_options=pa.csv.ParseOptions(delimiter="\t", quote_char=False,
                                          escape_char=False),
        convert_options=pa.csv.ConvertOptions(column_types=columns, null_values=[""],
                                              strings_can_be_null=True))


def _decision_rows(pa: Any, text: str, since_ms: float, until_ms: float, *,
                   contextual: bool) -> Any:
    """Decision records served in the range, each decision id once (the first record)."""
    pc = pa.compute
    table = _read_lines(pa, text, {
        "t": pa.int64(), "decision_id": pa.string(), "version": pa.int64(),
        "a": pa.string(), "p": pa.float64(), "q": pa.string(), "unit": pa.string(),
        "context": pa.string()})
    if contextual:  # a request's context is on its first record only: the others follow it
        table = table.set_column(table.column_names.index("context"), "context",
                                 pc.fill_null_forward(table["context"].combine_chunks()))
    table = table.filter(pc.and_(pc.greater_equal(table["t"], since_ms),
                                 pc.less_equal(table["t"], until_ms)))
    if len(pc.unique(table["decision_id"])) < table.num_rows:
        # A flush resent after a lost answer: keep each decision's first record.
        table = table.append_column("row", pa.array(np.arange(table.num_rows)))
        first = table.group_by("decision_id", use_threads=False).aggregate([("row", "min")])
        table = table.take(np.sort(first["row_min"].to_numpy())).drop_columns(["row"])
    times = table["t"].to_numpy()
    if len(times) > 1 and bool((np.diff(times) < 0).any()):  # several processes' flushes
        table = table.take(pc.sort_indices(table["t"]))  # stable: log order within a ms
    return table


def _positions(pa: Any, table: Any) -> Any:
    """One row per position: a slate's arms (``a``) and position propensities (``q``)
    spread over rows; a single decision's row keeps its arm and propensity (``p``)."""
    pc = pa.compute
    if table["q"].null_count == table.num_rows:  # no slates
        rows = table.drop_columns(["a", "p", "q"])
        rows = rows.append_column("action", pc.cast(table["a"], pa.int64()))
        rows = rows.append_column("position", pa.array(np.zeros(rows.num_rows, np.int64)))
        return rows.append_column("propensity", table["p"])
    shares = pc.coalesce(table["q"], pc.cast(table["p"], pa.string())).combine_chunks()
    actions = pc.split_pattern(table["a"].combine_chunks(), ",")
    parents = pc.list_parent_indices(actions)
    offsets = actions.offsets.to_numpy()
    positions = np.arange(len(parents)) + offsets[0] - offsets[parents.to_numpy()]
    rows = table.drop_columns(["a", "p", "q"])
    if len(parents) > rows.num_rows:  # slates: their rows repeated, one per position
        rows = rows.take(parents)
    rows = rows.append_column("action", pc.cast(pc.list_flatten(actions), pa.int64()))
    rows = rows.append_column("position", pa.array(positions, pa.int64()))
    return rows.append_column("propensity", pc.cast(
        pc.list_flatten(pc.split_pattern(shares, ",")), pa.float64()))


def _join_rewards(pa: Any, rows: Any, text: str, window_ms: float) -> tuple[Any, int]:
    """Each row's reward: the first reward record of the primary metric naming its decision (a
    slate's by its head, ``decision_key``) and arm, when the service applied it within the
    attribution window of the decision."""
    pc = pa.compute
    ids = rows["decision_id"]
    slates = pc.starts_with(ids, "r")
    if pc.any(slates).as_py():  # a slate's rewards name its head and one of its arms
        heads = pc.if_else(slates, pc.utf8_slice_codeunits(ids, 0, SLATE_KEY_LENGTH), ids)
        row_keys = pc.binary_join_element_wise(heads, pc.cast(rows["action"], pa.string()),
                                               "\t")
    else:  # a single decision's rewards all name its arm (the service refuses others)
        row_keys = ids
    if text:
        rewards = _read_lines(pa, text, {"rt": pa.float64(), "d": pa.string(),
                                         "arm": pa.string(), "reward": pa.float64(),
                                         "event": pa.string(), "applied": pa.int64()})
        # The primary metric's: a guardrail metric's records name `<arm>|<metric>|<kind>`.
        rewards = rewards.filter(pc.and_(pc.is_valid(rewards["d"]), pc.invert(
            pc.match_substring(rewards["arm"], GUARD_SEPARATOR))))
        keys = (rewards["d"] if row_keys is ids
                else pc.binary_join_element_wise(rewards["d"], rewards["arm"], "\t"))
        # index_in finds a key's first occurrence: each row's first reward.
        found = pc.index_in(row_keys, value_set=keys.combine_chunks())
        # Attributed by when the service applied it (its clock, as for provisional
        # decisions), not by the event's own time, which the client sets.
        late = pc.greater(pc.subtract(rewards["applied"].take(found), rows["t"]), window_ms)
        found = pc.if_else(pc.fill_null(late, False), None, found)
        rows = rows.append_column("reward", rewards["reward"].take(found))
        rows = rows.append_column("rt", rewards["rt"].take(found))
    else:
        rows = rows.append_column("reward", pa.nulls(rows.num_rows, pa.float64()))
        rows = rows.append_column("rt", pa.nulls(rows.num_rows, pa.float64()))
    return rows, rows.num_rows - rows["reward"].null_count


def _finish(pa: Any, rows: Any, experiment: Experiment, schema: Any, guardrails: Any) -> Any:
    """The rows in ``COLUMNS`` order and types, with arm ids, times in seconds and the
    features of each context (each distinct context encoded once)."""
    pc = pa.compute
    count = rows.num_rows
    arms = pa.array(list(experiment.arms), pa.string())
    model = experiment.model
    if model is None:
        features = pa.nulls(count, pa.list_(pa.float64()))
    else:
        encoded: dict[str, list[float]] = {}
        values: list[list[float] | None] = []
        for context in rows["context"].to_pylist():
            if context is None:
                values.append(None)
                continue
            x = encoded.get(context)
            if x is None:
                x = encoded[context] = model.encode(orjson.loads(context)).tolist()
            values.append(x)
        features = pa.array(values, pa.list_(pa.float64()))
    columns = {
        "decision_id": rows["decision_id"],
        "experiment": pa.array([experiment.id] * count, pa.string()) if count else
        pa.array([], pa.string()),
        "version": rows["version"],
        "timestamp": pc.divide(pc.cast(rows["t"], pa.float64()), 1000.0),
        "action": rows["action"],
        "arm": arms.take(rows["action"]),
        "n_actions": pa.array([len(arms)] * count, pa.int64()),
        "position": rows["position"],
        "propensity": rows["propensity"],
        "reward": rows["reward"],
        "reward_timestamp": pc.divide(pc.cast(rows["rt"], pa.float64()), 1000.0),
        "unit": rows["unit"], "context": rows["context"], "features": features,
        "guardrails": guardrails,
    }
    return pa.table([columns[name] for name in COLUMNS], schema=schema)


def _metadata(experiment: Experiment, since: float, until: float) -> dict[str, Any]:
    model = experiment.model
    return {"experiment": experiment.id, "arms": list(experiment.arms),
            "reward": experiment.reward,
            "model": None if model is None else model.to_json(),
            "attribution_window_s": experiment.attribution_window_s,
            "since": since, "until": until,
            # Its settings and prior when exported: what a target changes ("thompson:...").
            "config": experiment.to_json()}


def write(rows: LogRows, form: str, out: Path | None) -> None:
    """Write ``rows`` as ``form`` (``parquet`` or ``jsonl``) to ``out`` (None: stdout)."""
    if form == "parquet":
        import pyarrow.parquet as pq

        if out is None:
            pq.write_table(rows.table, sys.stdout.buffer)
        else:
            pq.write_table(rows.table, out)
    elif out is None:
        _write_jsonl(rows, sys.stdout.buffer)
    else:
        with out.open("wb") as stream:
            _write_jsonl(rows, stream)
    sys.stdout.flush()


def _write_jsonl(rows: LogRows, stream: IO[bytes]) -> None:
    for batch in rows.table.to_batches(max_chunksize=10_000):
        stream.write(b"\n".join(orjson.dumps(row) for row in batch.to_pylist()) + b"\n")


def rows_of(rows: LogRows) -> Iterator[dict[str, Any]]:
    """The rows one by one, as dicts (tests and tooling)."""
    yield from rows.table.to_pylist()

