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
and ``features`` (the context encoded by the experiment's model), the last two for contextual
experiments only (null otherwise). A Parquet file carries the experiment (arms, reward kind,
model, attribution window, the range exported) as schema metadata under ``bandit``.

A decision logged twice (a flush resent after a lost answer) is exported once.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from bandit.errors import BanditError
from bandit.model import Experiment
from bandit.settings import Settings, SettingsError, environ
from bandit.store.redis_store import RedisStore
from bandit.tokens import decision_key

#: Log entries are stored when a process flushes, after the decisions they hold were served
#: (50 ms later, or however long Redis was unreachable): the read starts this much before
#: ``--since`` (clock skew between the service's processes and Redis) and ends this much after
#: ``--until``.
READ_MARGIN_S = 3600.0
FORMATS = ("parquet", "jsonl")
COLUMNS = ("decision_id", "experiment", "version", "timestamp", "action", "arm", "n_actions",
           "position", "propensity", "reward", "reward_timestamp", "unit", "context",
           "features")


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
    export.add_argument("--redis", dest="redis_url", metavar="URL",
                        help="the service's store (or BANDIT_REDIS_URL)")


def run(arguments: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env(environ(), redis_url=arguments.redis_url)
        if settings.redis_url is None:
            raise SettingsError("redis_url: the log is in the service's store: pass --redis "
                                "URL or set BANDIT_REDIS_URL")
        since = parse_time(arguments.since, "since") if arguments.since else 0.0
        until = parse_time(arguments.until, "until") if arguments.until else time.time()
        if until < since:
            raise ExportError(f"--until ({arguments.until}) is before --since "
                              f"({arguments.since})")
        if arguments.format == "parquet" and arguments.out is None and sys.stdout.isatty():
            raise ExportError("--format parquet: binary; give --out FILE or redirect the "
                              "output to a file")
        rows = asyncio.run(_export(settings, arguments.experiment, since, until))
        write(rows, arguments.format, arguments.out)
    except (SettingsError, ExportError, BanditError) as error:
        print(f"bandit log export: {error}", file=sys.stderr)
        return 2
    print(f"bandit log export: {rows.count} rows ({rows.decisions} decisions, {rows.rewarded} "
          f"with a reward) of {arguments.experiment!r}"
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
        return moment.timestamp()
    if not math.isfinite(value) or value < 0:
        raise ExportError(f"--{name}: {raw!r} is not a time")
    return value


async def _export(settings: Settings, experiment_id: str, since: float,
                  until: float) -> LogRows:
    assert settings.redis_url is not None
    store = RedisStore.from_settings(settings)
    try:
        return await export(store, experiment_id, since, until)
    finally:
        await store.close()


@dataclass
class LogRows:
    """The exported rows, column by column (``COLUMNS``), and the experiment's metadata."""

    metadata: dict[str, Any]
    columns: dict[str, list[Any]] = field(default_factory=lambda: {c: [] for c in COLUMNS})
    decisions: int = 0
    rewarded: int = 0

    @property
    def count(self) -> int:
        return len(self.columns["decision_id"])


async def export(store: RedisStore, experiment_id: str, since: float, until: float) -> LogRows:
    """The decisions served from ``since`` to ``until`` (POSIX seconds), joined with their
    rewards."""
    state = await store.read(experiment_id)
    if state is None:
        raise ExportError(f"experiment {experiment_id!r} does not exist")
    experiment = state.experiment
    window_ms = experiment.attribution_window_s * 1000
    since_ms, until_ms = since * 1000, until * 1000
    decisions: list[str] = []
    rewards: dict[tuple[str, int], tuple[float, int]] = {}
    margin_ms = READ_MARGIN_S * 1000
    async for kind, lines in store.read_log(experiment_id, int(since_ms - margin_ms),
                                            int(until_ms + window_ms + margin_ms)):
        if kind == "d":
            decisions.append(lines)
        else:
            _add_rewards(rewards, lines)
    rows = LogRows(_metadata(experiment, since, until))
    _fill(rows, experiment, decisions, rewards, since_ms, until_ms, window_ms)
    return rows


def _add_rewards(rewards: dict[tuple[str, int], tuple[float, int]], lines: str) -> None:
    """Reward lines (time ms, decision id, arm index, reward, event id): the first reward of
    each decision and arm (the service accepts one per decision and arm)."""
    for line in lines.splitlines():
        at, decision_id, arm, reward, _ = line.split("\t")
        if decision_id != "-":
            rewards.setdefault((decision_id, int(arm)), (float(reward), int(at)))


def _fill(rows: LogRows, experiment: Experiment, chunks: list[str],
          rewards: dict[tuple[str, int], tuple[float, int]], since_ms: float, until_ms: float,
          window_ms: float) -> None:
    columns = rows.columns
    (ids, versions, times, actions, arm_ids, positions, propensities, rewarded,
     reward_times, units, contexts, features) = (
        columns[name] for name in ("decision_id", "version", "timestamp", "action", "arm",
                                   "position", "propensity", "reward", "reward_timestamp",
                                   "unit", "context", "features"))
    arms = experiment.arms
    model = experiment.model
    seen: set[str] = set()
    joined = 0
    for chunk in chunks:
        for line in chunk.splitlines():
            at_text, decision_id, version, action_text, propensity, positional, unit, context = (
                line.split("\t"))
            at = int(at_text)
            if at < since_ms or at > until_ms or decision_id in seen:
                continue
            seen.add(decision_id)
            x = None
            if model is not None and context:
                x = model.encode(orjson.loads(context)).tolist()
            key = decision_key(decision_id)  # what a reward record names (a slate's head)
            if positional:  # a slate: a row per position
                slate = [int(a) for a in action_text.split(",")]
                shares = [float(p) for p in positional.split(",")]
            else:
                slate, shares = [int(action_text)], [float(propensity)]
            for position, (action, share) in enumerate(zip(slate, shares, strict=True)):
                reward = rewards.get((key, action))
                if reward is not None and reward[1] - at > window_ms:
                    reward = None
                ids.append(decision_id)
                versions.append(int(version))
                times.append(at / 1000)
                actions.append(action)
                arm_ids.append(arms[action] if action < len(arms) else None)
                positions.append(position)
                propensities.append(share)
                if reward is None:
                    rewarded.append(None)
                    reward_times.append(None)
                else:
                    joined += 1
                    rewarded.append(reward[0])
                    reward_times.append(reward[1] / 1000)
                units.append(unit or None)
                contexts.append(context or None)
                features.append(x)
    count = len(ids)
    columns["experiment"] = [experiment.id] * count
    columns["n_actions"] = [len(arms)] * count
    rows.decisions = len(seen)
    rows.rewarded = joined


def _metadata(experiment: Experiment, since: float, until: float) -> dict[str, Any]:
    model = experiment.model
    return {"experiment": experiment.id, "arms": list(experiment.arms),
            "reward": experiment.reward,
            "model": None if model is None else model.to_json(),
            "attribution_window_s": experiment.attribution_window_s,
            "since": since, "until": until}


def write(rows: LogRows, form: str, out: Path | None) -> None:
    """Write ``rows`` as ``form`` (``parquet`` or ``jsonl``) to ``out`` (None: stdout)."""
    if form == "parquet":
        _write_parquet(rows, out)
        return
    if out is None:
        _write_jsonl(rows, sys.stdout.buffer)
        sys.stdout.flush()
        return
    with out.open("wb") as stream:
        _write_jsonl(rows, stream)


def _write_jsonl(rows: LogRows, stream: IO[bytes]) -> None:
    names = COLUMNS
    block: list[bytes] = []
    for values in zip(*(rows.columns[name] for name in names), strict=True):
        block.append(orjson.dumps(dict(zip(names, values, strict=True))))
        if len(block) == 10_000:
            stream.write(b"\n".join(block) + b"\n")
            block = []
    if block:
        stream.write(b"\n".join(block) + b"\n")


def _write_parquet(rows: LogRows, out: Path | None) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ExportError("--format parquet needs pyarrow, in the research extra: pip "
                          "install 'bandit-service[research]' (or use --format jsonl)") from None
    types = {"decision_id": pa.string(), "experiment": pa.string(), "version": pa.int64(),
             "timestamp": pa.float64(), "action": pa.int64(), "arm": pa.string(),
             "n_actions": pa.int64(), "position": pa.int64(), "propensity": pa.float64(),
             "reward": pa.float64(), "reward_timestamp": pa.float64(), "unit": pa.string(),
             "context": pa.string(), "features": pa.list_(pa.float64())}
    schema = pa.schema([(name, types[name]) for name in COLUMNS],
                       metadata={"bandit": orjson.dumps(rows.metadata)})
    table = pa.table({name: pa.array(rows.columns[name], type=types[name])
                      for name in COLUMNS}, schema=schema)
    if out is None:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        sys.stdout.buffer.write(sink.getvalue().to_pybytes())
        sys.stdout.flush()
    else:
        pq.write_table(table, out)


def rows_of(rows: LogRows) -> Iterator[dict[str, Any]]:
    """The rows one by one, as dicts (tests and tooling)."""
    names = COLUMNS
    for values in zip(*(rows.columns[name] for name in names), strict=True):
        yield dict(zip(names, values, strict=True))

