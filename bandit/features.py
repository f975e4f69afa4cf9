"""Contextual experiments' models: the declared feature spec, its validation, and the encoding
of a request's ``context`` into the feature vector x every decision and reward uses.

Pure functions and plain data only. The spec is fixed at create (the statistics are sums over
its columns, so it cannot change under them): ``version`` numbers its format and
``fingerprint`` identifies its content.

Encoding, column by column (``LinearModel.columns`` names them):

- the intercept, 1 (unless ``"intercept": false``);
- a numeric feature with ``"scale": [low, high]``: (value - low) / (high - low), clipped to
  [0, 1], so a fixed, declared scaling (no running scaler that would drift under the model);
- a categorical feature with ``"values": [...]``: one column per declared value and one for
  "other", exactly one of them 1 (an undeclared value is "other", not an error);
- a hashed feature with ``"buckets": B``: one-hot over B buckets, bucket = CRC-32 of the
  value's UTF-8 bytes mod B (zlib.crc32: any language reproduces it).

A feature absent from the context takes its ``default`` when it declares one, else the
request is refused with a message naming the feature. Keys the model does not name are
ignored: one context object may serve several experiments.
"""

from __future__ import annotations

import hashlib
import math
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from bandit.errors import InvalidValue, json_kind, object_fields

MAX_DIMENSION = 64
MAX_FEATURES = 64
MAX_VALUES = 63
MAX_VALUE_LENGTH = 200
MODEL_VERSION = 1
FEATURE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}")
#: Declared values are shown to operators (stats, dashboard, terminal): no control characters
#: (C0, DEL, C1: they would rewrite a terminal) and no bidirectional overrides (they reorder a
#: page). Layers' salts and defaults use it too.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_NO_CONTROL = "control characters and bidirectional overrides are not allowed"
FeatureType = Literal["numeric", "categorical", "hashed"]
FEATURE_TYPES: tuple[FeatureType, ...] = ("numeric", "categorical", "hashed")
#: Prior precision of the coefficients, in units of the noise variance (ridge strength), and
#: of the intercept (weak: a per-arm base rate is learnt from the first observations).
DEFAULT_PRECISION = 1.0
DEFAULT_INTERCEPT_PRECISION = 0.01
#: Inverse-gamma prior of the noise variance: mean beta / (alpha - 1) is undefined for alpha 1,
#: so these are weak; beta / alpha is the noise scale before any data (0.25: a coin's variance).
DEFAULT_NOISE = {"bernoulli": {"alpha": 1.0, "beta": 0.25}, "gaussian": {"alpha": 1.0,
                                                                        "beta": 1.0}}


@dataclass(frozen=True)
class Feature:
    name: str
    type: FeatureType
    #: numeric: [low, high].
    scale: tuple[float, float] | None = None
    #: categorical: the declared values (each gets a column; anything else is "other").
    values: tuple[str, ...] = ()
    #: hashed: the number of buckets.
    buckets: int = 0
    #: Used when the context lacks the feature (None: the feature is required).
    default: str | float | None = None
    #: Prior precision of this feature's columns (None: the model's ``precision``).
    precision: float | None = None

    @property
    def width(self) -> int:
        if self.type == "numeric":
            return 1
        if self.type == "categorical":
            return len(self.values) + 1
        return self.buckets

    def columns(self) -> list[str]:
        if self.type == "numeric":
            return [self.name]
        if self.type == "categorical":
            return [f"{self.name}={value}" for value in self.values] + [f"{self.name}=other"]
        return [f"{self.name}#{bucket}" for bucket in range(self.buckets)]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.type == "numeric":
            assert self.scale is not None
            out["scale"] = list(self.scale)
        elif self.type == "categorical":
            out["values"] = list(self.values)
        else:
            out["buckets"] = self.buckets
        if self.default is not None:
            out["default"] = self.default
        if self.precision is not None:
            out["precision"] = self.precision
        return out


@dataclass(frozen=True)
class LinearModel:
    features: tuple[Feature, ...]
    intercept: bool = True
    precision: float = DEFAULT_PRECISION
    intercept_precision: float = DEFAULT_INTERCEPT_PRECISION
    alpha: float = 1.0
    beta: float = 0.25
    version: int = MODEL_VERSION
    #: Per feature, what ``encode`` needs: name, numeric?, first column, low, high - low,
    #: value -> column, the "other" column, buckets, default.
    _plan: tuple[tuple[Any, ...], ...] = field(init=False, repr=False, compare=False)
    _dimension: int = field(init=False, repr=False, compare=False)
    #: Per categorical feature: name, default, value -> "name=value", "name=other".
    _segments: tuple[tuple[Any, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        plan: list[tuple[Any, ...]] = []
        position = 1 if self.intercept else 0
        for feature in self.features:
            low, high = feature.scale or (0.0, 1.0)
            plan.append((feature.name, feature.type == "numeric", position, low, high - low,
                         {value: i for i, value in enumerate(feature.values)},
                         len(feature.values), feature.buckets, feature.default))
            position += feature.width
        object.__setattr__(self, "_plan", tuple(plan))
        object.__setattr__(self, "_dimension", position)
        object.__setattr__(self, "_segments", tuple(
            (f.name, f.default, {value: f"{f.name}={value}" for value in f.values},
             f"{f.name}=other") for f in self.features if f.type == "categorical"))

    @property
    def dimension(self) -> int:
        return self._dimension

    def columns(self) -> list[str]:
        """Names of the columns of x, in order."""
        names = ["intercept"] if self.intercept else []
        for feature in self.features:
            names += feature.columns()
        return names

    def prior_precision(self) -> npt.NDArray[np.float64]:
        out = np.empty(self.dimension)
        position = 0
        if self.intercept:
            out[0] = self.intercept_precision
            position = 1
        for feature in self.features:
            out[position:position + feature.width] = (
                self.precision if feature.precision is None else feature.precision)
            position += feature.width
        return out

    def categorical(self) -> list[Feature]:
        return [f for f in self.features if f.type == "categorical"]

    @property
    def has_segments(self) -> bool:
        return bool(self._segments)

    def segments(self, context: dict[str, Any] | None) -> tuple[str, ...]:
        """``feature=value`` of each categorical feature for a context ``encode`` accepted
        ("other" for an undeclared value)."""
        context = context or {}
        return tuple(names.get(context.get(name, default), other)
                     for name, default, names, other in self._segments)

    def encode(self, context: object, what: str = "context") -> npt.NDArray[np.float64]:
        """The feature vector of ``context`` (an object of feature values); InvalidValue
        naming the feature when a value has the wrong type or a required one is missing.

        The per-decision hot path: a plan made once per model (positions, scales, value
        indices) and a list filled in pure Python, turned into an array once."""
        if context is None:
            context = {}
        if type(context) is not dict:
            raise InvalidValue(f"{what}: expected an object of feature values")
        x = [0.0] * self.dimension
        if self.intercept:
            x[0] = 1.0
        for name, numeric, position, low, span, index, other, buckets, default in self._plan:
            value = context.get(name, default)
            kind = type(value)
            if numeric:
                if kind is float or kind is int:
                    if kind is float and not -math.inf < value < math.inf:
                        raise InvalidValue(f"{what}.{name}: must be finite")
                    try:
                        number = (value - low) / span
                    except OverflowError:  # an integer beyond any float: beyond the scale
                        number = 1.0 if value > low else 0.0
                    # Clipped to [0, 1]; a finite value so far out that the division
                    # overflows is simply beyond the scale.
                    if number >= 1.0:
                        x[position] = 1.0
                    elif number > 0.0:
                        x[position] = number
                    continue
            elif kind is str:
                if len(value) > MAX_VALUE_LENGTH:
                    raise InvalidValue(f"{what}.{name}: at most {MAX_VALUE_LENGTH} characters")
                column = (index.get(value, other) if buckets == 0
                          else zlib.crc32(value.encode()) % buckets)
                x[position + column] = 1.0
                continue
            if value is None:
                if name in context:
                    raise InvalidValue(f"{what}.{name}: null is not a value; leave the "
                                       "feature out to use its default")
                raise InvalidValue(f"{what}.{name}: required (the model declares it "
                                   "without a default)")
            raise InvalidValue(f"{what}.{name}: expected {'a number' if numeric else 'a string'}"
                               f", got {json_kind(value)}")
        return np.array(x)

    @property
    def fingerprint(self) -> str:
        """16 hex digits identifying the spec's content."""
        import orjson

        text = orjson.dumps(self.to_json(), option=orjson.OPT_SORT_KEYS)
        return hashlib.blake2b(text, digest_size=8).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "linear",
            "version": self.version,
            "features": [f.to_json() for f in self.features],
            "intercept": self.intercept,
            "prior": {"precision": self.precision,
                      "intercept_precision": self.intercept_precision,
                      "alpha": self.alpha, "beta": self.beta},
            "dimension": self.dimension,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LinearModel:
        """Inverse of ``to_json`` for what the store saved (already validated)."""
        features = tuple(
            Feature(name=f["name"], type=f["type"],
                    scale=(float(f["scale"][0]), float(f["scale"][1])) if "scale" in f
                    else None,
                    values=tuple(f.get("values", ())), buckets=int(f.get("buckets", 0)),
                    default=f.get("default"), precision=f.get("precision"))
            for f in data["features"])
        prior = data["prior"]
        return cls(features=features, intercept=bool(data["intercept"]),
                   precision=float(prior["precision"]),
                   intercept_precision=float(prior["intercept_precision"]),
                   alpha=float(prior["alpha"]), beta=float(prior["beta"]),
                   version=int(data["version"]))


def feature_hash(x: npt.NDArray[np.float64]) -> int:
    """63 bits identifying a feature vector (signed into a contextual decision's id)."""
    return int.from_bytes(hashlib.blake2b(x.tobytes(), digest_size=8).digest(), "little") >> 1


_MODEL_FIELDS = {"type", "features", "intercept", "prior", "version", "dimension"}
_FEATURE_FIELDS = {"name", "type", "scale", "values", "buckets", "default", "precision"}


def parse_model(value: object, reward: str) -> LinearModel:
    """A ``model`` object of a create request; InvalidValue names the bad part."""
    data = object_fields(value, "model", _MODEL_FIELDS)
    if data.get("type") != "linear":
        kind = data.get("type")
        raise InvalidValue(f"model.type: must be 'linear', got "
                           f"{repr(kind) if isinstance(kind, str) else json_kind(kind)}")
    version = data.get("version", MODEL_VERSION)
    if type(version) is not int or version != MODEL_VERSION:
        raise InvalidValue(f"model.version: this service knows version {MODEL_VERSION}")
    intercept = data.get("intercept", True)
    if not isinstance(intercept, bool):
        raise InvalidValue("model.intercept: expected true or false")
    raw_features = data.get("features")
    if not isinstance(raw_features, list):
        raise InvalidValue("model.features: expected a list of features")
    if len(raw_features) > MAX_FEATURES:
        raise InvalidValue(f"model.features: at most {MAX_FEATURES}")
    features: list[Feature] = []
    names: set[str] = set()
    for i, raw in enumerate(raw_features):
        feature = _parse_feature(raw, f"model.features[{i}]")
        if feature.name in names:
            raise InvalidValue(f"model.features[{i}].name: {feature.name!r} is declared twice")
        names.add(feature.name)
        features.append(feature)
    noise = DEFAULT_NOISE.get(reward, DEFAULT_NOISE["gaussian"])
    prior = object_fields(data.get("prior", {}), "model.prior",
                     {"precision", "intercept_precision", "alpha", "beta"})
    values = {name: _positive(prior.get(name, default), f"model.prior.{name}")
              for name, default in (("precision", DEFAULT_PRECISION),
                                    ("intercept_precision", DEFAULT_INTERCEPT_PRECISION),
                                    ("alpha", noise["alpha"]), ("beta", noise["beta"]))}
    model = LinearModel(features=tuple(features), intercept=intercept,
                        precision=values["precision"],
                        intercept_precision=values["intercept_precision"],
                        alpha=values["alpha"], beta=values["beta"])
    if model.dimension == 0:
        raise InvalidValue("model: no columns (no features and no intercept)")
    if model.dimension > MAX_DIMENSION:
        raise InvalidValue(f"model: {model.dimension} columns (intercept, one per numeric "
                           "feature, values + 1 per categorical, buckets per hashed) is over "
                           f"the limit of {MAX_DIMENSION}")
    if "dimension" in data and (type(data["dimension"]) is not int
                                or data["dimension"] != model.dimension):
        raise InvalidValue(f"model.dimension: the features make {model.dimension} columns, "
                           f"not {data['dimension']!r}")
    return model


def _parse_feature(raw: object, what: str) -> Feature:
    data = object_fields(raw, what, _FEATURE_FIELDS)
    name = data.get("name")
    if not isinstance(name, str) or not FEATURE_NAME.fullmatch(name):
        raise InvalidValue(f"{what}.name: expected 1 to 64 characters of letters, digits and "
                           f"'_.:-', got {json_kind(name)}")
    kind = data.get("type")
    if kind not in FEATURE_TYPES:
        raise InvalidValue(f"{what}.type: must be one of {list(FEATURE_TYPES)}, got "
                           f"{json_kind(kind) if not isinstance(kind, str) else repr(kind)}")
    allowed = {"numeric": "scale", "categorical": "values", "hashed": "buckets"}
    for other in sorted(set(allowed.values()) - {allowed[kind]}):
        if other in data:
            raise InvalidValue(f"{what}.{other}: not a field of a {kind} feature")
    precision = (None if data.get("precision") is None
                 else _positive(data["precision"], f"{what}.precision"))
    default = data.get("default")
    if kind == "numeric":
        scale = data.get("scale")
        if (not isinstance(scale, list) or len(scale) != 2
                or any(type(v) is bool or not isinstance(v, int | float)
                       or not math.isfinite(v) for v in scale)):
            raise InvalidValue(f"{what}.scale: expected [low, high], two finite numbers")
        low, high = float(scale[0]), float(scale[1])
        if not low < high:
            raise InvalidValue(f"{what}.scale: low {low:g} is not below high {high:g}")
        if not (high - low < math.inf and high - low >= 1e-9 * max(1.0, abs(low), abs(high))):
            raise InvalidValue(f"{what}.scale: [{low:g}, {high:g}] is too wide or too narrow "
                               "for doubles: high - low must be finite and at least 1e-9 of "
                               "the larger bound (or of 1)")
        if default is not None and (type(default) is bool or not isinstance(default, int | float)
                                    or not math.isfinite(default)):
            raise InvalidValue(f"{what}.default: expected a finite number")
        return Feature(name, "numeric", scale=(low, high),
                       default=None if default is None else float(default),
                       precision=precision)
    if default is not None and (not isinstance(default, str)
                                or len(default) > MAX_VALUE_LENGTH):
        raise InvalidValue(f"{what}.default: expected a string of at most {MAX_VALUE_LENGTH} "
                           "characters")
    if default is not None and CONTROL_CHARACTERS.search(default):
        raise InvalidValue(f"{what}.default: {_NO_CONTROL}")
    if kind == "categorical":
        values = data.get("values")
        if not isinstance(values, list) or not values:
            raise InvalidValue(f"{what}.values: expected a non-empty list of strings")
        if len(values) > MAX_VALUES:
            raise InvalidValue(f"{what}.values: at most {MAX_VALUES} values (hash a feature "
                               "with more)")
        for j, value in enumerate(values):
            if not isinstance(value, str) or not 0 < len(value) <= MAX_VALUE_LENGTH:
                raise InvalidValue(f"{what}.values[{j}]: expected a string of 1 to "
                                   f"{MAX_VALUE_LENGTH} characters")
            if CONTROL_CHARACTERS.search(value):
                raise InvalidValue(f"{what}.values[{j}]: {_NO_CONTROL}")
        if len(set(values)) < len(values):
            raise InvalidValue(f"{what}.values: a value is listed twice")
        if "other" in values:
            raise InvalidValue(f"{what}.values: 'other' is the column of undeclared values; "
                               "it cannot be declared")
        return Feature(name, "categorical", values=tuple(values), default=default,
                       precision=precision)
    buckets = data.get("buckets")
    if type(buckets) is float and buckets.is_integer():
        buckets = int(buckets)  # JSON has one number type: 9.0 is the integer 9 (JSON Schema)
    if type(buckets) is not int or not 2 <= buckets <= MAX_DIMENSION:
        raise InvalidValue(f"{what}.buckets: expected an integer from 2 to {MAX_DIMENSION}")
    return Feature(name, "hashed", buckets=buckets, default=default, precision=precision)


def _positive(value: object, what: str) -> float:
    if type(value) is bool or not isinstance(value, int | float) or not math.isfinite(value) \
            or not 1e-6 <= value <= 1e12:
        raise InvalidValue(f"{what}: expected a number from 1e-06 to 1e+12")
    return float(value)
