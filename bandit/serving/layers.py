"""Layers in the service: their life (create, change ranges, audit) and one-call assignment.

``POST /v1/assign`` answers, for every layer, the experiment a unit is in (by its bucket,
``bandit.layers``) or the layer's default, and the unit's decision in that experiment with
both propensities: P(in the experiment), the share of buckets the experiment owns, and
P(arm | experiment), the decision's own. Their product is a unit's chance of what it got,
for comparisons across the layer; the second is for evaluation inside the experiment.

Which experiment a unit is in costs no round trip: every process keeps the layers in memory
(``LayerDirectory``), re-read when the change feed announces ``@layers`` (every layer change
publishes it) or, while the feed is down, when the layers' change counter moved. Decisions
come from the experiments' cached snapshots like any allocation: a bandit's is drawn (or, with
``sticky``, stored for the unit), a fixed experiment's is the unit's arm by hash
(``bandit.assignment.arm_point``), the same every time without storage.

A unit that fails an experiment's targeting rule gets the layer's default, and is not hashed
again into another experiment: whoever is eligible, each experiment's units are a uniform
sample of its buckets.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from bandit.assignment import BUCKETS, buckets
from bandit.errors import InvalidValue, NotFound, StoreUnavailable, json_kind, stale
from bandit.inputs import AllocateRequest, AssignRequest, AssignUnit, parse_assign
from bandit.layers import (
    MAX_EXPERIMENTS,
    Layer,
    Range,
    check_disjoint,
    merge_ranges,
    parse_layer,
    parse_ranges,
)
from bandit.model import ANONYMOUS, check_id, mapping, parse_text
from bandit.patches import MAX_REASON_LENGTH, audit_entry, based_on
from bandit.serving import cache as cache_module
from bandit.serving.cache import ExperimentCache, Snapshot
from bandit.serving.decisions import Decider
from bandit.store.redis_store import RedisStore

logger = logging.getLogger(__name__)

#: The first 8 bytes of a digest as a big-endian unsigned 64-bit integer.
_FIRST_EIGHT = struct.Struct(">Q")

#: What the change feed names when a layer changed (``SAVE_LAYER`` publishes it).
LAYERS_MESSAGE = "@layers"

#: Longest a batch's targeting runs before the event loop gets a turn (other requests wait no
#: longer than this for it).
TURN_S = 0.005

#: Why a unit got its layer's default rather than an experiment.
UNASSIGNED, TARGETING, ARCHIVED, MISSING = "unassigned", "targeting", "archived", "missing"


class LayerDirectory:
    """Every layer, in memory: read once when first needed, again when one changed."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._layers: tuple[Layer, ...] | None = None
        self._by_id: dict[str, Layer] = {}
        #: The layers of each subset a request named (``layers``), as last computed.
        self._chosen: dict[tuple[str, ...], tuple[Layer, ...]] = {}
        self._revision = -1
        self._dirty = False
        self._loading: asyncio.Lock = asyncio.Lock()
        #: When the change counter was last checked on a cluster (``on_refresh``).
        self._swept = time.monotonic()

    async def layers(self) -> tuple[Layer, ...]:
        """Every layer, in id order (read from Redis the first time, and after a change; the
        last known ones when Redis cannot be reached)."""
        layers = self._layers
        if layers is not None and not self._dirty:
            return layers
        try:
            return await self.reload()
        except StoreUnavailable:
            if layers is None:
                raise
            return layers

    def named(self, layer_ids: tuple[str, ...]) -> tuple[Layer, ...] | str:
        """The layers of these ids in id order (of those read last), or the first unknown id."""
        chosen = self._chosen.get(layer_ids)
        if chosen is None:
            by_id = self._by_id
            for layer_id in layer_ids:
                if layer_id not in by_id:
                    return layer_id
            wanted = set(layer_ids)
            chosen = tuple(layer for layer in self._layers or () if layer.id in wanted)
            if len(self._chosen) >= 1000:
                self._chosen.clear()
            self._chosen[layer_ids] = chosen
        return chosen

    async def reload(self) -> tuple[Layer, ...]:
        async with self._loading:
            if self._layers is not None and not self._dirty:
                return self._layers  # read meanwhile by another request
            self._dirty = False
            try:
                revision, layers = await self._store.layers()
            except BaseException:
                self._dirty = True
                raise
            self._install(revision, layers)
            assert self._layers is not None
            return self._layers

    def _install(self, revision: int, layers: list[Layer]) -> None:
        self._layers = tuple(layers)
        self._by_id = {layer.id: layer for layer in layers}
        self._chosen = {}
        self._revision = revision

    def invalidate(self) -> None:
        """A layer changed: read them all again before the next assignment."""
        if self._layers is not None:
            self._dirty = True

    async def on_refresh(self, everything: bool, named: set[str]) -> None:
        """The cache's refresh hook: the change feed named ``@layers`` (or could not be
        trusted, then the change counter says whether anything changed)."""
        if self._layers is None:
            return  # never read: nothing to keep fresh
        # On a Redis Cluster a message can be lost on the cluster bus without the subscription
        # dropping: the change counter is checked once per RECONCILE_S there anyway.
        now = time.monotonic()
        sweep = self._store.is_cluster and now - self._swept >= cache_module.RECONCILE_S
        if sweep:
            self._swept = now
        if LAYERS_MESSAGE in named or ((everything or sweep) and
                                       await self._store.layers_revision() != self._revision):
            self.invalidate()
        if self._dirty:
            try:
                await self.reload()
            except StoreUnavailable as error:  # the next assignment tries again
                logger.warning("could not read the layers: %s", error)


class Layers:
    """The layers' API: create, show, change and list them, and assign units."""

    def __init__(self, store: RedisStore, cache: ExperimentCache, decisions: Decider) -> None:
        self.store = store
        self.cache = cache
        self.decisions = decisions
        self.directory = LayerDirectory(store)

    # -- life ---------------------------------------------------------------------------------

    async def create(self, body: object, *, actor: str = ANONYMOUS) -> dict[str, Any]:
        data = mapping(body, "body", {"id", "salt", "default", "ranges", "reason"})
        reason = parse_text(data.pop("reason", None), "reason", MAX_REASON_LENGTH)
        layer = parse_layer(data)
        await self._check_experiments(layer.ranges)
        # What it holds, as changes from nothing (a null default is no change).
        changes = {"salt": {"old": None, "new": layer.salt},
                   **_diff(Layer(layer.id, layer.salt, {}), layer)}
        await self.store.save_layer(layer, 0, audit_entry(1, actor, "create", changes, reason))
        self.directory.invalidate()
        return describe(layer)

    async def show(self, layer_id: str) -> dict[str, Any]:
        return describe(await self._read(layer_id))

    async def list_all(self) -> dict[str, Any]:
        _, layers = await self.store.layers()
        return {"layers": [describe(layer) for layer in layers]}

    async def audit(self, layer_id: str) -> dict[str, Any]:
        await self._read(layer_id)
        return {"layer": layer_id, "entries": await self.store.layer_audit(layer_id)}

    async def change(self, layer_id: str, body: object, *,
                     actor: str = ANONYMOUS) -> dict[str, Any]:
        """A PATCH: ``ranges`` (an experiment's ranges replaced; null removes it), ``add`` and
        ``remove`` (buckets given to or taken from an experiment), ``default``, based on
        ``version`` (409 when stale)."""
        current = await self._read(layer_id)
        data = mapping(body, "body", {"version", "ranges", "add", "remove", "default",
                                      "reason"})
        version = based_on(data)
        if version != current.version:
            raise stale(f"layer {layer_id!r}", current.version, version)
        reason = parse_text(data.get("reason"), "reason", MAX_REASON_LENGTH)
        ranges = {e: list(spans) for e, spans in current.ranges.items()}
        for experiment, value in _object(data.get("ranges", {}), "ranges").items():
            check_id(experiment, "ranges key")
            if value is None:
                ranges.pop(experiment, None)
            else:
                ranges[experiment] = list(parse_ranges(value, f"ranges.{experiment}"))
        for experiment, value in _object(data.get("add", {}), "add").items():
            check_id(experiment, "add key")
            added = parse_ranges(value, f"add.{experiment}")
            ranges[experiment] = list(merge_ranges([*ranges.get(experiment, ()), *added],
                                                   f"add.{experiment}"))
        for experiment, value in _object(data.get("remove", {}), "remove").items():
            check_id(experiment, "remove key")
            if experiment not in ranges:
                raise InvalidValue(f"remove.{experiment}: the experiment has no range in "
                                   f"layer {layer_id!r}")
            removed = parse_ranges(value, f"remove.{experiment}")
            foreign = _subtract(removed, tuple(ranges[experiment]))
            if foreign:
                raise InvalidValue(
                    f"remove.{experiment}: buckets {_spans(foreign)} are not the experiment's "
                    f"(it owns {_spans(ranges[experiment])}); nothing was changed")
            kept = _subtract(ranges[experiment], removed)
            if kept:
                ranges[experiment] = list(merge_ranges(kept, f"remove.{experiment}"))
            else:
                del ranges[experiment]
        merged = {e: tuple(spans) for e, spans in ranges.items()}
        if len(merged) > MAX_EXPERIMENTS:
            raise InvalidValue(f"ranges: at most {MAX_EXPERIMENTS} experiments in a layer")
        check_disjoint(merged)
        default = current.default
        if "default" in data:
            default = parse_layer({"id": layer_id, "default": data["default"]}).default
        changed = replace(current, ranges=merged, default=default, version=current.version + 1)
        changes = _diff(current, changed)
        if not changes:
            return {**describe(current), "changes": {}, "changed": False}
        await self._check_experiments({e: merged[e] for e in merged
                                       if merged[e] != current.ranges.get(e)})
        await self.store.save_layer(changed, current.version, audit_entry(
            changed.version, actor, "update", changes, reason))
        self.directory.invalidate()
        return {**describe(changed), "changes": changes, "changed": True}

    async def _read(self, layer_id: str) -> Layer:
        check_id(layer_id, "layer id")
        layer = await self.store.layer(layer_id)
        if layer is None:
            raise NotFound(f"layer {layer_id!r} does not exist")
        return layer

    async def _check_experiments(self, ranges: Mapping[str, tuple[Range, ...]]) -> None:
        """Every experiment given buckets exists."""
        names = sorted(ranges)
        states = await self.store.read_many(names) if names else []
        missing = [name for name, state in zip(names, states, strict=True) if state is None]
        if missing:
            raise InvalidValue(f"ranges: no experiment {missing[0]!r} (create it first: a "
                               "layer's buckets go to existing experiments)")

    # -- assignment ---------------------------------------------------------------------------

    async def assign(self, body: object) -> dict[str, Any]:
        """Where each unit is in every layer, with its decisions. Everything that can refuse
        the request (targeting rules and contexts checked against the attributes and contexts
        sent, the experiments read) is done for every layer first, and the decisions are made
        only once nothing can: a refused request serves, counts, logs and stores nothing."""
        request = parse_assign(body)
        layers = await self.directory.layers()
        if request.layers is not None:
            named = self.directory.named(request.layers)
            if isinstance(named, str):
                raise InvalidValue(f"layers: no layer {named!r}")
            layers = named
        if not request.batch and not request.sticky:
            return {"unit": request.units[0].unit,
                    "assignments": await self._assign_one(layers, request)}
        plans = [await self._plan(layer, request) for layer in layers]
        self.decisions.check_fresh()
        assignments: list[list[dict[str, Any]]] = [[] for _ in request.units]
        for plan in plans:
            for assigned, entry in zip(assignments, await self._carry_out(plan, request),
                                       strict=True):
                assigned.append(entry)
        results = [{"unit": unit.unit, "assignments": assigned}
                   for unit, assigned in zip(request.units, assignments, strict=True)]
        if request.batch:
            return {"results": results}
        return results[0]

    def memberships(self, layers: tuple[Layer, ...], unit: str, attributes: dict[str, Any]
                    ) -> list[tuple[Layer, int, str | None, Snapshot | None]]:
        """Where one unit is, layer by layer: (layer, bucket, experiment or the reason for the
        default, and the experiment's snapshot when cached and eligible). A snapshot of None
        beside an experiment id means: not decided here (not cached, contextual or archived),
        ask ``_plan``."""
        encoded = unit.encode()
        peek, sha256, first_eight = self.cache.peek, hashlib.sha256, _FIRST_EIGHT.unpack_from
        now = self.cache.now()
        found: list[tuple[Layer, int, str | None, Snapshot | None]] = []
        for layer in layers:
            # bandit.assignment.bucket, inline (a function call is a fifth of its cost).
            position = first_eight(sha256(layer.prefix + encoded).digest())[0] % BUCKETS
            experiment = layer.owners[position]
            if experiment is None:
                found.append((layer, position, UNASSIGNED, None))
                continue
            snapshot = peek(experiment, now)
            if snapshot is None or snapshot.contextual is not None \
                    or snapshot.experiment.archived:
                found.append((layer, position, experiment, None))
                continue
            rule = snapshot.experiment.targeting
            try:
                eligible = rule is None or rule.matches(attributes)
            except InvalidValue as error:
                raise InvalidValue(_refusal(error, None, layer, experiment)) from None
            found.append((layer, position, experiment, snapshot) if eligible
                         else (layer, position, TARGETING, None))
        return found

    async def _assign_one(self, layers: tuple[Layer, ...],
                          request: AssignRequest) -> list[dict[str, Any]]:
        """One unit in every layer: the common case (a cached, context-free experiment, no
        sticky assignment) decided inline, the others planned by ``_plan`` (all before any
        decision is made)."""
        unit = request.units[0]
        found = self.memberships(layers, unit.unit, unit.attributes)
        plans = {layer.id: await self._plan(layer, request)
                 for layer, _, experiment, snapshot in found
                 if snapshot is None and experiment not in (UNASSIGNED, TARGETING)}
        decisions = self.decisions
        decisions.check_fresh()
        signer = await decisions.signer()
        now = time.time()
        entries: list[dict[str, Any]] = []
        for layer, position, experiment, snapshot in found:
            if snapshot is not None:
                assert experiment is not None
                decision = decisions.for_unit(snapshot, unit.unit, signer, now)
                share = layer.shares[experiment]
                entries.append({"layer": layer.id, "bucket": position,
                                "experiment": experiment, "reason": "assigned",
                                "in_experiment": share, "decision": decision,
                                "propensity": share * decision["propensity"]})
            elif experiment in (UNASSIGNED, TARGETING):
                entries.append({"layer": layer.id, "bucket": position, "experiment": None,
                                "reason": experiment, "default": layer.default})
            else:
                [entry] = await self._carry_out(plans[layer.id], request)
                entries.append(entry)
        return entries

    async def _plan(self, layer: Layer, request: AssignRequest) -> _Plan:
        """The units of one layer: the entries of those given the default, and the
        experiments' groups of eligible units still to decide (their entries None until
        then). Raises InvalidValue, naming the unit, experiment and layer, for an attribute or
        a context the experiment cannot take; decides nothing."""
        units = request.units
        positions = buckets(layer.salt, [unit.unit for unit in units])
        layer_id, default, owners = layer.id, layer.default, layer.owners
        entries: list[dict[str, Any] | None] = []
        members: defaultdict[str, list[int]] = defaultdict(list)
        for i, position in enumerate(positions):
            experiment = owners[position]
            if experiment is None:
                entries.append({"layer": layer_id, "bucket": position, "experiment": None,
                                "reason": UNASSIGNED, "default": default})
            else:
                entries.append(None)
                members[experiment].append(i)
        groups: list[tuple[str, Snapshot, list[int]]] = []
        for experiment_id, indices in members.items():
            snapshot = await self._snapshot(experiment_id)
            if isinstance(snapshot, str):
                for i in indices:
                    entries[i] = {"layer": layer_id, "bucket": positions[i], "experiment": None,
                                  "reason": snapshot, "default": default}
                continue
            rule = snapshot.experiment.targeting
            model = None if snapshot.contextual is None else snapshot.contextual.model
            eligible = indices
            if rule is not None or model is not None:
                eligible = []
                turn = time.perf_counter()
                for i in indices:
                    if time.perf_counter() - turn > TURN_S:
                        # A rule's regexes can take milliseconds per unit (RE2 is linear in
                        # the input, but a pattern whose DFA outgrows its memory runs on the
                        # slow matcher): the other requests of the process get a turn.
                        await asyncio.sleep(0)
                        turn = time.perf_counter()
                    unit = units[i]
                    try:
                        if rule is not None and not rule.matches(unit.attributes):
                            entries[i] = {"layer": layer_id, "bucket": positions[i],
                                          "experiment": None, "reason": TARGETING,
                                          "default": default}
                            continue
                        if model is not None:
                            model.encode(unit.context)
                    except InvalidValue as error:
                        raise InvalidValue(_refusal(
                            error, i if request.batch else None, layer, experiment_id,
                            unit.unit if request.batch else None)) from None
                    eligible.append(i)
            if eligible:
                groups.append((experiment_id, snapshot, eligible))
        return _Plan(layer, positions, entries, groups)

    async def _carry_out(self, plan: _Plan, request: AssignRequest) -> list[dict[str, Any]]:
        """The decisions of a plan's groups: every unit's entry."""
        entries, units, positions = plan.entries, request.units, plan.positions
        layer_id = plan.layer.id
        for experiment_id, snapshot, eligible in plan.groups:
            share = plan.layer.share(experiment_id)
            decisions = await self._decide(snapshot, [units[i] for i in eligible],
                                           request.sticky)
            for i, decision in zip(eligible, decisions, strict=True):
                entries[i] = {"layer": layer_id, "bucket": positions[i],
                              "experiment": experiment_id, "reason": "assigned",
                              "in_experiment": share, "decision": decision,
                              "propensity": share * decision["propensity"]}
        done: list[dict[str, Any]] = []
        for entry in entries:
            assert entry is not None
            done.append(entry)
        return done

    async def _snapshot(self, experiment_id: str) -> Snapshot | str:
        """The experiment's snapshot, or why its units get the default."""
        snapshot = self.cache.peek(experiment_id)
        if snapshot is None:
            try:
                snapshot = await self.cache.get(experiment_id)
            except NotFound:
                return MISSING
        if snapshot.experiment.archived:
            return ARCHIVED
        return self.decisions.usable(snapshot, experiment_id)

    async def _decide(self, snapshot: Snapshot, units: list[AssignUnit],
                      sticky: bool) -> list[dict[str, Any]]:
        decisions = self.decisions
        signer = await decisions.signer()
        names = [unit.unit for unit in units]
        if snapshot.experiment.policy == "fixed":
            return decisions.by_hash(snapshot, names, signer)
        if not sticky and snapshot.contextual is None:
            return decisions.for_units(snapshot, names, signer)
        answers = []
        for unit in units:  # sticky (a stored assignment) or contextual (its own context)
            wanted = AllocateRequest(unit=unit.unit, sticky=sticky, context=unit.context)
            answer = (decisions.allocate_cached(snapshot.experiment.id, wanted)
                      or await decisions.allocate(snapshot.experiment.id, wanted))
            decision: dict[str, Any] = answer["decisions"][0]
            answers.append(decision)
        return answers


@dataclass
class _Plan:
    """One layer's assignment before its decisions (``Layers._plan``)."""

    layer: Layer
    #: Per unit: its bucket, and its entry (None until its decision is made).
    positions: list[int]
    entries: list[dict[str, Any] | None]
    #: Per experiment with eligible units: its snapshot and those units' indices.
    groups: list[tuple[str, Snapshot, list[int]]]


def _refusal(error: InvalidValue, index: int | None, layer: Layer, experiment: str,
             unit: str | None = None) -> str:
    """A unit's attribute or context refused, saying which unit (in a batch: its place and
    id), experiment and layer: each experiment has its own rule and model."""
    where = "" if index is None else f"units[{index}]."
    who = "" if unit is None else f"unit {unit!r}, "
    return (f"{where}{error.message} ({who}experiment {experiment!r}, layer {layer.id!r}); "
            "nothing was assigned")


def _object(value: object, what: str) -> dict[str, Any]:
    """An object of experiment id -> ranges."""
    if not isinstance(value, dict) or len(value) > MAX_EXPERIMENTS:
        raise InvalidValue(f"{what}: expected an object of at most {MAX_EXPERIMENTS} "
                           f"experiments, each with its ranges, got {json_kind(value)}")
    return value


def describe(layer: Layer) -> dict[str, Any]:
    """A layer as the API shows it: its definition, each experiment's share of the units, and
    the ranges no experiment owns."""
    document = layer.to_json()
    document["ranges"] = dict(sorted(document["ranges"].items()))
    document["shares"] = {e: layer.share(e) for e in sorted(layer.ranges)}
    document["free"] = [list(r) for r in _subtract([(0, BUCKETS)], tuple(
        r for spans in layer.ranges.values() for r in spans))]
    return document


def _subtract(ranges: list[Range] | tuple[Range, ...],
              removed: tuple[Range, ...]) -> list[Range]:
    """``ranges`` without the buckets of ``removed`` (both sorted and disjoint)."""
    owned = bytearray(BUCKETS)
    for start, end in ranges:
        owned[start:end] = b"\x01" * (end - start)
    for start, end in removed:
        owned[start:end] = bytes(end - start)
    kept: list[Range] = []
    position = 0
    while True:
        start = owned.find(1, position)
        if start < 0:
            return kept
        end = owned.find(0, start)
        end = BUCKETS if end < 0 else end
        kept.append((start, end))
        position = end


def _spans(ranges: list[Range] | tuple[Range, ...]) -> str:
    return ", ".join(f"[{start}, {end})" for start, end in ranges)


def _diff(old: Layer, new: Layer) -> dict[str, dict[str, Any]]:
    changes: dict[str, dict[str, Any]] = {}
    if old.default != new.default:
        changes["default"] = {"old": old.default, "new": new.default}
    for experiment in sorted(old.ranges.keys() | new.ranges.keys()):
        before, after = old.ranges.get(experiment), new.ranges.get(experiment)
        if before != after:
            changes[f"ranges.{experiment}"] = {
                "old": None if before is None else [list(r) for r in before],
                "new": None if after is None else [list(r) for r in after]}
    return changes

