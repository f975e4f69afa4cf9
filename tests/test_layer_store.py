"""Layers in Redis (``RedisStore.save_layer``): versioned, audited, and every experiment in at
most one layer, checked in the same atomic step."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from bandit.errors import Conflict, NotFound
from bandit.layers import parse_layer
from bandit.store.redis_store import RedisStore


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    store = RedisStore.from_url(redis_url, "test", timeout_s=5, max_connections=4)
    yield store
    await store.close()


async def test_a_layer_is_created_changed_and_audited(store: RedisStore) -> None:
    layer = parse_layer({"id": "hero", "ranges": {"headline": [[0, 1000]]}})
    assert await store.save_layer(layer, 0, {"action": "create"}) == 1
    with pytest.raises(Conflict, match="already exists"):
        await store.save_layer(layer, 0, {"action": "create"})
    grown = replace(parse_layer({"id": "hero", "ranges": {"headline": [[0, 2000]],
                                                          "ranking": [[5000, 6000]]}}),
                    version=2)
    assert await store.save_layer(grown, 1, {"action": "update"}) == 2
    with pytest.raises(Conflict, match="is at version 2, not 1"):
        await store.save_layer(grown, 1, {"action": "update"})
    stored = await store.layer("hero")
    assert stored is not None and stored.ranges == grown.ranges and stored.version == 2
    assert [e["action"] for e in await store.layer_audit("hero")] == ["create", "update"]
    with pytest.raises(NotFound):
        await store.save_layer(replace(layer, id="nope"), 3, {"action": "update"})


async def test_an_experiment_is_in_at_most_one_layer(store: RedisStore) -> None:
    await store.save_layer(parse_layer({"id": "one", "ranges": {"shared": [[0, 10]]}}), 0, {})
    second = parse_layer({"id": "two", "ranges": {"shared": [[0, 10]], "own": [[20, 30]]}})
    with pytest.raises(Conflict, match="experiment 'shared' is in layer 'one'"):
        await store.save_layer(second, 0, {})
    assert await store.layer("two") is None  # nothing changed
    # Once the first layer lets it go, the second may take it.
    released = replace(parse_layer({"id": "one", "ranges": {"other": [[0, 10]]}}), version=2)
    await store.save_layer(released, 1, {})
    assert await store.save_layer(second, 0, {}) == 1
