"""The service and the store against a model: a hypothesis state machine on a real redis-server.

Two in-process "service processes" (a ``BanditService`` and its ``RedisStore`` each) share the
tests' Redis. Rules create experiments, allocate (n decisions, slates, sticky units, provisional
decisions, a few requests at once in one process), send batches of reward events (fresh ones,
exact resends, events carrying decision ids, conversions of provisional decisions, bad ones),
patch settings (valid and invalid), pause, resume and add arms, archive, tick a process's cache
poller, and restart a process (a new service and store on the same Redis: every in-process
cache lost). A plain Python model predicts every answer, and after every step Redis is compared
with it: observation counts, posterior sums, versions, configurations, the audit log.

The machine runs on an event loop it owns (the service is async); the background tasks of
``bandit.api.app`` are not started: the poller's tick is a rule, so runs are deterministic.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from bandit import policy
from bandit.errors import BanditError, Conflict, InvalidValue, NotFound
from bandit.serving.service import BanditService
from bandit.settings import Settings
from bandit.store.redis_store import RedisStore

T = TypeVar("T")


def choose(data: st.DataObject, items: Sequence[T], label: str) -> T | None:
    """One of items (None when there are none), drawn the same way whatever their number.

    What the service served (decision ids, their arms, the sticky units it assigned) can
    differ between two runs of the same example: the shares it drew with depend on when
    its cache refreshed. Hypothesis replays an example by its draws and rejects one whose
    draws changed shape (FlakyStrategyDefinition), so a choice among those things is an
    index taken modulo their number, drawn whether or not there are any, never a
    sampled_from over them or a draw made only when the list is not empty.
    """
    index = data.draw(st.integers(0, 63), label=label)
    return items[index % len(items)] if items else None

PREFIX = "machine"
PROCESSES = 2
EXPERIMENT_IDS = ("e0", "e1", "e2")
UNITS = ("u0", "u1", "u2")
UNKNOWN = "zz"  # a well-formed id that names no experiment and no arm

DEFAULT_EXPLORATION: dict[str, Any] = {
    "epsilon": 0.0, "min_share": 0.0, "max_share": 1.0, "temperature": 1.0,
    "half_life_s": None, "warmup": 0, "top_two": None, "control": None,
    "gate_min_samples": None,
}
# Values a patch draws from: in range, and (BAD_SETTINGS) out of range. Whether a patch is valid
# is for the model to say: in-range values can still be inconsistent together (floors, caps).
# half_life_s 1e9 turns forgetting on without changing any sum by more than about 1e-7.
SETTING_VALUES: dict[str, list[Any]] = {
    "epsilon": [0.0, 0.1, 0.5, 1.0],
    "min_share": [0.0, 0.05, 0.1, 0.2, 0.34, 0.5],
    "max_share": [1.0, 0.8, 0.5, 0.4, 0.3],
    "temperature": [0.5, 1.0, 2.0],
    "half_life_s": [None, 1e9],
    "warmup": [0, 2, 5],
    "top_two": [None, 0.5],
}
BAD_SETTINGS: list[tuple[str, Any]] = [
    ("epsilon", 1.5), ("epsilon", -0.1), ("max_share", 0.0), ("temperature", 0.0),
    ("half_life_s", 0.5), ("warmup", -1), ("warmup", 1.5), ("top_two", 1.0), ("bogus", 1),
    ("control", {"arm": UNKNOWN, "share": 0.1}), ("epsilon", "0.1"),
]
BERNOULLI_REWARDS = [0, 1, 0.0, 1.0, 0.5, 0.25]
CONVERSION_REWARDS = [1, 1.0, 0.5, 0]


# -- the model ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    arms: tuple[str, ...]
    paused: frozenset[str]
    exploration: dict[str, Any]
    archived: bool = False

    def flat(self) -> dict[str, Any]:
        """The keys of an audit entry's ``changes`` that patches and archiving can touch."""
        flat: dict[str, Any] = {f"exploration.{k}": v for k, v in self.exploration.items()}
        flat.update({f"arms.{arm}": "paused" if arm in self.paused else "active"
                     for arm in self.arms})
        flat["status"] = "archived" if self.archived else "active"
        return flat


def changes(old: Config, new: Config) -> dict[str, dict[str, Any]]:
    before, after = old.flat(), new.flat()
    return {key: {"old": before.get(key), "new": after.get(key)}
            for key in sorted(before.keys() | after.keys()) if before.get(key) != after.get(key)}


@dataclass(frozen=True)
class Decision:
    experiment: str
    arms: tuple[str, ...]
    kind: str  # "single", "slate" or "provisional"


@dataclass
class ArmModel:
    #: Raw observations: distinct accepted (non-conversion) events, plus provisional decisions.
    n: int = 0
    successes: float = 0.0
    failures: float = 0.0
    rewards: list[float] = field(default_factory=list)  # gaussian


@dataclass
class ExperimentModel:
    id: str
    reward: str
    configs: list[Config]  # configs[v - 1] is version v
    audit: list[tuple[str, dict[str, Any] | None]]  # (action, changes; None: not checked)
    arms: dict[str, ArmModel]
    seen: set[str] = field(default_factory=set)  # accepted event ids (dedup is per experiment)
    decisions: list[str] = field(default_factory=list)  # ids of decisions served
    #: Provisional decisions recorded (each counted a failure when served): id -> arm.
    provisional: dict[str, str] = field(default_factory=dict)
    converted: set[str] = field(default_factory=set)
    rewarded: set[tuple[str, str]] = field(default_factory=set)  # (decision id, arm)
    served: Counter[str] = field(default_factory=Counter)
    sticky: dict[tuple[str, int | None], tuple[tuple[str, ...], float]] = field(
        default_factory=dict)
    #: Forgetting was on at some point: posterior sums are then compared approximately.
    forgetting: bool = False

    @property
    def config(self) -> Config:
        return self.configs[-1]

    @property
    def version(self) -> int:
        return len(self.configs)

    @property
    def archived(self) -> bool:
        return self.config.archived


def _in_range(name: str, value: Any) -> bool:
    """Is ``value`` a valid exploration setting ``name`` (bandit.model.EXPLORATION_SETTINGS)."""
    if name in ("half_life_s", "top_two") and value is None:
        return True
    if name == "warmup":
        return type(value) is int and 0 <= value <= 1_000_000
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    low, high, low_open, high_open = {
        "epsilon": (0.0, 1.0, False, False), "min_share": (0.0, 1.0, False, False),
        "max_share": (0.0, 1.0, True, False), "temperature": (0.01, 100.0, False, False),
        "half_life_s": (1.0, 1e10, False, False), "top_two": (0.0, 1.0, True, True),
    }[name]
    return (low < value if low_open else low <= value) and (
        value < high if high_open else value <= high)


def patched(config: Config, body: dict[str, Any]) -> Config | None:
    """The configuration a PATCH body gives, or None when the service must refuse it (422)."""
    if not body.keys() <= {"version", "exploration", "arms", "reason"}:
        return None
    if type(body.get("version")) is not int:
        return None
    exploration = dict(config.exploration)
    for name, value in body.get("exploration", {}).items():
        if name == "control":
            if value is not None and not (
                    value.keys() == {"arm", "share"} and 0 < value["share"] < 1):
                return None
        elif name not in SETTING_VALUES or not _in_range(name, value):  # bogus, bad values
            return None
        exploration[name] = value
    arms, paused = list(config.arms), set(config.paused)
    changes_to_arms = body.get("arms", {})
    added = changes_to_arms.get("add", [])
    if any(arm in arms for arm in added):
        return None
    arms += added
    for action in ("pause", "resume"):
        named = changes_to_arms.get(action, [])
        if any(arm not in arms for arm in named):
            return None
        if action == "pause":
            paused.update(named)
        else:
            paused.difference_update(named)
    active = [arm for arm in arms if arm not in paused]
    if not active:
        return None
    free, bandit_arms = 1.0, len(active)
    control = exploration["control"]
    if control is not None:
        if control["arm"] not in active:
            return None
        free, bandit_arms = 1.0 - control["share"], bandit_arms - 1
        if bandit_arms < 1:
            return None
    if exploration["min_share"] > exploration["max_share"]:
        return None
    # Values are at least 0.01 away from a boundary or on it up to rounding: 1e-9 tells them apart.
    if exploration["min_share"] * bandit_arms > free + 1e-9:
        return None
    if exploration["max_share"] * bandit_arms < free - 1e-9:
        return None
    return Config(tuple(arms), frozenset(paused), exploration)


# -- the machine -------------------------------------------------------------------------------


class BanditMachine(RuleBasedStateMachine):
    def __init__(self, redis_url: str) -> None:
        super().__init__()
        with redis.Redis.from_url(redis_url) as client:
            client.flushall()  # the tests' own server (conftest's redis_server): a clean run
        self.loop = asyncio.new_event_loop()
        self.settings = Settings(redis_url=redis_url, key_prefix=PREFIX)
        self.starts = 0
        self.stores: list[RedisStore] = []
        self.services: list[BanditService] = []
        for _ in range(PROCESSES):
            store, service = self._start_process()
            self.stores.append(store)
            self.services.append(service)
        self.checker = self._store()
        self.experiments: dict[str, ExperimentModel] = {}
        # Per process: experiments whose current version it must serve (it made the last
        # change, its poller ticked since, or it restarted since), and the last version served.
        self.current: list[set[str]] = [set() for _ in range(PROCESSES)]
        self.last_version: list[dict[str, int]] = [{} for _ in range(PROCESSES)]
        self.decisions: dict[str, Decision] = {}  # every decision served, by id
        self.sent: list[dict[str, Any]] = []  # every event body sent, for exact resends
        self.accepted_ids: list[str] = []
        self.units = list(UNITS)
        self.counter = 0

    # -- plumbing

    def _store(self) -> RedisStore:
        assert self.settings.redis_url is not None
        return RedisStore.from_url(self.settings.redis_url, PREFIX, timeout_s=10,
                                   max_connections=8)

    def _start_process(self) -> tuple[RedisStore, BanditService]:
        self.starts += 1
        store = self._store()
        return store, BanditService(store, self.settings, seed=self.starts)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def attempt(self, coroutine: Coroutine[Any, Any, T]) -> T | BanditError:
        """The result, or the service's error (any other exception fails the test)."""
        try:
            return self.run(coroutine)
        except BanditError as error:
            return error

    def fresh_id(self, kind: str) -> str:
        self.counter += 1
        return f"{kind}{self.counter}"

    def changed(self, experiment_id: str, process: int) -> None:
        for other in range(PROCESSES):
            if other == process:
                self.current[other].add(experiment_id)
            else:
                self.current[other].discard(experiment_id)

    def teardown(self) -> None:
        async def close() -> None:
            for store in self.stores:
                await store.close()
            await self.checker.close()

        try:
            self.run(close())
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
        finally:
            self.loop.close()

    def has_experiments(self) -> bool:
        return bool(self.experiments)

    def pick(self, data: st.DataObject) -> tuple[int, ExperimentModel]:
        process = data.draw(st.integers(0, PROCESSES - 1), label="process")
        experiment_id = data.draw(st.sampled_from(sorted(self.experiments)), label="experiment")
        return process, self.experiments[experiment_id]

    # -- experiments

    @rule(data=st.data(), experiment_id=st.sampled_from(EXPERIMENT_IDS),
          reward=st.sampled_from(["bernoulli", "gaussian"]), arms=st.integers(2, 5),
          exploration=st.sampled_from([{}, {"epsilon": 0.1}, {"min_share": 0.05}]),
          valid=st.booleans())
    def create(self, data: st.DataObject, experiment_id: str, reward: str, arms: int,
               exploration: dict[str, Any], valid: bool) -> None:
        process = data.draw(st.integers(0, PROCESSES - 1), label="process")
        names = [f"a{i}" for i in range(arms)] if valid else ["a0", "a0"]
        body = {"id": experiment_id, "arms": names, "reward": reward, "exploration": exploration}
        outcome = self.attempt(self.services[process].create_experiment(body))
        if not valid or experiment_id in self.experiments:
            expected: tuple[type[BanditError], ...] = (InvalidValue if not valid else Conflict,)
            if not valid and experiment_id in self.experiments:
                expected = (InvalidValue, Conflict)  # both apply: either answer is right
            assert isinstance(outcome, expected), outcome
            return
        assert not isinstance(outcome, BanditError), outcome
        assert outcome["version"] == 1
        config = Config(tuple(names), frozenset(), {**DEFAULT_EXPLORATION, **exploration})
        self.experiments[experiment_id] = ExperimentModel(
            experiment_id, reward, [config], [("create", None)],
            {name: ArmModel() for name in names})
        for current in self.current:
            current.add(experiment_id)  # nobody has it cached: any process reads it afresh

    @precondition(has_experiments)
    @rule(data=st.data())
    def patch(self, data: st.DataObject) -> None:
        process, model = self.pick(data)
        body = self._draw_patch(data, model)
        outcome = self.attempt(self.services[process].patch(model.id, body))
        new = patched(model.config, body)
        refusals: set[type[BanditError]] = set()
        if model.archived:  # an archived experiment takes no changes until unarchived
            refusals.add(NotFound)
        elif new is None:
            refusals.add(InvalidValue)
        version = body.get("version")
        if type(version) is int and version != model.version:
            refusals.add(Conflict)
        if refusals:
            # Both kinds may apply (a stale version and a bad value): either answer is right.
            # Nothing may change: the invariants compare version, config and audit with Redis.
            assert type(outcome) in refusals, (outcome, body)
            return
        assert new is not None
        assert not isinstance(outcome, BanditError), (outcome, body)
        expected = changes(model.config, new)
        assert outcome["changes"] == expected
        if not expected:  # a change that changes nothing: no new version, nothing audited
            assert (outcome["version"], outcome["changed"]) == (model.version, False)
            return
        assert (outcome["version"], outcome["changed"]) == (model.version + 1, True)
        model.configs.append(new)
        model.audit.append(("update", expected))
        model.forgetting = model.forgetting or new.exploration["half_life_s"] is not None
        for arm in new.arms:
            model.arms.setdefault(arm, ArmModel())
        self.changed(model.id, process)

    def _draw_patch(self, data: st.DataObject, model: ExperimentModel) -> dict[str, Any]:
        config = model.config
        arms = list(config.arms)
        version = data.draw(st.sampled_from(["current"] * 6 + ["stale", "missing", "text"]),
                            label="version")
        body: dict[str, Any] = {}
        if version == "current":
            body["version"] = model.version
        elif version == "stale":
            body["version"] = data.draw(st.integers(1, model.version + 1).filter(
                lambda v: v != model.version))
        elif version == "text":
            body["version"] = str(model.version)
        controls: list[Any] = [None]
        controls += [{"arm": arm, "share": share} for arm in arms for share in (0.1, 0.3, 1.0)]
        values: dict[str, list[Any]] = {**SETTING_VALUES, "control": controls}
        names = data.draw(st.lists(st.sampled_from(sorted(values)), max_size=2, unique=True),
                          label="settings")
        exploration = {name: data.draw(st.sampled_from(values[name]), label=name)
                       for name in names}
        if data.draw(st.integers(0, 3)) == 0:
            name, value = data.draw(st.sampled_from(BAD_SETTINGS), label="bad setting")
            exploration[name] = value
        send_empty: bool = data.draw(st.booleans())
        if exploration or send_empty:
            body["exploration"] = exploration
        new_arm = self.fresh_id("x")
        pause = st.lists(st.sampled_from([*arms, *arms, UNKNOWN]), max_size=2, unique=True)
        arm_changes = data.draw(st.fixed_dictionaries({}, optional={
            "add": st.sampled_from([[new_arm], [new_arm], [arms[0]]]), "pause": pause}),
            label="arms")
        resumable = [arm for arm in arms if arm not in arm_changes.get("pause", [])]
        resume: bool = data.draw(st.booleans())
        if resumable and resume:
            arm_changes["resume"] = data.draw(st.lists(st.sampled_from(resumable), min_size=1,
                                                       max_size=2, unique=True))
        if arm_changes:
            body["arms"] = arm_changes
        if data.draw(st.booleans()):
            body["reason"] = "machine"
        if data.draw(st.integers(0, 15)) == 0:
            body["bogus"] = True
        return body

    @precondition(has_experiments)
    @rule(data=st.data())
    def archive(self, data: st.DataObject) -> None:
        process, model = self.pick(data)
        outcome = self.attempt(self.services[process].archive(model.id))
        assert not isinstance(outcome, BanditError), outcome
        assert outcome["status"] == "archived"
        if model.archived:  # archiving twice changes nothing
            assert outcome["version"] == model.version
            return
        assert outcome["version"] == model.version + 1
        new = Config(model.config.arms, model.config.paused, model.config.exploration, True)
        model.audit.append(("archive", changes(model.config, new)))
        model.configs.append(new)
        self.changed(model.id, process)

    @precondition(has_experiments)
    @rule(data=st.data())
    def unarchive(self, data: st.DataObject) -> None:
        process, model = self.pick(data)
        outcome = self.attempt(self.services[process].unarchive(model.id))
        assert not isinstance(outcome, BanditError), outcome
        assert outcome["status"] == "active"
        if not model.archived:  # unarchiving an active experiment changes nothing
            assert (outcome["version"], outcome["changed"]) == (model.version, False)
            return
        assert (outcome["version"], outcome["changed"]) == (model.version + 1, True)
        new = Config(model.config.arms, model.config.paused, model.config.exploration, False)
        model.audit.append(("unarchive", changes(model.config, new)))
        model.configs.append(new)
        self.changed(model.id, process)

    # -- decisions

    @precondition(has_experiments)
    @rule(data=st.data(), mode=st.sampled_from(["plain", "slate", "sticky", "sticky slate",
                                                "provisional"]),
          n=st.sampled_from([1, 1, 3, 300]))
    def allocate(self, data: st.DataObject, mode: str, n: int) -> None:
        process, model = self.pick(data)
        body: dict[str, Any] = {} if n == 1 else {"n": n}
        if "slate" in mode:
            body["k"] = data.draw(st.integers(1, 3), label="k")
        if "sticky" in mode:
            unit = data.draw(st.sampled_from([*self.units, "new"]), label="unit")
            if unit == "new":  # a unit never seen: its assignment is drawn now
                unit = self.fresh_id("u")
                self.units.append(unit)
            body.update(unit=unit, sticky=True)
        provisional = mode == "provisional" or (mode == "sticky" and data.draw(st.booleans()))
        if provisional:
            body["provisional"] = True
        self._allocate(process, model, body)

    def _allocate(self, process: int, model: ExperimentModel, body: dict[str, Any]) -> None:
        """Allocate and check the answer against the model (then record what was served)."""
        self._check_allocation(process, model, body,
                               self.attempt(self.services[process].allocate(model.id, body)))

    @precondition(has_experiments)
    @rule(data=st.data(), size=st.integers(2, 4))
    def concurrent_allocations(self, data: st.DataObject, size: int) -> None:
        """Requests that overlap in one process, as they do under load (e.g. just started)."""
        process, model = self.pick(data)

        async def together() -> list[dict[str, Any] | BaseException]:
            return await asyncio.gather(
                *(self.services[process].allocate(model.id, {}) for _ in range(size)),
                return_exceptions=True)

        for outcome in self.run(together()):
            if isinstance(outcome, BaseException) and not isinstance(outcome, BanditError):
                raise outcome
            self._check_allocation(process, model, {}, outcome)

    def _check_allocation(self, process: int, model: ExperimentModel, body: dict[str, Any],
                          outcome: dict[str, Any] | BanditError) -> None:
        n, k, unit = body.get("n", 1), body.get("k"), body.get("unit")
        provisional = body.get("provisional", False)
        not_servable = provisional and (model.reward != "bernoulli" or k is not None)
        if isinstance(outcome, BanditError):
            if isinstance(outcome, NotFound):
                # Archived; or unarchived since, on a process that has not caught up yet and
                # may still hold any version from the last one it served.
                seen = self.last_version[process].get(model.id, 1)
                assert model.archived or (model.id not in self.current[process] and any(
                    config.archived for config in model.configs[seen - 1:])), outcome
                return
            assert isinstance(outcome, InvalidValue), outcome
            if not not_servable:  # then k was more than the arms with a positive share
                shares = self._shares(process, model)
                assert k is not None and k > sum(share > 0 for share in shares.values())
            return
        assert not not_servable, body
        version = outcome["version"]
        assert self.last_version[process].get(model.id, 1) <= version <= model.version
        if model.id in self.current[process]:
            assert version == model.version, "a process served settings older than it knows"
        self.last_version[process][model.id] = version
        config = model.configs[version - 1]
        assert not config.archived, "decisions for an archived experiment"
        shares = self._shares(process, model, version)
        decisions = outcome["decisions"]
        assert len(decisions) == n
        ids = [decision["decision_id"] for decision in decisions]
        assert len(set(ids)) == n and not self.decisions.keys() & set(ids), "ids repeat"
        chosen = [tuple(d["arms"]) if k is not None else (d["arm"],) for d in decisions]
        for arms, decision in zip(chosen, decisions, strict=True):
            assert 0 < decision["propensity"] <= 1, decision
            assert all(arm in config.arms and arm not in config.paused for arm in arms), (
                arms, config)
            model.served.update(arms)
        if unit is not None:
            self._check_sticky(model, (unit, k), chosen, decisions, config, shares)
        else:
            self._check_fresh(chosen, decisions, shares, k)
        kind = "provisional" if provisional else "single" if k is None else "slate"
        for decision_id, arms in zip(ids, chosen, strict=True):
            self.decisions[decision_id] = Decision(model.id, arms, kind)
            model.decisions.append(decision_id)
            if provisional and not model.archived:  # counted as a failure until converted
                model.provisional[decision_id] = arms[0]
                model.arms[arms[0]].n += 1
                model.arms[arms[0]].failures += 1

    @precondition(has_experiments)  # not "has sticky units": what the service served
    @rule(data=st.data(), n=st.sampled_from([1, 2]))
    def allocate_sticky_again(self, data: st.DataObject, n: int) -> None:
        """A unit seen before comes back, to any process (perhaps restarted since)."""
        units = sorted(((model.id, unit, k) for model in self.experiments.values()
                        for unit, k in model.sticky), key=lambda item: (*item[:2], item[2] or 0))
        seen = choose(data, units, "sticky unit")
        process = data.draw(st.integers(0, PROCESSES - 1), label="process")
        if seen is None:
            return
        experiment_id, unit, k = seen
        body: dict[str, Any] = {"unit": unit, "sticky": True, "n": n}
        if k is not None:
            body["k"] = k
        self._allocate(process, self.experiments[experiment_id], body)

    @precondition(has_experiments)
    @rule(data=st.data(), body=st.sampled_from([
        {"n": 0}, {"n": 10_001}, {"k": 0}, {"sticky": True}, {"bogus": 1},
        {"provisional": "yes"}, {"n": 1.5}, {"unit": ""}, [],
    ]))
    def allocate_refused(self, data: st.DataObject, body: Any) -> None:
        """Bad requests get a 4xx and serve nothing (served_counts would see a count)."""
        process, model = self.pick(data)
        outcome = self.attempt(self.services[process].allocate(model.id, body))
        assert isinstance(outcome, InvalidValue), (outcome, body)
        outcome = self.attempt(self.services[process].allocate(UNKNOWN, {}))
        assert isinstance(outcome, NotFound), outcome

    def _shares(self, process: int, model: ExperimentModel,
                version: int | None = None) -> dict[str, float]:
        """The allocation probabilities the process serves with, from its stats endpoint."""
        stats = self.run(self.services[process].stats(model.id))
        if version is not None:
            assert stats["version"] == version  # the same snapshot as the allocation
        shares = {arm["arm"]: arm["share"] for arm in stats["arms"]}
        assert math.isclose(sum(shares.values()), 1.0, abs_tol=1e-9), shares
        config = model.configs[stats["version"] - 1]
        assert all(shares[arm] == 0 for arm in config.paused), shares
        return shares

    @staticmethod
    def _check_fresh(chosen: list[tuple[str, ...]], decisions: list[dict[str, Any]],
                     shares: dict[str, float], k: int | None) -> None:
        """Decisions drawn now: propensities are the shares the process serves with."""
        for arms, decision in zip(chosen, decisions, strict=True):
            if k is None:
                assert decision["propensity"] == shares[arms[0]], (decision, shares)
                continue
            assert len(set(arms)) == k
            used, product = 0.0, 1.0
            for arm, position in zip(arms, decision["position_propensities"], strict=True):
                assert 0 < position <= 1
                assert math.isclose(position, shares[arm] / max(1.0 - used, shares[arm]),
                                    rel_tol=1e-9), (decision, shares)
                used += shares[arm]
                product *= position
            assert math.isclose(decision["propensity"], product, rel_tol=1e-9)
        if k is None and len(decisions) >= 100:
            # Many decisions: each arm's count is a binomial(n, share) draw (6 sigma: the
            # service's generator is seeded, so this cannot flake, and it catches a wrong share).
            counts = Counter(arms[0] for arms in chosen)
            n = len(decisions)
            for arm, share in shares.items():
                assert abs(counts[arm] - n * share) <= 6 * math.sqrt(n * share * (1 - share)) + 1, (
                    counts, shares)

    def _check_sticky(self, model: ExperimentModel, key: tuple[str, int | None],
                      chosen: list[tuple[str, ...]], decisions: list[dict[str, Any]],
                      config: Config, shares: dict[str, float]) -> None:
        assigned = model.sticky.get(key)
        if assigned is None:  # a new unit: its assignment is drawn now and then kept
            assert len(set(chosen)) == 1
            assert len({d["propensity"] for d in decisions}) == 1
            self._check_fresh(chosen[:1], decisions[:1], shares, key[1])
            model.sticky[key] = (chosen[0], decisions[0]["propensity"])
            return
        arms, propensity = assigned
        # A process whose cache predates an arm the unit was given must read afresh.
        assert all(arm in config.arms for arm in arms), ("served without the unit's arm", arms)
        if all(shares[arm] > 0 for arm in arms):
            assert all(c == arms for c in chosen), ("a sticky unit changed arms", arms, chosen)
            assert all(d["propensity"] == propensity for d in decisions)
        else:
            # Its arm is paused: fresh decisions now, its own arm again once resumed.
            self._check_fresh(chosen, decisions, shares, key[1])

    # -- rewards

    @precondition(has_experiments)
    @rule(data=st.data(), size=st.integers(1, 6))
    def send_events(self, data: st.DataObject, size: int) -> None:
        process = data.draw(st.integers(0, PROCESSES - 1), label="process")
        batch: list[dict[str, Any]] = []
        for _ in range(size):
            event = self._draw_event(data)
            batch.append(event)
            self.sent.append(event)
        result = self.run(self.services[process].apply_events({"events": batch}))
        expected = [self._apply(event) for event in batch]
        assert result["accepted"] == expected.count("accepted"), (result, expected, batch)
        assert result["duplicates"] == expected.count("duplicate"), (result, expected, batch)
        assert [r["index"] for r in result["rejected"]] == [
            i for i, status in enumerate(expected) if status == "rejected"], (result, batch)

    def _draw_event(self, data: st.DataObject) -> dict[str, Any]:
        kind = data.draw(st.sampled_from(
            ["fresh", "fresh", "resend", "resend", "decision", "decision", "wrong arm",
             "foreign decision", "other experiment's id", "bad"]), label="event kind")
        resent = choose(data, self.sent, "resent")
        if kind == "resend" and resent is not None:
            return resent  # the same body again
        model = self.experiments[data.draw(st.sampled_from(sorted(self.experiments)))]
        event_id = self.fresh_id("ev")
        other_id = choose(data, self.accepted_ids, "other experiment's id")
        if kind == "other experiment's id" and other_id is not None:
            event_id = other_id if other_id not in model.seen else self.fresh_id("ev")
        if model.reward == "bernoulli":
            reward: Any = data.draw(st.sampled_from(BERNOULLI_REWARDS), label="reward")
        else:
            reward = data.draw(st.one_of(
                st.integers(-50, 50), st.floats(-1e3, 1e3, allow_nan=False)), label="reward")
        arm = data.draw(st.sampled_from(model.config.arms), label="arm")
        event: dict[str, Any] = {"id": event_id, "experiment": model.id, "arm": arm,
                                 "reward": reward}
        # Everything below that depends on what was served is drawn every time (see choose).
        decision_id = choose(data, model.decisions, "decision")
        decision = None if decision_id is None else self.decisions[decision_id]
        conversion = data.draw(st.sampled_from(CONVERSION_REWARDS), label="conversion")
        served_arm = choose(data, decision.arms if decision else (), "served arm")
        other_arm = choose(data, [a for a in model.config.arms
                                  if decision is None or a not in decision.arms], "other arm")
        foreign = choose(data, [d for d in self.decisions
                                if self.decisions[d].experiment != model.id], "foreign")
        if kind in ("decision", "wrong arm") and decision is not None:
            event["decision_id"] = decision_id
            if decision.kind == "provisional":
                event["reward"] = conversion
            if kind == "decision":
                event["arm"] = served_arm
            elif other_arm is not None:
                event["arm"] = other_arm  # an arm the decision (or slate) did not show
        elif kind == "foreign decision" and foreign is not None:
            event["decision_id"] = foreign
        elif kind == "bad":
            flaw = data.draw(st.sampled_from(["arm", "experiment", "id", "reward", "range",
                                              "decision"]))
            if flaw == "arm":
                event["arm"] = UNKNOWN
            elif flaw == "experiment":
                event["experiment"] = UNKNOWN
            elif flaw == "id":
                event["id"] = "has space"
            elif flaw == "reward":
                event["reward"] = "1"
            elif flaw == "decision":
                event["decision_id"] = "d" + "0" * 40  # well-formed, never served
            elif model.reward == "bernoulli":
                event["reward"] = 1.5
        if data.draw(st.booleans()):
            # Seconds ago: with forgetting on (half-life 1e9 s) it weighs 1 - 1e-8.
            event["ts"] = round(time.time()) - 5
        return event

    def _apply(self, event: dict[str, Any]) -> str:
        """The model's answer to one event, in batch order: accepted, duplicate or rejected."""
        reward = event["reward"]
        if " " in event["id"] or isinstance(reward, str):
            return "rejected"
        model = self.experiments.get(event["experiment"])
        if model is None or model.archived or event["arm"] not in model.config.arms:
            return "rejected"
        if model.reward == "bernoulli" and not 0 <= reward <= 1:
            return "rejected"
        arm = model.arms[event["arm"]]
        decision_id = event.get("decision_id")
        decision = None if decision_id is None else self.decisions.get(decision_id)
        if decision_id is not None:
            # Only a decision served for this experiment and arm (a slate: one of its arms).
            if decision is None or decision.experiment != model.id or (
                    event["arm"] not in decision.arms):
                return "rejected"
            if decision_id in model.converted:
                return "duplicate"  # a provisional decision converts once
            if decision.kind == "provisional" and decision_id not in model.provisional:
                # Served by a process that had not seen the archive yet: never recorded as
                # pending, so nothing converts, even after an unarchive.
                return "rejected"
        if event["id"] in model.seen:
            return "duplicate"
        converting = decision_id in model.provisional
        if decision_id is not None and not converting:
            if (decision_id, event["arm"]) in model.rewarded:
                return "rejected"  # one reward per decision and arm (another event id)
            model.rewarded.add((decision_id, event["arm"]))
        model.seen.add(event["id"])
        self.accepted_ids.append(event["id"])
        if converting:
            assert decision_id is not None
            model.converted.add(decision_id)  # its provisional failure becomes a success
            arm.successes += reward
            arm.failures -= reward
        elif model.reward == "bernoulli":
            arm.n += 1
            arm.successes += reward
            arm.failures += 1 - reward
        else:
            arm.n += 1
            arm.rewards.append(float(reward))
        return "accepted"

    # -- processes

    @rule(process=st.integers(0, PROCESSES - 1))
    def restart(self, process: int) -> None:
        """A new service process: every in-process cache lost (served counts flushed first)."""
        self.run(self.services[process].flush_served())
        self.run(self.stores[process].close())
        self.stores[process], self.services[process] = self._start_process()
        self.current[process] = set(self.experiments)
        self.last_version[process] = {}

    @rule(process=st.integers(0, PROCESSES - 1))
    def poller_tick(self, process: int) -> None:
        self.run(self.services[process].cache.refresh())
        self.current[process] = set(self.experiments)

    @precondition(has_experiments)
    @rule(data=st.data())
    def stats_after_a_tick(self, data: st.DataObject) -> None:
        process, model = self.pick(data)
        self.poller_tick(process)
        stats = self.run(self.services[process].stats(model.id))
        assert stats["version"] == model.version
        assert {a["arm"]: a["n"] for a in stats["arms"]} == {
            arm: model.arms[arm].n for arm in model.config.arms}
        if not model.archived:
            self._shares(process, model, model.version)

    @precondition(has_experiments)
    @rule()
    def served_counts(self) -> None:
        for service in self.services:
            self.run(service.flush_served())
        ids = sorted(self.experiments)
        for experiment_id, served in zip(ids, self.run(self.checker.served(ids)), strict=True):
            model = self.experiments[experiment_id]
            assert served == {model.config.arms.index(arm): count
                              for arm, count in model.served.items()}, (experiment_id, model.served)

    # -- invariants

    @invariant()
    def redis_matches_the_model(self) -> None:
        ids = self.run(self.checker.list_ids())
        assert ids == sorted(self.experiments)
        for state in self.run(self.checker.read_many(ids)):
            assert state is not None
            model = self.experiments[state.experiment.id]
            stored = state.experiment.to_json()
            config = model.config
            assert stored["version"] == model.version
            assert stored["status"] == ("archived" if config.archived else "active")
            assert stored["arms"] == [
                {"id": arm, "state": "paused" if arm in config.paused else "active"}
                for arm in config.arms]
            assert stored["exploration"] == config.exploration
            for index, arm in enumerate(config.arms):
                expected = model.arms[arm]
                assert state.counts[index] == expected.n, (model.id, arm, state.counts)
                self._check_sums(model, expected, state.stats[:, index])

    @staticmethod
    def _check_sums(model: ExperimentModel, expected: ArmModel, stats: Any) -> None:
        # Sums of multiples of 1/4 are exact in binary floating point; forgetting with a
        # half-life of 1e9 s moves them by about 1e-8 over a run.
        tolerance = 1e-6 if model.forgetting else 0.0
        if model.reward == "bernoulli":
            actual: tuple[float, ...] = (stats[0], stats[1])
            wanted: tuple[float, ...] = (expected.successes, expected.failures)
            for got, want in zip(actual, wanted, strict=True):
                assert math.isclose(got, want, rel_tol=tolerance, abs_tol=tolerance), (
                    model.id, actual, wanted)
            return
        rewards = expected.rewards
        weight, mean, m2 = stats[0], stats[1], stats[2]
        assert math.isclose(weight, len(rewards), rel_tol=tolerance), (weight, rewards)
        if rewards:
            average = sum(rewards) / len(rewards)
            assert math.isclose(mean, average, rel_tol=1e-6, abs_tol=1e-6), (mean, rewards)
            assert math.isclose(m2, sum((r - average) ** 2 for r in rewards),
                                rel_tol=1e-6, abs_tol=1e-4), (m2, rewards)

    @invariant()
    def audit_log_has_one_entry_per_change(self) -> None:
        for model in self.experiments.values():
            entries = self.run(self.checker.audit(model.id))
            assert entries is not None
            assert [entry["version"] for entry in entries] == list(range(1, model.version + 1))
            assert [entry["action"] for entry in entries] == [a for a, _ in model.audit]
            for entry, (_, expected) in zip(entries, model.audit, strict=True):
                if expected is not None:
                    assert entry["changes"] == expected, (entry, expected)


MACHINE = settings(max_examples=300, stateful_step_count=50, report_multiple_bugs=False,
                   suppress_health_check=[HealthCheck.too_slow])


# A passing run takes about 40 s; shrinking a failure to a short example can take minutes.
@pytest.mark.timeout(900)
def test_service_against_the_model(redis_url: str) -> None:
    policy.warm_up_kernels()  # numba's compile or cache load, once, outside the examples

    class Machine(BanditMachine):
        def __init__(self) -> None:
            super().__init__(redis_url)

    run_state_machine_as_test(Machine, settings=MACHINE)



# -- regressions: what the machine found, one short test each ------------------------------------
# (served counts inflated by sticky proposals; a sticky provisional decision counted twice; an
# IndexError on a stale process; a whole batch lost to a 404; a resend reported as rejected;
# one decision id for several decisions; a refused event's copy reported as a duplicate)


@pytest.fixture
async def two_processes(redis_url: str) -> AsyncIterator[list[BanditService]]:
    """Two services on one Redis, as two processes would be (no background tasks)."""
    settings = Settings(redis_url=redis_url, key_prefix=PREFIX)
    stores = [RedisStore.from_url(redis_url, PREFIX, timeout_s=10, max_connections=4)
              for _ in range(2)]
    yield [BanditService(store, settings, seed=i) for i, store in enumerate(stores)]
    for store in stores:
        await store.close()


async def test_a_new_sticky_unit_counts_one_served_decision(
        two_processes: list[BanditService]) -> None:
    service = two_processes[0]
    await service.create_experiment({"id": "e", "arms": ["a", "b"], "reward": "bernoulli"})
    await service.allocate("e", {"unit": "u", "sticky": True})
    await service.flush_served()
    [served] = await service.store.served(["e"])
    # One decision was served; the unit's proposal must not count as a second one.
    assert sum(served.values()) == 1


async def test_a_sticky_provisional_decision_converts_instead_of_counting_twice(
        two_processes: list[BanditService]) -> None:
    service = two_processes[0]
    await service.create_experiment({"id": "e", "arms": ["a", "b"], "reward": "bernoulli"})
    [decision] = (await service.allocate(
        "e", {"unit": "u", "sticky": True, "provisional": True}))["decisions"]
    result = await service.apply_events({"events": [
        {"id": "c1", "experiment": "e", "arm": decision["arm"], "reward": 1,
         "decision_id": decision["decision_id"]}]})
    assert result["accepted"] == 1
    state = await service.store.read("e")
    assert state is not None
    index = ["a", "b"].index(decision["arm"])
    # One decision: one observation, now a success (not a failure plus a success).
    assert (state.counts[index], state.stats[0, index], state.stats[1, index]) == (1, 1, 0)


async def test_sticky_unit_on_an_arm_another_process_added(
        two_processes: list[BanditService]) -> None:
    first, second = two_processes
    await first.create_experiment({"id": "e", "arms": ["a", "b"], "reward": "bernoulli"})
    await second.allocate("e", {})  # the second process caches the two-arm experiment
    await first.patch("e", {"version": 1, "arms": {"add": ["c"], "pause": ["a", "b"]}})
    [decision] = (await first.allocate("e", {"unit": "u", "sticky": True}))["decisions"]
    assert decision["arm"] == "c"
    # The second process has not polled yet: it must still answer (it raised IndexError, a
    # 500), and with the unit's arm.
    result = await second.allocate("e", {"unit": "u", "sticky": True})
    assert [d["arm"] for d in result["decisions"]] == ["c"]


async def test_a_batch_survives_an_unknown_arm_of_an_experiment_archived_elsewhere(
        two_processes: list[BanditService]) -> None:
    first, second = two_processes
    for experiment_id in ("e", "f"):
        await first.create_experiment({"id": experiment_id, "arms": ["a", "b"],
                                       "reward": "bernoulli"})
    await second.allocate("e", {})  # cached by the second process
    await first.archive("e")
    result = await second.apply_events({"events": [
        {"id": "1", "experiment": "e", "arm": "zz", "reward": 1},
        {"id": "2", "experiment": "f", "arm": "a", "reward": 1}]})
    # The event for the live experiment is applied; the other one is rejected, by index.
    assert result["accepted"] == 1
    assert [r["index"] for r in result["rejected"]] == [0]


async def test_a_resent_event_stays_a_duplicate_beside_a_second_reward_for_its_decision(
        two_processes: list[BanditService]) -> None:
    service = two_processes[0]
    await service.create_experiment({"id": "e", "arms": ["a", "b"], "reward": "bernoulli"})
    [decision] = (await service.allocate("e", {}))["decisions"]
    first = {"id": "first", "experiment": "e", "arm": decision["arm"], "reward": 1,
             "decision_id": decision["decision_id"]}
    assert (await service.apply_events({"events": [first]}))["accepted"] == 1
    second = {**first, "id": "second"}
    result = await service.apply_events({"events": [second, first]})
    # "second" is refused (one reward per decision and arm); "first" was applied already, and
    # a client retrying it must hear "duplicate", not that it was rejected.
    assert [r["index"] for r in result["rejected"]] == [0]
    assert result["duplicates"] == 1


async def test_concurrent_first_decisions_of_a_process_get_distinct_ids(
        two_processes: list[BanditService]) -> None:
    # Found by bench_soak: a reward for a fresh decision refused as "already has a reward".
    service = two_processes[0]
    await service.create_experiment({"id": "e", "arms": ["a", "b"], "reward": "bernoulli"})
    await service.patch("e", {"version": 1, "arms": {"pause": ["b"]}})  # every decision: "a"
    answers = await asyncio.gather(*(service.allocate("e", {}) for _ in range(4)))
    ids = [decision["decision_id"] for answer in answers for decision in answer["decisions"]]
    # The process's signer is made on first use; requests racing to make it must not each
    # get their own (every one starting its counter at 1: the same id for two decisions).
    assert len(set(ids)) == len(ids), ids


async def test_a_refused_event_sent_twice_in_a_batch_is_refused_twice(
        two_processes: list[BanditService]) -> None:
    service = two_processes[0]
    await service.create_experiment({"id": "e", "arms": ["a", "b"], "reward": "bernoulli"})
    [decision] = (await service.allocate("e", {}))["decisions"]
    first = {"id": "first", "experiment": "e", "arm": decision["arm"], "reward": 1,
             "decision_id": decision["decision_id"]}
    assert (await service.apply_events({"events": [first]}))["accepted"] == 1
    second = {**first, "id": "second"}
    result = await service.apply_events({"events": [second, second]})
    # "second" was not applied (its decision has a reward already): its copy must not be
    # reported as a duplicate, which tells a client it counted (in a later batch it is refused).
    assert [r["index"] for r in result["rejected"]] == [0, 1]
    assert result["duplicates"] == 0
