"""Layers: experiments sharing a surface without sharing a unit.

A layer hashes every unit into one of ``BUCKETS`` buckets (``bandit.assignment``) and gives
its experiments disjoint bucket ranges: a unit is in the experiment whose range holds its
bucket, or in none (the layer's ``default``). Layers are independent of each other (their
salts differ). An experiment belongs to at most one layer.

Ranges are half-open ``[start, end)`` within ``[0, BUCKETS)``; an experiment may own several.
Growing an experiment adds buckets to what it owns, so nobody already in moves; shrinking
removes some, and only the units in those buckets leave.

This module holds the layer's definition, its validation (errors name the field) and the
lookup of a bucket's experiment; storage, the API and the assignment of decisions come with
the service.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bandit.assignment import BUCKETS, bucket
from bandit.errors import InvalidValue, json_kind
from bandit.features import CONTROL_CHARACTERS
from bandit.model import check_id

__all__ = ["Layer", "check_disjoint", "layer_from_json", "merge_ranges", "parse_layer",
           "parse_ranges"]

#: Most experiments a layer holds, and ranges an experiment owns in it.
MAX_EXPERIMENTS, MAX_RANGES = 100, 100

Range = tuple[int, int]


@dataclass(frozen=True)
class Layer:
    id: str
    salt: str
    #: Experiment id -> its ranges, sorted, disjoint from each other and from the others'.
    ranges: Mapping[str, tuple[Range, ...]]
    #: What a unit in no experiment of the layer gets (a variant name), or None.
    default: str | None = None
    version: int = 1
    #: Bucket -> the experiment that owns it (None: the default's), built once: a list, as
    #: indexing one is the cheapest lookup Python has.
    owners: list[str | None] = field(init=False, repr=False, compare=False)
    #: Experiment id -> P(a unit is in it), built once.
    shares: dict[str, float] = field(init=False, repr=False, compare=False)
    #: The UTF-8 bytes hashed before a unit's: ``salt + "."``.
    prefix: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        owners: list[str | None] = [None] * BUCKETS
        for experiment, spans in self.ranges.items():
            for start, end in spans:
                owners[start:end] = [experiment] * (end - start)
        object.__setattr__(self, "owners", owners)
        object.__setattr__(self, "shares", {
            experiment: sum(end - start for start, end in spans) / BUCKETS
            for experiment, spans in self.ranges.items()})
        object.__setattr__(self, "prefix", f"{self.salt}.".encode())

    def experiment_of(self, unit: str) -> tuple[int, str | None]:
        """The unit's bucket, and the experiment whose range holds it (None: the default)."""
        position = bucket(self.salt, unit)
        return position, self.owners[position]

    def owner(self, position: int) -> str | None:
        """The experiment that owns a bucket (None: the default's)."""
        return self.owners[position]

    def share(self, experiment: str) -> float:
        """P(a unit is in ``experiment``): the share of the buckets it owns."""
        return self.shares.get(experiment, 0.0)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "salt": self.salt, "default": self.default,
                "version": self.version,
                "ranges": {e: [list(r) for r in ranges] for e, ranges in self.ranges.items()}}


def parse_ranges(data: object, where: str) -> tuple[Range, ...]:
    """An experiment's ranges ``[[start, end], ...]``: whole numbers, ``0 <= start < end <=
    BUCKETS``, disjoint; sorted and adjacent ones merged."""
    if not isinstance(data, list):
        raise InvalidValue(f"{where}: expected a list of 1 to {MAX_RANGES} ranges "
                           f"[start, end], got {json_kind(data)}")
    if not 1 <= len(data) <= MAX_RANGES:
        raise InvalidValue(f"{where}: expected 1 to {MAX_RANGES} ranges [start, end], got "
                           f"{len(data)}")
    ranges: list[Range] = []
    for i, raw in enumerate(data):
        # JSON has one number type: 3.0 is the integer 3.
        item = [int(v) if type(v) is float and v.is_integer() else v for v in raw] \
            if isinstance(raw, list) else raw
        if (not isinstance(item, list) or len(item) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in item)):
            raise InvalidValue(f"{where}[{i}]: expected [start, end], two whole numbers, got "
                               f"{item!r}")
        start, end = item
        if not 0 <= start < end <= BUCKETS:
            raise InvalidValue(f"{where}[{i}]: [{start}, {end}) is not within [0, {BUCKETS}) "
                               "with start < end")
        ranges.append((start, end))
    return merge_ranges(ranges, where)


def merge_ranges(ranges: list[Range], where: str) -> tuple[Range, ...]:
    """Valid ranges sorted, adjacent ones merged; InvalidValue when two overlap, or when more
    than ``MAX_RANGES`` are left."""
    merged: list[Range] = []
    for start, end in sorted(ranges):
        if merged and start < merged[-1][1]:
            raise InvalidValue(f"{where}: the ranges [{merged[-1][0]}, {merged[-1][1]}) and "
                               f"[{start}, {end}) overlap")
        if merged and start == merged[-1][1]:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    if len(merged) > MAX_RANGES:
        raise InvalidValue(f"{where}: the experiment would own {len(merged)} separate ranges, "
                           f"over {MAX_RANGES}: merge some (adjacent ranges merge by themselves)")
    return tuple(merged)


def parse_layer(data: object) -> Layer:
    """A new layer from its JSON (``id``, ``salt`` (default: the id), ``default``,
    ``ranges``: experiment id -> ranges), or InvalidValue naming the field."""
    if not isinstance(data, dict):
        raise InvalidValue(f"layer: expected a JSON object, got {json_kind(data)}")
    unknown = set(data) - {"id", "salt", "default", "ranges"}
    if unknown:
        raise InvalidValue(f"layer: unknown field(s) {', '.join(sorted(unknown))}")
    layer_id = check_id(data.get("id"), "id")
    salt = _name(data.get("salt", layer_id), "salt", 128)
    default = data.get("default")
    if default is not None:
        default = _name(default, "default", 64)
    raw = data.get("ranges", {})
    if not isinstance(raw, dict) or len(raw) > MAX_EXPERIMENTS:
        raise InvalidValue(f"ranges: expected an object of at most {MAX_EXPERIMENTS} "
                           "experiments, each with its ranges")
    ranges = {check_id(experiment, "ranges key"): parse_ranges(value, f"ranges.{experiment}")
              for experiment, value in raw.items()}
    check_disjoint(ranges)
    return Layer(layer_id, salt, ranges, default)


def _name(value: object, what: str, longest: int) -> str:
    """A salt or a default: 1 to ``longest`` characters, none of them control characters or
    bidirectional overrides (they are shown in terminals and pages)."""
    if not isinstance(value, str):
        raise InvalidValue(f"{what}: expected a string of 1 to {longest} characters, got "
                           f"{json_kind(value)}")
    if not 1 <= len(value) <= longest:
        raise InvalidValue(f"{what}: expected 1 to {longest} characters, got {len(value)}")
    if CONTROL_CHARACTERS.search(value):
        raise InvalidValue(f"{what}: control characters and bidirectional overrides are not "
                           "allowed")
    return value


def check_disjoint(ranges: Mapping[str, tuple[Range, ...]]) -> None:
    """No bucket owned by two experiments; the message names both and the bucket range."""
    owned = sorted((start, end, experiment) for experiment, spans in ranges.items()
                   for start, end in spans)
    for (start, end, first), (next_start, next_end, second) in itertools.pairwise(owned):
        if next_start < end:
            raise InvalidValue(f"ranges: {first} [{start}, {end}) and {second} "
                               f"[{next_start}, {next_end}) overlap")


def layer_from_json(data: dict[str, Any]) -> Layer:
    """Inverse of ``Layer.to_json`` for what the store saved (already validated)."""
    return Layer(str(data["id"]), str(data["salt"]),
                 {experiment: tuple((int(a), int(b)) for a, b in spans)
                  for experiment, spans in data["ranges"].items()},
                 data.get("default"), int(data["version"]))
