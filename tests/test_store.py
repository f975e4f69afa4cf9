"""The Redis store against a real redis-server: atomicity, idempotence, order independence."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bandit.model import Experiment, parse_new_experiment
from bandit.store.codec import EncodedEvent
from bandit.store.redis_store import APPLIED, DUPLICATE, RedisStore

PROPERTY = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def experiment(experiment_id: str, arms: int = 3, reward: str = "bernoulli",
               half_life: float | None = None) -> Experiment:
    body: dict[str, object] = {"id": experiment_id, "arms": [f"a{i}" for i in range(arms)],
                               "reward": reward}
    if half_life is not None:
        body["exploration"] = {"half_life_s": half_life}
    return parse_new_experiment(body, time.time())


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    store = RedisStore.from_url(redis_url, "test", timeout_s=5, max_connections=8)
    yield store
    await store.close()


async def fresh(store: RedisStore, experiment_id: str, **kwargs: object) -> None:
    await store.delete_all(experiment_id)
    await store.create(experiment(experiment_id, **kwargs), {"action": "create"})  # type: ignore[arg-type]


def events_of(pairs: list[tuple[int, float]], prefix: str = "e") -> list[EncodedEvent]:
    return [EncodedEvent(f"{prefix}{i}", arm, reward, None, None)
            for i, (arm, reward) in enumerate(pairs)]


async def stats_of(store: RedisStore, experiment_id: str) -> tuple[np.ndarray, np.ndarray]:
    state = await store.read(experiment_id)
    assert state is not None
    return state.stats, state.counts


bernoulli_events = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from([0.0, 1.0, 0.5, 0.25])), min_size=1,
    max_size=60)
gaussian_events = st.lists(
    st.tuples(st.integers(0, 2), st.floats(-1e3, 1e3, allow_nan=False)), min_size=1,
    max_size=60)


@PROPERTY
@given(pairs=bernoulli_events, data=st.data())
async def test_reward_order_does_not_change_bernoulli_posteriors(
    store: RedisStore, pairs: list[tuple[int, float]], data: st.DataObject
) -> None:
    await fresh(store, "ordered")
    await fresh(store, "shuffled")
    events = events_of(pairs)
    await store.apply_events({"ordered": events}, 60)
    shuffled = data.draw(st.permutations(events))
    split = data.draw(st.integers(0, len(shuffled)))
    await store.apply_events({"shuffled": shuffled[:split]}, 60)
    await store.apply_events({"shuffled": shuffled[split:]}, 60)
    ordered_stats, ordered_counts = await stats_of(store, "ordered")
    shuffled_stats, shuffled_counts = await stats_of(store, "shuffled")
    # Sums of multiples of 1/4 are exact in binary floating point: equality, not closeness.
    np.testing.assert_array_equal(ordered_stats, shuffled_stats)
    np.testing.assert_array_equal(ordered_counts, shuffled_counts)


@PROPERTY
@given(pairs=gaussian_events, data=st.data())
async def test_reward_order_does_not_change_gaussian_posteriors(
    store: RedisStore, pairs: list[tuple[int, float]], data: st.DataObject
) -> None:
    await fresh(store, "ordered", reward="gaussian")
    await fresh(store, "shuffled", reward="gaussian")
    events = events_of(pairs)
    await store.apply_events({"ordered": events}, 60)
    await store.apply_events({"shuffled": data.draw(st.permutations(events))}, 60)
    ordered, _ = await stats_of(store, "ordered")
    shuffled, _ = await stats_of(store, "shuffled")
    # Welford's update is exact in real arithmetic; in doubles, rounding of order 1e-16
    # relative per step accumulates over at most 60 events, on values up to 1e3 (m2 up to 6e7).
    np.testing.assert_allclose(ordered, shuffled, rtol=1e-9, atol=1e-6)
    for arm in range(3):
        rewards = np.array([r for a, r in pairs if a == arm])
        if rewards.size:
            assert ordered[0, arm] == rewards.size
            assert ordered[1, arm] == pytest.approx(rewards.mean(), rel=1e-9, abs=1e-9)
            assert ordered[2, arm] == pytest.approx(((rewards - rewards.mean()) ** 2).sum(),
                                                    rel=1e-9, abs=1e-6)


@PROPERTY
@given(pairs=bernoulli_events)
async def test_applying_a_batch_twice_equals_once(
    store: RedisStore, pairs: list[tuple[int, float]]
) -> None:
    await fresh(store, "once")
    events = events_of(pairs)
    first = await store.apply_events({"once": events}, 60)
    after_first = await stats_of(store, "once")
    second = await store.apply_events({"once": events}, 60)
    after_second = await stats_of(store, "once")
    assert first["once"] == [APPLIED] * len(events)
    assert second["once"] == [DUPLICATE] * len(events)
    for before, after in zip(after_first, after_second, strict=True):
        np.testing.assert_array_equal(before, after)


async def test_dedup_window_expires(store: RedisStore) -> None:
    await fresh(store, "window")
    events = events_of([(0, 1.0)])
    assert (await store.apply_events({"window": events}, 0.3))["window"] == [APPLIED]
    assert (await store.apply_events({"window": events}, 0.3))["window"] == [DUPLICATE]
    await asyncio.sleep(0.2)
    assert (await store.apply_events({"window": events}, 0.3))["window"] == [DUPLICATE]
    # Ids are kept in quarter-window buckets: remembered for at most 1.25 windows.
    await asyncio.sleep(0.25)
    # Past the window the id is forgotten: the same id counts again, as documented.
    assert (await store.apply_events({"window": events}, 0.3))["window"] == [APPLIED]


async def test_forgetting_halves_evidence_per_half_life(store: RedisStore) -> None:
    await fresh(store, "drift", half_life=1.0)
    started = time.monotonic()
    await store.apply_events({"drift": events_of([(0, 1.0)] * 4, "x")}, 60)
    await asyncio.sleep(1.0)
    await store.apply_events({"drift": events_of([(0, 1.0)], "y")}, 60)
    elapsed_upper = time.monotonic() - started
    stats, counts = await stats_of(store, "drift")
    # 4 successes decayed by 2^(-d) with d between the sleep and the whole elapsed time.
    assert 4 * 2 ** -elapsed_upper + 1 <= stats[0, 0] <= 4 * 2 ** -1.0 + 1
    assert counts[0] == 5  # raw counts are never forgotten (warm-up uses them)


async def test_event_time_weighs_old_rewards_less(store: RedisStore) -> None:
    await fresh(store, "late", half_life=100.0)
    old = EncodedEvent("old", 0, 1.0, time.time() - 200.0, None)
    await store.apply_events({"late": [old]}, 60)
    stats, _ = await stats_of(store, "late")
    # Happened two half-lives ago: weight 1/4 (the clocks of test and server agree to ~1 s).
    assert stats[0, 0] == pytest.approx(0.25, rel=0.02)


async def test_provisional_decisions(store: RedisStore) -> None:
    await fresh(store, "delayed")
    assert await store.record_provisional("delayed", ["p1", "p2"], [1, 1], 60)
    stats, counts = await stats_of(store, "delayed")
    assert stats[1, 1] == 2 and counts[1] == 2
    conversion = [EncodedEvent("c1", 1, 1.0, None, "p1"), EncodedEvent("c2", 1, 1.0, None, "p1"),
                  EncodedEvent("c3", 0, 1.0, None, "p2"), EncodedEvent("c4", 1, 1.0, None, "p9")]
    statuses = (await store.apply_events({"delayed": conversion}, 60))["delayed"]
    assert statuses == [APPLIED, DUPLICATE, 3, 2]
    stats, counts = await stats_of(store, "delayed")
    assert (stats[0, 1], stats[1, 1], counts[1]) == (1.0, 1.0, 2)


async def test_provisional_decisions_expire_after_the_window(store: RedisStore) -> None:
    await fresh(store, "expiring")
    await store.record_provisional("expiring", ["p1"], [0], 0.2)
    await asyncio.sleep(0.35)
    statuses = (await store.apply_events(
        {"expiring": [EncodedEvent("late", 0, 1.0, None, "p1")]}, 60))["expiring"]
    assert statuses == [2]
    stats, _ = await stats_of(store, "expiring")
    assert (stats[0, 0], stats[1, 0]) == (0.0, 1.0)  # the failure stands


async def test_sticky_assignment_is_first_come(store: RedisStore) -> None:
    await fresh(store, "sticky")
    first = await store.sticky_assignment("sticky", "u1", "0|0.5|")
    second = await store.sticky_assignment("sticky", "u1", "1|0.5|")
    assert (first, second) == (("0|0.5|", True), ("0|0.5|", False))


async def test_keys_share_one_hash_slot(store: RedisStore, redis_url: str) -> None:
    await fresh(store, "slots")
    await store.apply_events({"slots": events_of([(0, 1.0)])}, 60)
    await store.record_provisional("slots", ["p1"], [0], 60)
    await store.sticky_assignment("slots", "u", "0|1|")
    await store.add_served({"slots": {0: 3}})
    client = redis.Redis.from_url(redis_url)
    keys = [key.decode() for key in client.scan_iter(match="test:{slots}:*")]
    client.close()
    assert len(keys) >= 6
    assert all("{slots}" in key for key in keys)


# -- several processes writing at once ------------------------------------------------------


def _writer(url: str, batches: list[list[tuple[str, int, float]]]) -> None:
    async def run() -> None:
        store = RedisStore.from_url(url, "test", timeout_s=10, max_connections=4)
        for batch in batches:
            await store.apply_events(
                {"shared": [EncodedEvent(i, arm, r, None, None) for i, arm, r in batch]}, 600)
        await store.close()

    asyncio.run(run())


@settings(max_examples=4, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), writers=st.integers(2, 4))
async def test_concurrent_writers_from_several_processes_lose_nothing(
    store: RedisStore, redis_url: str, seed: int, writers: int
) -> None:
    await fresh(store, "shared")
    generator = random.Random(seed)
    distinct = [(f"ev{i}", generator.randrange(3), float(generator.random() < 0.3))
                for i in range(2000)]
    plans = []
    for _ in range(writers):
        # Every writer sends an overlapping, shuffled subset: retries and races at once.
        mine = [event for event in distinct if generator.random() < 0.7]
        generator.shuffle(mine)
        plans.append([mine[i:i + generator.randint(1, 300)] for i in range(0, len(mine), 150)])
    covered = {event for plan in plans for batch in plan for event in batch}
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_writer, args=(redis_url, plan)) for plan in plans]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    stats, counts = await stats_of(store, "shared")
    for arm in range(3):
        rewards = [r for _, a, r in covered if a == arm]
        assert counts[arm] == len(rewards)
        assert stats[0, arm] == sum(rewards)
        assert stats[1, arm] == len(rewards) - sum(rewards)
