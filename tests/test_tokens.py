"""Signed decision ids: SipHash against its reference, forgery, expiry, one reward per decision."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st

from bandit.api.app import create_app
from bandit.settings import Settings
from bandit.tokens import (
    DECISION_ID_PATTERN,
    EXPIRED,
    FORGED,
    SLATE_ARM,
    VALID,
    DecisionSigner,
    decision_key,
    siphash4,
)

Client = TestClient[Any, Any]
MASK = (1 << 64) - 1


def _rotl(x: int, bits: int) -> int:
    return ((x << bits) | (x >> (64 - bits))) & MASK


def reference_siphash24(key: bytes, message: bytes) -> int:
    """SipHash-2-4 written from the paper (Aumasson and Bernstein, 2012), any message length."""
    k0, k1 = int.from_bytes(key[:8], "little"), int.from_bytes(key[8:16], "little")
    v = [k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D,
         k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573]

    def sip_round() -> None:
        v[0] = (v[0] + v[1]) & MASK
        v[1] = _rotl(v[1], 13) ^ v[0]
        v[0] = _rotl(v[0], 32)
        v[2] = (v[2] + v[3]) & MASK
        v[3] = _rotl(v[3], 16) ^ v[2]
        v[0] = (v[0] + v[3]) & MASK
        v[3] = _rotl(v[3], 21) ^ v[0]
        v[2] = (v[2] + v[1]) & MASK
        v[1] = _rotl(v[1], 17) ^ v[2]
        v[2] = _rotl(v[2], 32)

    whole = len(message) // 8 * 8
    for start in range(0, whole, 8):
        word = int.from_bytes(message[start:start + 8], "little")
        v[3] ^= word
        sip_round()
        sip_round()
        v[0] ^= word
    last = ((len(message) & 0xFF) << 56) | int.from_bytes(message[whole:], "little")
    v[3] ^= last
    sip_round()
    sip_round()
    v[0] ^= last
    v[2] ^= 0xFF
    for _ in range(4):
        sip_round()
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def test_reference_matches_the_papers_test_vector() -> None:
    # Appendix A of the SipHash paper: key 00..0f, message 00..0e.
    assert reference_siphash24(bytes(range(16)), bytes(range(15))) == 0xA129CA6149BE45E5


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=32, max_size=32))
def test_kernel_matches_the_reference(key: bytes, message: bytes) -> None:
    words = [np.uint64(int.from_bytes(message[i:i + 8], "little")) for i in range(0, 32, 8)]
    tag = siphash4(np.uint64(int.from_bytes(key[:8], "little")),
                   np.uint64(int.from_bytes(key[8:], "little")), *words)
    assert int(tag) == reference_siphash24(key, message)


SIGNER = DecisionSigner(bytes(range(32)), process=0x12345)
NOW = 1_800_000_000


def test_ids_round_trip_and_bind_experiment_and_arm() -> None:
    ids = SIGNER.sign("exp", "d", NOW, [0, 1, 2])
    assert len(set(ids)) == 3 and all(DECISION_ID_PATTERN.fullmatch(i) for i in ids)
    assert SIGNER.verify("exp", ids, [0, 1, 2], NOW + 5, 3600) == [VALID] * 3
    assert SIGNER.verify("exp", ids, [1, 1, 1], NOW, 3600) == [FORGED, VALID, FORGED]
    assert SIGNER.verify("other", ids, [0, 1, 2], NOW, 3600) == [FORGED] * 3
    other_key = DecisionSigner(bytes(range(1, 33)), process=0x12345)
    assert other_key.verify("exp", ids, [0, 1, 2], NOW, 3600) == [FORGED] * 3
    assert SIGNER.verify("exp", ids, [0, 1, 2], NOW + 3601, 3600) == [EXPIRED] * 3
    assert SIGNER.verify("exp", ids, [0, 1, 2], NOW - 3600, 3600) == [FORGED] * 3  # future
    # Provisional ids live as long as their pending key.
    [provisional] = SIGNER.sign("exp", "p", NOW, [1])
    assert SIGNER.verify("exp", [provisional], [1], NOW + 10**6, 3600) == [VALID]
    # Slates bind their arms: a reward may name any arm the slate showed, and no other.
    [slate, other_slate] = SIGNER.sign_slates("exp", NOW, np.array([[7, 0, 999], [1, 2, 3]]))
    assert SIGNER.verify("exp", [slate] * 4, [7, 0, 999, 1], NOW, 3600) == [VALID] * 3 + [FORGED]
    assert SIGNER.verify("exp", [other_slate], [3], NOW, 3600) == [VALID]
    assert SIGNER.verify("other", [slate], [7], NOW, 3600) == [FORGED]
    assert SIGNER.verify("exp", [slate], [7], NOW + 3601, 3600) == [EXPIRED]
    # A slate that lists another arm in place of one it showed is a forgery.
    swapped = slate[:31] + "001" + slate[34:]
    assert DECISION_ID_PATTERN.fullmatch(swapped)
    assert SIGNER.verify("exp", [swapped], [1], NOW, 3600) == [FORGED]
    # Slate ids of earlier versions (kind 's', no arms listed) keep their old rule for the
    # rest of their life: any arm of the experiment.
    [legacy] = SIGNER.sign("exp", "s", NOW, [SLATE_ARM])
    assert SIGNER.verify("exp", [legacy, legacy], [0, 9], NOW, 3600) == [VALID, VALID]
    assert SIGNER.verify("other", [legacy], [0], NOW, 3600) == [FORGED]
    # A decision of another kind with the same numbers is a different decision.
    assert SIGNER.verify("exp", ["p" + ids[0][1:]], [0], NOW, 3600) == [FORGED]


@given(st.integers(min_value=0, max_value=50), st.integers(min_value=0, max_value=15))
def test_any_changed_character_is_refused(position: int, digit: int) -> None:
    [decision_id] = SIGNER.sign("exp", "d", NOW, [4])
    position %= len(decision_id)
    changed = decision_id[:position] + "0123456789abcdef"[digit] + decision_id[position + 1:]
    if changed == decision_id:
        return
    if DECISION_ID_PATTERN.fullmatch(changed):
        assert SIGNER.verify("exp", [changed], [4], NOW, 3600) == [FORGED]
    else:  # the kind letter, or a leading zero in the counter (a second spelling)
        assert position in (0, 19)


@given(st.integers(min_value=0, max_value=80), st.integers(min_value=0, max_value=15))
def test_any_changed_character_of_a_slate_id_is_refused(position: int, digit: int) -> None:
    [slate] = SIGNER.sign_slates("exp", NOW, np.array([[4, 2, 9]]))
    assert len(slate) == 47 + 3 * 3 and decision_key(slate) == slate[:31]
    position %= len(slate)
    changed = slate[:position] + "0123456789abcdef"[digit] + slate[position + 1:]
    if changed == slate:
        return
    if DECISION_ID_PATTERN.fullmatch(changed):
        assert SIGNER.verify("exp", [changed], [2], NOW, 3600) == [FORGED]
    else:
        assert position == 0


def test_counters_have_one_spelling() -> None:
    [decision_id] = SIGNER.sign("exp", "d", NOW, [0])
    padded = decision_id[:19] + "0" + decision_id[19:]
    assert not DECISION_ID_PATTERN.fullmatch(padded)


@pytest.fixture
async def strict(redis_url: str) -> AsyncIterator[Client]:
    settings = Settings(redis_url=redis_url, refresh_interval_s=0.05,
                        require_decision_ids=True, dedup_window_s=600)
    async with TestClient(TestServer(create_app(settings, seed=9))) as client:
        yield client


async def _post_events(client: Client, *events: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/v1/events", json={"events": list(events)})
    assert response.status == 200, await response.text()
    return dict(await response.json())


async def test_rewards_must_name_a_served_decision_once(strict: Client) -> None:
    assert (await strict.post("/v1/experiments", json={
        "id": "exp", "arms": ["a", "b"], "reward": "bernoulli"})).status == 201
    decisions = (await (await strict.post("/v1/experiments/exp/allocate",
                                          json={"n": 3})).json())["decisions"]
    first, second, third = decisions
    event = {"experiment": "exp", "reward": 1}
    result = await _post_events(
        strict,
        {**event, "id": "e1", "arm": first["arm"], "decision_id": first["decision_id"]},
        {**event, "id": "e2", "arm": first["arm"], "decision_id": first["decision_id"]},
        {**event, "id": "e3", "arm": "a"},
        {**event, "id": "e4", "arm": "b" if second["arm"] == "a" else "a",
         "decision_id": second["decision_id"]},
        {**event, "id": "e5", "arm": third["arm"],
         "decision_id": third["decision_id"][:-1] + ("0" if third["decision_id"][-1] != "0"
                                                     else "1")},
    )
    assert result["accepted"] == 1 and result["duplicates"] == 0
    assert [r["index"] for r in result["rejected"]] == [1, 2, 3, 4]
    messages = [r["error"] for r in result["rejected"]]
    assert "already has a reward" in messages[0]
    assert messages[1].startswith("decision_id: required")
    assert "not a decision this service served" in messages[2]
    assert "not a decision this service served" in messages[3]
    # A retry of the accepted event is a duplicate; a new event id for it is refused, even
    # from another process (the dedup sets are in Redis).
    again = await _post_events(strict, {**event, "id": "e1", "arm": first["arm"],
                                        "decision_id": first["decision_id"]})
    assert again["duplicates"] == 1
    later = await _post_events(strict, {**event, "id": "e9", "arm": first["arm"],
                                        "decision_id": first["decision_id"]})
    assert "already has a reward" in later["rejected"][0]["error"]
    await asyncio.sleep(0.3)  # a few cache refreshes
    stats = await (await strict.get("/v1/experiments/exp/stats")).json()
    assert sum(arm["n"] for arm in stats["arms"]) == 1


async def test_slate_rewards_once_per_arm(client: Client) -> None:
    assert (await client.post("/v1/experiments", json={
        "id": "exp", "arms": ["a", "b", "c"], "reward": "bernoulli"})).status == 201
    [slate] = (await (await client.post("/v1/experiments/exp/allocate",
                                        json={"k": 2})).json())["decisions"]
    assert slate["decision_id"][0] == "r"
    events = [{"id": f"e{i}", "experiment": "exp", "arm": arm, "reward": 1,
               "decision_id": slate["decision_id"]} for i, arm in enumerate(slate["arms"])]
    assert (await _post_events(client, *events))["accepted"] == 2
    events[0]["id"] = "e-again"
    assert "already has a reward" in (await _post_events(client, events[0]))["rejected"][0][
        "error"]


def test_batches_keep_one_id_length_and_never_reuse_a_counter() -> None:
    signer = DecisionSigner(bytes(range(32)), process=7)
    seen = {i for _ in range(14) for i in signer.sign("exp", "d", NOW, [0])}  # counters 1..14
    batch = signer.sign("exp", "d", NOW, [1] * 5)  # 15..19 would change width: 16..20 instead
    assert len({len(i) for i in batch}) == 1 and not seen & set(batch)
    assert [int(i[19:-16], 16) for i in batch] == [16, 17, 18, 19, 20]
    assert signer.verify("exp", batch, [1] * 5, NOW, 60) == [VALID] * 5
    many = signer.sign("exp", "d", NOW, np.arange(10_000) % 3)
    assert len(set(many)) == 10_000 and all(DECISION_ID_PATTERN.fullmatch(i) for i in many)
    assert signer.verify("exp", many, list(np.arange(10_000) % 3), NOW, 60) == [VALID] * 10_000


async def test_concurrent_first_decisions_share_one_signer(client: Client) -> None:
    """The first requests of a process wait for the signing key together: one counter."""
    assert (await client.post("/v1/experiments", json={
        "id": "exp", "arms": ["a", "b"], "reward": "bernoulli"})).status == 201
    answers = await asyncio.gather(*(client.post("/v1/experiments/exp/allocate")
                                     for _ in range(20)))
    ids = [(await answer.json())["decisions"][0]["decision_id"] for answer in answers]
    assert len(set(ids)) == 20
