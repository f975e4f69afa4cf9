"""Request validation: the hand-written parsers (bandit.inputs, bandit.model) against the same
requests declared as msgspec Structs, which would also give their JSON Schema.

A trial, not a dependency of the product: msgspec is in the dev lock only, for this script. The
question was whether declarations could replace the hand-written validation and schemas while
allocate n=1 stays at or above 0.8x the no-op handler. Measured per call, in process, after a
warm-up, each against the other in the same run (the same JSON bytes in):

- allocate: an empty body (the common n=1), ``{"n": 100}``, and a sticky unit;
- create: an experiment of 3 arms with exploration settings.

Both paths decode the bytes; the msgspec path checks what its constraints can say (ranges,
patterns, lengths) and then the rules that involve several fields in Python, as ours does.

Usage (from the repository root): python -m benchmarks.bench_validation
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from typing import Annotated, Any

import orjson

from bandit.errors import InvalidValue
from bandit.inputs import MAX_DECISIONS, MAX_PLACEMENTS, MAX_SLATE, MAX_UNIT_LENGTH, parse_allocate
from bandit.model import parse_new_experiment

try:
    import msgspec
except ImportError:  # pragma: no cover
    sys.exit("msgspec is needed for this trial: pip install msgspec")

Count = Annotated[int, msgspec.Meta(ge=1, le=MAX_DECISIONS)]
Slate = Annotated[int, msgspec.Meta(ge=1, le=MAX_SLATE)]
Unit = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_UNIT_LENGTH,
                                   pattern=r"^[^\x00-\x1f\x7f]*$")]
ArmId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
Share = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class AllocateBody(msgspec.Struct, forbid_unknown_fields=True):
    n: Count = 1
    k: Slate | None = None
    unit: Unit | None = None
    sticky: bool = False
    provisional: bool = False
    context: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.sticky and self.unit is None:
            raise msgspec.ValidationError("sticky: needs a unit")
        if self.k is not None and self.n * self.k > MAX_PLACEMENTS:
            raise msgspec.ValidationError("n * k: over the cap")


class Exploration(msgspec.Struct, forbid_unknown_fields=True):
    epsilon: Share = 0.0
    min_share: Share = 0.0
    max_share: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 1.0
    temperature: Annotated[float, msgspec.Meta(ge=0.01, le=100.0)] = 1.0
    half_life_s: Annotated[float, msgspec.Meta(ge=1.0, le=1e10)] | None = None
    warmup: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0
    top_two: Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)] | None = None


class NewExperiment(msgspec.Struct, forbid_unknown_fields=True):
    id: ArmId
    arms: Annotated[list[ArmId], msgspec.Meta(min_length=2, max_length=1000)]
    reward: str
    exploration: Exploration = msgspec.field(default_factory=Exploration)

    def __post_init__(self) -> None:
        if len(set(self.arms)) < len(self.arms):
            raise msgspec.ValidationError("arms: duplicate arm ids")
        if self.reward not in ("bernoulli", "gaussian"):
            raise msgspec.ValidationError("reward: must be one of bernoulli, gaussian")
        active = len(self.arms)
        if self.exploration.min_share * active > 1 + 1e-12:
            raise msgspec.ValidationError("exploration.min_share: too large for the arms")


def _per_call_us(function: Callable[[], object], seconds: float = 1.0) -> float:
    for _ in range(1000):
        function()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(1000):
            function()
        calls += 1000
    return (time.perf_counter() - started) / calls * 1e6


def _ours_allocate(raw: bytes) -> object:
    return parse_allocate(orjson.loads(raw))


def main() -> None:
    allocate_decoder = msgspec.json.Decoder(AllocateBody)
    create_decoder = msgspec.json.Decoder(NewExperiment)
    allocates = {"empty body (n=1)": b"{}", '{"n": 100}': b'{"n": 100}',
                 "sticky unit": b'{"unit": "user-42", "sticky": true}'}
    create = orjson.dumps({"id": "homepage-hero", "arms": ["control", "blue", "green"],
                           "reward": "bernoulli", "exploration": {"min_share": 0.05}})
    print(f"{'request':28} {'ours us':>9} {'msgspec us':>11} {'msgspec/ours':>13}")
    for label, raw in allocates.items():
        ours = _per_call_us(functools.partial(_ours_allocate, raw))
        theirs = _per_call_us(functools.partial(allocate_decoder.decode, raw))
        print(f"{'allocate ' + label:28} {ours:9.2f} {theirs:11.2f} {theirs / ours:12.2f}x")
    ours = _per_call_us(lambda: parse_new_experiment(orjson.loads(create), 0.0))
    theirs = _per_call_us(lambda: create_decoder.decode(create))
    print(f"{'create, 3 arms':28} {ours:9.2f} {theirs:11.2f} {theirs / ours:12.2f}x")
    try:
        allocate_decoder.decode(b'{"n": 0}')
    except msgspec.ValidationError as error:
        print(f"msgspec's message for n=0: {error}")
    try:
        parse_allocate({"n": 0})
    except InvalidValue as error:
        print(f"ours for n=0:              {error}")
    schema = msgspec.json.schema(AllocateBody)
    print(f"msgspec's JSON Schema of the allocate body: {len(orjson.dumps(schema))} bytes")


if __name__ == "__main__":
    main()
