"""Experiments and their exploration settings: plain data, validation and (de)serialisation.

Pure functions only: no I/O. Every validation error is an ``InvalidValue`` (422) whose message
names the field and says what is wrong, so a client can fix its request without reading code.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from bandit.errors import InvalidValue, object_fields
from bandit.features import LinearModel, parse_model
from bandit.targeting import Rule, parse_rule

ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
MIN_ARMS = 2
MAX_ARMS = 1000
DEFAULT_ATTRIBUTION_WINDOW_S = 86_400.0
#: Largest reward (and gaussian prior mean) magnitude: the posterior sums of squares of values
#: near the float limit overflow to inf and would break the experiment's statistics for good.
MAX_ABS_REWARD = 1e15
#: Range of the prior's alpha, beta and kappa: the kernels divide by zero on denormal values.
MIN_PRIOR_PARAMETER = 1e-6
MAX_PRIOR_PARAMETER = 1e12
#: A gaussian alpha (shape of the noise precision) below this makes the advisor's draws of the
#: precision underflow to 0 (an infinite noise scale).
MIN_GAUSSIAN_ALPHA = 0.05
#: Metadata bounds: an owner is a name or an address, a hypothesis a paragraph, tags are short.
MAX_OWNER_LENGTH = 200
MAX_HYPOTHESIS_LENGTH = 2000
MAX_TAGS = 20
TAG_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.:/-]{0,63}")
#: Control characters (C0 but tab and newline, DEL, C1) and bidirectional overrides: text that
#: would rewrite an operator's terminal (escape sequences) or reorder what a page shows.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

#: The actor recorded in the audit log when the service runs without API keys.
ANONYMOUS = "anonymous"

Reward = Literal["bernoulli", "gaussian"]
REWARDS: tuple[Reward, ...] = ("bernoulli", "gaussian")
#: ``thompson``: the bandit (allocation follows the posteriors); ``fixed``: an ordinary A/B
#: test, each arm served in proportion to its weight whatever the rewards.
Policy = Literal["thompson", "fixed"]
POLICIES: tuple[Policy, ...] = ("thompson", "fixed")
#: Largest weight of a fixed experiment's arm (weights are relative: 50/50, 1/1, 0.9/0.1).
MAX_WEIGHT = 1e6

BERNOULLI_PRIOR = {"alpha": 1.0, "beta": 1.0}
# Normal-Gamma prior: weak on the mean (kappa: one hundredth of an observation) and on the noise.
GAUSSIAN_PRIOR = {"mean": 0.0, "kappa": 0.01, "alpha": 1.0, "beta": 1.0}


@dataclass(frozen=True)
class Control:
    arm: str
    share: float


@dataclass(frozen=True)
class Exploration:
    """The operator-tunable settings, with their defaults (bounds: ``EXPLORATION_SETTINGS``)."""

    epsilon: float = 0.0
    min_share: float = 0.0
    max_share: float = 1.0
    temperature: float = 1.0
    half_life_s: float | None = None
    warmup: int = 0
    top_two: float | None = None
    control: Control | None = None
    gate_min_samples: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Setting:
    """One exploration setting as every interface presents it: its value's kind and bounds,
    a title and what it means. The validation here, the OpenAPI schema, the operator CLI's
    ``--set`` and the dashboard's form (which reads the OpenAPI document) all take it from
    ``EXPLORATION_SETTINGS``."""

    name: str
    title: str
    description: str
    #: "number", "integer", or "control" (``{arm, share}``).
    kind: str
    low: float = 0.0
    high: float = 1.0
    low_open: bool = False
    high_open: bool = False
    #: What null means, for a setting that may be null (None: it may not).
    null: str | None = None


EXPLORATION_SETTINGS: tuple[Setting, ...] = (
    Setting("epsilon", "Epsilon", "share of decisions drawn uniformly at random", "number"),
    Setting("min_share", "Min share", "floor on every active arm's allocation probability",
            "number"),
    Setting("max_share", "Max share", "cap on any arm's allocation probability", "number",
            low_open=True),
    Setting("temperature", "Temperature",
            "posterior tempering: >1 explores more, <1 exploits more", "number",
            low=0.01, high=100.0),
    Setting("half_life_s", "Half-life (s)",
            "exponential forgetting of evidence for drifting rewards, in seconds", "number",
            low=1.0, high=1e10, null="never"),
    Setting("warmup", "Warm-up", "observations every arm needs before allocation adapts",
            "integer", low=0, high=1_000_000),
    Setting("top_two", "Top-two", "top-two Thompson sampling's leader probability", "number",
            low_open=True, high_open=True, null="plain Thompson"),
    Setting("control", "Control", "a fixed share kept on a control or holdout arm",
            "control", low_open=True, high_open=True, null="no control share"),
    Setting("gate_min_samples", "Guardrail gate",
            "the guardrails' hard gate: an arm with this many observations of every guardrail "
            "metric is held at the floor once P(violates) >= 0.95, until it is < 0.8",
            "integer", low=1, high=1_000_000_000, null="no hard gate"),
)
SETTINGS_BY_NAME = {setting.name: setting for setting in EXPLORATION_SETTINGS}
if list(SETTINGS_BY_NAME) != [f.name for f in fields(Exploration)]:  # pragma: no cover
    raise AssertionError("EXPLORATION_SETTINGS and Exploration name different settings")


Direction = Literal["higher", "lower"]
#: Most guardrails per experiment.
MAX_GUARDRAILS = 5
#: The name a reward event's ``metric`` gives the primary metric (also its default).
PRIMARY = "primary"
#: Stats fields of a guardrail metric are keyed ``<arm>|<metric>|<b or g>`` (its kind: a
#: guardrail whose kind changes starts afresh).
GUARD_SEPARATOR = "|"


@dataclass(frozen=True)
class Guardrail:
    """A metric an arm must not break: its kind, which direction is better, and the threshold
    its mean must keep, absolute or relative to the control arm's mean."""

    metric: str
    kind: Reward
    direction: Direction
    threshold: float
    relative: bool

    @property
    def key(self) -> str:
        """What the stored statistics of this metric are named after (``GUARD_SEPARATOR``)."""
        return f"{self.metric}{GUARD_SEPARATOR}{self.kind[0]}"

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "kind": self.kind, "direction": self.direction,
                "threshold": {"relative" if self.relative else "absolute": self.threshold}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Guardrail:
        [(which, value)] = data["threshold"].items()
        return cls(data["metric"], data["kind"], data["direction"], float(value),
                   which == "relative")


@dataclass(frozen=True)
class Experiment:
    id: str
    arms: tuple[str, ...]
    reward: Reward
    prior: dict[str, float]
    exploration: Exploration = field(default_factory=Exploration)
    paused: frozenset[str] = frozenset()
    attribution_window_s: float = DEFAULT_ATTRIBUTION_WINDOW_S
    version: int = 1
    created_at: float = 0.0
    updated_at: float = 0.0
    archived: bool = False
    #: Metadata for people (never read by the policy): who runs it, why, and labels to filter by.
    owner: str | None = None
    hypothesis: str | None = None
    tags: tuple[str, ...] = ()
    #: A contextual experiment's model (fixed at create); None: context-free.
    model: LinearModel | None = None
    policy: Policy = "thompson"
    #: A fixed experiment's weight per arm (in ``arms`` order; None for a bandit).
    weights: tuple[float, ...] | None = None
    #: Who is eligible, from the attributes of an assign request (None: everyone).
    targeting: Rule | None = None
    #: Metrics besides the primary (the reward) that an arm must not break (issue 20).
    guardrails: tuple[Guardrail, ...] = ()
    #: The control arm when there is no control share (``exploration.control``).
    control: str | None = None

    def guardrail(self, metric: str) -> Guardrail | None:
        return next((g for g in self.guardrails if g.metric == metric), None)

    @property
    def control_arm(self) -> str | None:
        """The arm relative guardrails compare with: the control share's, else ``control``."""
        if self.exploration.control is not None:
            return self.exploration.control.arm
        return self.control

    @property
    def control_index(self) -> int | None:
        """``control_arm``'s index (None: no control)."""
        control = self.control_arm
        return None if control is None else self.arm_index(control)

    @property
    def active_arms(self) -> tuple[str, ...]:
        return tuple(arm for arm in self.arms if arm not in self.paused)

    def arm_index(self, arm: str) -> int | None:
        return self.arm_indices.get(arm)

    @property
    def arm_indices(self) -> dict[str, int]:
        """Arm id -> index (read-only by convention; built once per experiment object)."""
        # Cached on first use; frozen dataclasses allow it through object.__setattr__.
        index: dict[str, int] | None = self.__dict__.get("_arm_index")
        if index is None:
            index = {arm: i for i, arm in enumerate(self.arms)}
            object.__setattr__(self, "_arm_index", index)
        return index

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "arms": [
                {"id": arm, "state": "paused" if arm in self.paused else "active"}
                for arm in self.arms
            ],
            "reward": self.reward,
            "prior": dict(self.prior),
            "exploration": self.exploration.to_json(),
            "attribution_window_s": self.attribution_window_s,
            "version": self.version,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "status": "archived" if self.archived else "active",
            "owner": self.owner,
            "hypothesis": self.hypothesis,
            "tags": list(self.tags),
            "model": None if self.model is None else self.model.to_json(),
            "policy": self.policy,
            "weights": None if self.weights is None else dict(zip(self.arms, self.weights,
                                                                  strict=True)),
            "targeting": None if self.targeting is None else self.targeting.spec,
            "guardrails": [guardrail.to_json() for guardrail in self.guardrails],
            "control": self.control,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Experiment:
        """Inverse of ``to_json`` for what the store saved (already validated)."""
        exploration = dict(data["exploration"])
        control = exploration.pop("control")
        return cls(
            id=data["id"],
            arms=tuple(arm["id"] for arm in data["arms"]),
            reward=data["reward"],
            prior={k: float(v) for k, v in data["prior"].items()},
            exploration=Exploration(
                **exploration, control=Control(**control) if control else None
            ),
            paused=frozenset(arm["id"] for arm in data["arms"] if arm["state"] == "paused"),
            attribution_window_s=float(data["attribution_window_s"]),
            version=int(data["version"]),
            created_at=float(data["created_at"]),
            updated_at=float(data["updated_at"]),
            archived=data["status"] == "archived",
            # Experiments stored before metadata existed have none.
            owner=data.get("owner"),
            hypothesis=data.get("hypothesis"),
            tags=tuple(data.get("tags", ())),
            model=None if data.get("model") is None else LinearModel.from_json(data["model"]),
            # Experiments stored before fixed policies and targeting existed are bandits for
            # everyone.
            policy=data.get("policy", "thompson"),
            weights=None if data.get("weights") is None else tuple(
                float(data["weights"][arm["id"]]) for arm in data["arms"]),
            targeting=None if data.get("targeting") is None else parse_rule(data["targeting"]),
            guardrails=tuple(Guardrail.from_json(g) for g in data.get("guardrails", ())),
            control=data.get("control"),
        )


def archived_message(experiment_id: str) -> str:
    """What a request that needs a live experiment is told about an archived one (404)."""
    return (f"experiment {experiment_id!r} is archived: it serves no decisions and takes no "
            f"changes until it is unarchived (POST /v1/experiments/{experiment_id}/unarchive)")


def check_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise InvalidValue(
            f"{what}: {value!r} does not match the pattern [a-z0-9][a-z0-9_.-]{{0,63}}"
        )
    return value


def number(value: object, what: str, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> float:
    """A finite JSON number (not a bool) within the given bounds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidValue(f"{what}: expected a number, got {_describe(value)}")
    result = float(value)
    if not math.isfinite(result):
        raise InvalidValue(f"{what}: must be finite, got {value!r}")
    if low is not None and (result < low or (low_open and result == low)):
        raise InvalidValue(f"{what}: must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (result > high or (high_open and result == high)):
        raise InvalidValue(f"{what}: must be {'<' if high_open else '<='} {high}, got {value!r}")
    return result


def integer(value: object, what: str, *, low: int, high: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON has one number type: 3.0 is the integer 3 (as JSON Schema says)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue(f"{what}: expected an integer, got {_describe(value)}")
    if not low <= value <= high:
        raise InvalidValue(f"{what}: must be between {low} and {high}, got {value}")
    return value


def mapping(value: object, what: str, allowed: set[str]) -> dict[str, Any]:
    return object_fields(value, what, allowed, _describe)


def _describe(value: object) -> str:
    if value is None:
        return "null"
    return f"{type(value).__name__} {value!r}"[:80]


def parse_arm_list(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InvalidValue(f"{what}: expected a list of arm ids, got {_describe(value)}")
    arms = tuple(check_id(arm, f"{what}[{i}]") for i, arm in enumerate(value))
    duplicates = sorted({arm for arm in arms if arms.count(arm) > 1}) if len(set(arms)) < len(
        arms
    ) else []
    if duplicates:
        raise InvalidValue(f"{what}: duplicate arm ids {duplicates}")
    return arms


def parse_prior(reward: Reward, value: object) -> dict[str, float]:
    defaults = BERNOULLI_PRIOR if reward == "bernoulli" else GAUSSIAN_PRIOR
    if value is None:
        return dict(defaults)
    given = mapping(value, "prior", set(defaults))
    prior = dict(defaults)
    for name, raw in given.items():
        if name == "mean":
            prior[name] = number(raw, "prior.mean", low=-MAX_ABS_REWARD, high=MAX_ABS_REWARD)
        else:
            low = MIN_GAUSSIAN_ALPHA if (reward, name) == ("gaussian", "alpha") \
                else MIN_PRIOR_PARAMETER
            prior[name] = number(raw, f"prior.{name}", low=low, high=MAX_PRIOR_PARAMETER)
    return prior


def parse_exploration(value: object, base: Exploration) -> Exploration:
    """Apply a (possibly partial) exploration object onto ``base``; checks each value alone."""
    given = mapping(value, "exploration", set(SETTINGS_BY_NAME))
    changes: dict[str, Any] = {}
    for name, raw in given.items():
        setting = SETTINGS_BY_NAME[name]
        what = f"exploration.{name}"
        if raw is None and setting.null is not None:
            changes[name] = None
        elif setting.kind == "integer":
            changes[name] = integer(raw, what, low=int(setting.low), high=int(setting.high))
        elif setting.kind == "number":
            changes[name] = number(raw, what, low=setting.low, high=setting.high,
                                   low_open=setting.low_open, high_open=setting.high_open)
        else:  # control: the share's bounds are the setting's
            control = mapping(raw, what, {"arm", "share"})
            if set(control) != {"arm", "share"}:
                raise InvalidValue(f"{what}: needs both 'arm' and 'share'")
            changes[name] = Control(
                arm=check_id(control["arm"], f"{what}.arm"),
                share=number(control["share"], f"{what}.share", low=setting.low,
                             high=setting.high, low_open=setting.low_open,
                             high_open=setting.high_open),
            )
    return replace(base, **changes)


def check_consistent(experiment: Experiment) -> None:
    """Rules that involve several settings and the arms; raised before anything is stored."""
    exploration = experiment.exploration
    active = experiment.active_arms
    if not active:
        raise InvalidValue("arms: at least one arm must stay active")
    _check_policy(experiment)
    _check_guardrails(experiment)
    control_share = 0.0
    bandit_arms = len(active)
    if exploration.control is not None:
        control = exploration.control
        if experiment.arm_index(control.arm) is None:
            raise InvalidValue(f"exploration.control.arm: {control.arm!r} is not an arm")
        if control.arm in experiment.paused:
            raise InvalidValue(
                f"exploration.control: the control arm {control.arm!r} holds a fixed share "
                f"({control.share:g}) of the traffic, so it must stay active (a paused arm gets "
                f"none): resume it, or set exploration.control to null or to another arm "
                f"before pausing it")
        control_share = control.share
        bandit_arms -= 1
        if bandit_arms < 1:
            raise InvalidValue("exploration.control: no active arm is left besides the control")
    if exploration.min_share > exploration.max_share:
        raise InvalidValue(
            f"exploration: min_share {exploration.min_share} is above max_share "
            f"{exploration.max_share}"
        )
    free = 1.0 - control_share
    # With guardrails the control races with the other arms for the rest (it is where the
    # traffic of arms that break one goes), so its floor counts too.
    floored = len(active) if experiment.guardrails else bandit_arms
    if exploration.min_share * floored > free + 1e-12:
        raise InvalidValue(
            f"exploration.min_share: {exploration.min_share} * {floored} active arms > "
            f"{free:g} (the share left after the control"
            + ("; with guardrails the control races too" if floored > bandit_arms else "")
            + ")"
        )
    if exploration.max_share * bandit_arms < free - 1e-12:
        raise InvalidValue(
            f"exploration.max_share: {exploration.max_share} * {bandit_arms} active arms < "
            f"{free:g}: the caps cannot add up to the traffic"
        )


def _check_policy(experiment: Experiment) -> None:
    """A fixed experiment has a weight for every arm, some on an active arm, and none of the
    bandit's settings; a bandit has no weights."""
    if experiment.policy != "fixed":
        if experiment.weights is not None:
            raise InvalidValue('weights: only for "policy": "fixed" (a bandit\'s allocation '
                               "follows its posteriors)")
        return
    weights = experiment.weights
    if weights is None or len(weights) != len(experiment.arms):
        named = set() if weights is None else set(experiment.arms[:len(weights)])
        missing = [arm for arm in experiment.arms if arm not in named]
        raise InvalidValue(f"weights: a fixed experiment needs a weight for every arm; missing "
                           f"{missing}")
    if not any(w > 0 for arm, w in zip(experiment.arms, weights, strict=True)
               if arm not in experiment.paused):
        raise InvalidValue("weights: every active arm has weight 0: no traffic would be served")
    if experiment.model is not None:
        raise InvalidValue('model: a fixed experiment serves its weights whatever the context; '
                           'a contextual experiment is "policy": "thompson"')
    if experiment.exploration != Exploration():
        raise InvalidValue('exploration: a fixed experiment\'s allocation is its weights; '
                           "the exploration settings are the bandit's")
    if experiment.guardrails:
        raise InvalidValue('guardrails: a fixed experiment\'s allocation is its weights, which '
                           'guardrails cannot change; they are for "policy": "thompson"')


def parse_weights(value: object, arms: tuple[str, ...],
                  base: tuple[float, ...] | None = None) -> tuple[float, ...]:
    """A fixed experiment's weights, ``{arm: weight}`` (relative, >= 0), onto ``base`` (the
    current weights, for a PATCH): every arm must end with one."""
    if not isinstance(value, dict):
        raise InvalidValue(f"weights: expected an object {{arm: weight}}, got "
                           f"{_describe(value)}")
    unknown = sorted(set(value) - set(arms))
    if unknown:
        raise InvalidValue(f"weights: {unknown[0]!r} is not an arm of the experiment")
    given: dict[str, Any] = value
    current = dict(zip(arms, base or (), strict=False))
    for arm, raw in given.items():
        current[arm] = number(raw, f"weights.{arm}", low=0.0, high=MAX_WEIGHT)
    missing = [arm for arm in arms if arm not in current]
    if missing:
        raise InvalidValue(f"weights: a fixed experiment needs a weight for every arm; missing "
                           f"{missing}")
    return tuple(current[arm] for arm in arms)


def parse_guardrails(value: object) -> tuple[Guardrail, ...]:
    """``[{metric, kind, direction, threshold: {"relative": r} | {"absolute": x}}, ...]``,
    each field checked alone; ``_check_guardrails`` checks them against the experiment."""
    if not isinstance(value, list) or len(value) > MAX_GUARDRAILS:
        raise InvalidValue(f"guardrails: expected a list of at most {MAX_GUARDRAILS}, got "
                           f"{_describe(value)}")
    parsed: list[Guardrail] = []
    for i, item in enumerate(value):
        where = f"guardrails[{i}]"
        data = mapping(item, where, {"metric", "kind", "direction", "threshold"})
        for required in ("metric", "kind", "direction", "threshold"):
            if required not in data:
                raise InvalidValue(f"{where}.{required}: required")
        metric = check_id(data["metric"], f"{where}.metric")
        if metric == PRIMARY:
            raise InvalidValue(f"{where}.metric: {PRIMARY!r} is the primary metric (the "
                               "reward), not a guardrail")
        kind = data["kind"]
        if kind not in REWARDS:
            raise InvalidValue(f"{where}.kind: must be one of {list(REWARDS)}, got "
                               f"{_describe(kind)}")
        direction = data["direction"]
        if direction not in ("higher", "lower"):
            raise InvalidValue(f"{where}.direction: 'higher' or 'lower' (which is better), got "
                               f"{_describe(direction)}")
        threshold = mapping(data["threshold"], f"{where}.threshold", {"relative", "absolute"})
        if len(threshold) != 1:
            raise InvalidValue(f"{where}.threshold: exactly one of 'relative' (a change "
                               "against the control, -0.02 for 2% worse) or 'absolute'")
        [(which, raw)] = threshold.items()
        if which == "relative":
            level = number(raw, f"{where}.threshold.relative", low=-1.0, high=10.0)
        elif kind == "bernoulli":
            level = number(raw, f"{where}.threshold.absolute", low=0.0, high=1.0)
        else:
            level = number(raw, f"{where}.threshold.absolute", low=-MAX_ABS_REWARD,
                           high=MAX_ABS_REWARD)
        earlier = next((g for g in parsed if g.metric == metric), None)
        if earlier is not None:
            raise InvalidValue(
                f"{where}.metric: {metric!r} is already guarded"
                + (" with the other direction: contradictory directions"
                   if earlier.direction != direction else "")
                + (f" as {earlier.kind}" if earlier.kind != kind else ""))
        parsed.append(Guardrail(metric, kind, direction, level, which == "relative"))
    return tuple(parsed)


def _check_guardrails(experiment: Experiment) -> None:
    if experiment.control is not None:
        if experiment.arm_index(experiment.control) is None:
            raise InvalidValue(f"control: {experiment.control!r} is not an arm")
        if experiment.exploration.control is not None \
                and experiment.exploration.control.arm != experiment.control:
            raise InvalidValue(f"control: {experiment.control!r} is not "
                               f"exploration.control.arm ({experiment.exploration.control.arm!r})"
                               ": an experiment has one control")
    control = experiment.control_arm
    if experiment.guardrails and control is not None and control in experiment.paused:
        raise InvalidValue(f"arms: the control {control!r} must stay active while the "
                           "experiment has guardrails: it is the arm every guardrail "
                           "allows, where the traffic of the arms that break one goes")
    if experiment.exploration.gate_min_samples is not None and not experiment.guardrails:
        raise InvalidValue("exploration.gate_min_samples: the hard gate holds arms that "
                           "violate guardrails, and the experiment has none")
    relative = [g.metric for g in experiment.guardrails if g.relative]
    if relative and experiment.control_arm is None:
        raise InvalidValue(f"guardrails: {relative[0]!r} has a threshold relative to the "
                           "control, and the experiment has no control arm (set `control`, "
                           "or exploration.control)")


def parse_targeting(value: object) -> Rule | None:
    return None if value is None else parse_rule(value)


def parse_text(value: object, what: str, max_length: int) -> str | None:
    """Free text for people (null or a string): tabs and newlines are kept, other control
    characters refused, surrounding blanks trimmed; an empty string clears it (null)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidValue(f"{what}: expected a string or null, got {_describe(value)}")
    if _CONTROL_CHARACTERS.search(value):
        raise InvalidValue(f"{what}: control characters and bidirectional overrides are not "
                           "allowed (tab and newline are)")
    text = value.strip()
    if len(text) > max_length:
        raise InvalidValue(f"{what}: at most {max_length} characters, got {len(text)}")
    return text or None


def parse_tags(value: object) -> tuple[str, ...]:
    """Distinct tags, sorted (a set: reordering them changes nothing): lower case, digits and
    ``_.:/-``, 1 to 64 characters, starting with a letter or a digit."""
    if not isinstance(value, list):
        raise InvalidValue(f"tags: expected a list of strings, got {_describe(value)}")
    if len(value) > MAX_TAGS:
        raise InvalidValue(f"tags: at most {MAX_TAGS} tags, got {len(value)}")
    for i, tag in enumerate(value):
        if not isinstance(tag, str) or not TAG_PATTERN.fullmatch(tag):
            raise InvalidValue(f"tags[{i}]: {_describe(tag)} does not match the pattern "
                               f"[a-z0-9][a-z0-9_.:/-]{{0,63}}")
    return tuple(sorted(set(value)))


METADATA_FIELDS = ("owner", "hypothesis", "tags")


def parse_metadata(data: dict[str, Any]) -> dict[str, Any]:
    """The metadata fields present in a create or PATCH body, validated."""
    parsed: dict[str, Any] = {}
    if "owner" in data:
        parsed["owner"] = parse_text(data["owner"], "owner", MAX_OWNER_LENGTH)
    if "hypothesis" in data:
        parsed["hypothesis"] = parse_text(data["hypothesis"], "hypothesis",
                                          MAX_HYPOTHESIS_LENGTH)
    if "tags" in data:
        parsed["tags"] = () if data["tags"] is None else parse_tags(data["tags"])
    return parsed


_CREATE_FIELDS = {"id", "arms", "reward", "prior", "exploration", "attribution_window_s",
                  "model", "policy", "weights", "targeting", "guardrails", "control",
                  *METADATA_FIELDS}


def parse_new_experiment(body: object, now: float) -> Experiment:
    data = mapping(body, "body", _CREATE_FIELDS)
    for required in ("id", "arms", "reward"):
        if required not in data:
            raise InvalidValue(f"{required}: required")
    experiment_id = check_id(data["id"], "id")
    arms = parse_arm_list(data["arms"], "arms")
    if not MIN_ARMS <= len(arms) <= MAX_ARMS:
        raise InvalidValue(f"arms: need {MIN_ARMS} to {MAX_ARMS} arms, got {len(arms)}")
    reward = data["reward"]
    if reward not in REWARDS:
        raise InvalidValue(f"reward: must be one of {list(REWARDS)}, got {reward!r}")
    window = number(data.get("attribution_window_s", DEFAULT_ATTRIBUTION_WINDOW_S),
                    "attribution_window_s", low=1.0, high=90 * 86_400.0)
    model = None
    if data.get("model") is not None:
        model = parse_model(data["model"], reward)
        if data.get("prior") is not None:
            raise InvalidValue("prior: a contextual experiment's prior is model.prior "
                               "(precision, intercept_precision, alpha, beta)")
    policy = data.get("policy", "thompson")
    if policy not in POLICIES:
        raise InvalidValue(f"policy: must be one of {list(POLICIES)}, got {_describe(policy)}")
    weights = None
    if policy == "fixed":
        if "weights" not in data:
            raise InvalidValue('weights: required for "policy": "fixed" ({arm: weight, ...})')
        weights = parse_weights(data["weights"], arms)
    elif data.get("weights") is not None:
        raise InvalidValue('weights: only for "policy": "fixed" (a bandit\'s allocation '
                           "follows its posteriors)")
    experiment = Experiment(
        id=experiment_id,
        arms=arms,
        reward=reward,
        prior=parse_prior(reward, data.get("prior")),
        exploration=parse_exploration(data.get("exploration", {}), Exploration()),
        attribution_window_s=window,
        created_at=now,
        updated_at=now,
        model=model,
        policy=policy,
        weights=weights,
        targeting=parse_targeting(data.get("targeting")),
        guardrails=parse_guardrails(data.get("guardrails", [])),
        control=None if data.get("control") is None else check_id(data["control"], "control"),
        **parse_metadata(data),
    )
    check_consistent(experiment)
    return experiment
