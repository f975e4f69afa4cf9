"""``bandit worker``: reward events from a Redis Stream, with worker processes killed, restarted
and cut off from Redis mid-stream. Final counts must equal the distinct events exactly."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from bandit.ops import stream_entries as stream_module
from bandit.ops.stream_entries import measure_lag, sibling_key
from bandit.serving.service import BanditService
from bandit.settings import Settings
from bandit.store.embedded import free_port, stop_process
from bandit.store.keys import Keys
from bandit.store.redis_store import RedisStore
from tests.support.redis import RedisServer
from tests.support.topologies import LocalCluster

STREAM = "rewards"
DEAD = "{rewards}:dead"
ARMS = ["a", "b", "c"]
Event = dict[str, Any]
#: redis-py's sync replies are typed as unions of bytes and str; the clients here decode.
SyncRedis = Any


class Worker:
    """``python -m bandit worker`` as an OS process."""

    def __init__(self, redis_url: str, *extra: str, env: dict[str, str] | None = None) -> None:
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        command = [sys.executable, "-m", "bandit", "worker", "--stream", STREAM,
                   "--redis", redis_url, "--block-ms", "100", "--log-interval", "1", *extra]
        self.process = subprocess.Popen(command, env={**os.environ, **(env or {})},
                                        stdout=self.log, stderr=self.log)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self) -> int:
        code = stop_process(self.process, timeout_s=20)
        if not self.log.closed:  # stopped once already otherwise (then by the fixture)
            #: What the worker wrote, to the end (the log is closed now).
            self.final_output = self.output()
            self.log.close()
        return code


@pytest.fixture
def workers(redis_url: str) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(*extra: str, url: str | None = None, env: dict[str, str] | None = None) -> Worker:
        worker = Worker(url or redis_url, *extra, env=env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def client(redis_url: str) -> Iterator[SyncRedis]:
    connection = redis.Redis.from_url(redis_url, decode_responses=True)
    yield connection
    connection.close()


async def _create(redis_url: str, *experiment_ids: str) -> None:
    settings = Settings(redis_url=redis_url)
    store = RedisStore.from_settings(settings)
    service = BanditService(store, settings, seed=1)
    for experiment_id in experiment_ids:
        await service.create_experiment({"id": experiment_id, "arms": ARMS,
                                         "reward": "bernoulli"})
    await store.close()


def _events(count: int, seed: int, experiments: tuple[str, ...] = ("x", "y", "z"),
            prefix: str = "e") -> list[Event]:
    rng = random.Random(seed)
    return [{"id": f"{prefix}{i}", "experiment": rng.choice(experiments),
             "arm": rng.choice(ARMS), "reward": rng.randint(0, 1)} for i in range(count)]


def _produce(client: SyncRedis, items: list[Event], name: str = STREAM) -> list[str]:
    ids = []
    for start in range(0, len(items), 2000):
        pipe = client.pipeline(transaction=False)
        for item in items[start:start + 2000]:
            pipe.xadd(name, {"event": json.dumps(item)})
        ids += pipe.execute()
    return ids


def _expected(events: list[Event]) -> dict[tuple[str, int], tuple[float, float]]:
    """(experiment, arm index) -> (successes, failures) of the distinct event ids."""
    distinct = {event["id"]: event for event in events}
    counts: Counter[tuple[str, int, int]] = Counter(
        (e["experiment"], ARMS.index(e["arm"]), e["reward"]) for e in distinct.values())
    experiments = {e["experiment"] for e in events}
    return {(x, i): (float(counts[(x, i, 1)]), float(counts[(x, i, 0)]))
            for x in experiments for i in range(len(ARMS))}


def _stored(client: SyncRedis,
            experiments: set[str]) -> dict[tuple[str, int], tuple[float, float]]:
    result = {}
    for experiment in experiments:
        raw: dict[str, str] = client.hgetall(Keys("bandit", experiment).stats)
        for i in range(len(ARMS)):
            result[(experiment, i)] = (float(raw.get(f"{i}:s", 0)), float(raw.get(f"{i}:f", 0)))
    return result


def _drained(client: SyncRedis, group: str = "bandit") -> bool:
    if not client.exists(STREAM):
        return False
    groups: list[dict[str, Any]] = client.xinfo_groups(STREAM)
    state = next((g for g in groups if g["name"] == group), None)
    last: str = client.xinfo_stream(STREAM)["last-generated-id"]
    return state is not None and state["last-delivered-id"] == last and state["pending"] == 0


def _wait(condition: Callable[[], bool], timeout_s: float, what: str,
          worker: Worker | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n"
                                 f"{worker.output()[-3000:] if worker else ''}")
        time.sleep(0.05)


def _pending_of(client: SyncRedis, consumer: str) -> int:
    try:
        summary: dict[str, Any] = client.xpending(STREAM, "bandit")
    except redis.ResponseError:  # no group yet: the worker has not started
        return 0
    return sum(int(c["pending"]) for c in summary["consumers"] or [] if c["name"] == consumer)


def _freeze_with_pending(client: SyncRedis, worker: Worker, consumer: str) -> int:
    """SIGSTOP the worker at a moment it holds unacknowledged entries (as a crash would find
    it); returns how many it holds."""
    for _ in range(500):
        worker.signal(signal.SIGSTOP)
        pending = _pending_of(client, consumer)
        if pending:
            return pending
        worker.signal(signal.SIGCONT)
        time.sleep(0.002)
    raise AssertionError("the worker never held pending entries")


def _kill_frozen(worker: Worker) -> None:
    worker.signal(signal.SIGKILL)
    worker.process.wait()


def _dead_letters(client: SyncRedis) -> list[dict[str, str]]:
    rows: Any = client.xrange(DEAD)
    return [fields for _, fields in rows]


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def test_sibling_keys_share_the_stream_slot() -> None:
    assert sibling_key("rewards", "dead") == "{rewards}:dead"
    assert sibling_key("{app}:rewards", "dead") == "{app}:rewards:dead"
    assert sibling_key("odd{}name", "dead") == "{odd{}name}:dead"
    from redis.crc import key_slot

    for name in ("rewards", "{app}:rewards", "a{b}c"):
        assert key_slot(sibling_key(name, "dead").encode()) == key_slot(name.encode())


async def test_each_event_applied_once_including_resent_ones(
        redis_url: str, client: SyncRedis, workers: Callable[..., Worker]) -> None:
    await _create(redis_url, "x", "y", "z")
    events = _events(3000, seed=1)
    resent = random.Random(2).sample(events, 400)
    batched = _events(60, seed=3, prefix="batch") + resent[:20]
    _produce(client, events[:1500])
    worker = workers("--batch", "200")
    _produce(client, events[1500:] + resent)
    client.xadd(STREAM, {"events": json.dumps(batched)})
    _wait(lambda: _drained(client), 20, "the stream to drain", worker)
    everything = events + resent + batched
    assert _stored(client, {"x", "y", "z"}) == _expected(everything)
    assert not client.exists(DEAD)
    assert worker.stop() == 0


async def test_killed_worker_entries_claimed_by_another(
        redis_url: str, client: SyncRedis, workers: Callable[..., Worker]) -> None:
    await _create(redis_url, "x", "y", "z")
    events = _events(12_000, seed=4)
    _produce(client, events)
    options = ("--batch", "100", "--claim-idle-ms", "300")
    victim = workers("--consumer", "victim", *options)
    _wait(lambda: _pending_of(client, "victim") > 0, 20, "the victim to start", victim)
    assert _freeze_with_pending(client, victim, "victim") > 0
    survivor = workers("--consumer", "survivor", *options)  # runs beside the frozen victim
    time.sleep(0.5)
    _kill_frozen(victim)
    _wait(lambda: _drained(client), 20, "the survivor to drain the stream", survivor)
    assert _pending_of(client, "victim") == 0  # claimed away, applied and acknowledged
    assert _stored(client, {"x", "y", "z"}) == _expected(events)
    assert not client.exists(DEAD)


async def test_restarted_consumer_takes_back_its_own_pending_entries(
        redis_url: str, client: SyncRedis, workers: Callable[..., Worker]) -> None:
    await _create(redis_url, "x", "y", "z")
    events = _events(8000, seed=5)
    _produce(client, events)
    # A claim would only happen after a minute: the restart must find its entries itself.
    options = ("--consumer", "only", "--batch", "100", "--claim-idle-ms", "60000")
    first = workers(*options)
    _wait(lambda: _pending_of(client, "only") > 0, 20, "the worker to start", first)
    assert _freeze_with_pending(client, first, "only") > 0
    _kill_frozen(first)
    second = workers(*options)
    _wait(lambda: _drained(client), 20, "the restarted worker to drain the stream", second)
    assert _stored(client, {"x", "y", "z"}) == _expected(events)


async def test_bad_entries_are_dead_lettered_and_the_rest_applied(
        redis_url: str, client: SyncRedis, workers: Callable[..., Worker]) -> None:
    await _create(redis_url, "x")
    good = _events(200, seed=6, experiments=("x",))
    ids = _produce(client, good[:100])
    not_json = client.xadd(STREAM, {"event": "{not json"})
    no_field = client.xadd(STREAM, {"payload": "{}"})
    out_of_range = client.xadd(STREAM, {"event": json.dumps(
        {"id": "bad-reward", "experiment": "x", "arm": "a", "reward": 2})})
    unknown_arm = client.xadd(STREAM, {"event": json.dumps(
        {"id": "bad-arm", "experiment": "x", "arm": "zz", "reward": 1})})
    mixed = client.xadd(STREAM, {"events": json.dumps(
        [good[100], {"id": "bad-field", "experiment": "x", "arm": "a", "reward": 1,
                     "colour": "red"}, good[101]])})
    ids += _produce(client, good[102:])
    worker = workers()
    _wait(lambda: _drained(client), 20, "the stream to drain", worker)
    assert _stored(client, {"x"}) == _expected(good)
    letters = {fields["id"]: fields for fields in _dead_letters(client)}
    assert set(letters) == {not_json, no_field, out_of_range, unknown_arm, mixed}
    assert "not valid JSON" in letters[not_json]["reason"]
    assert letters[not_json]["event"] == "{not json"
    assert "no 'event' or 'events' field" in letters[no_field]["reason"]
    assert "outside [0, 1]" in letters[out_of_range]["reason"]
    assert "'zz' is not an arm" in letters[unknown_arm]["reason"]
    assert letters[mixed]["index"] == "1"
    assert json.loads(letters[mixed]["event"])["id"] == "bad-field"
    assert "colour" in letters[mixed]["reason"]
    assert all(f["stream"] == STREAM and f["deliveries"] == "1" for f in letters.values())
    assert len(ids) == 198


async def test_fields_of_any_json_type_dead_letter_only_their_own_entry(
        redis_url: str, client: SyncRedis, workers: Callable[..., Worker]) -> None:
    """A list or an object where an id belongs once failed the whole batch (unhashable in a
    set lookup), and every entry read with it was dead-lettered."""
    await _create(redis_url, "x")
    good = _events(40, seed=11, experiments=("x",))
    _produce(client, good[:20])
    odd = [client.xadd(STREAM, {"event": json.dumps(
        {"id": f"odd-{field}", "experiment": "x", "arm": "a", "reward": 1, field: value})})
        for field, value in [("arm", ["a"]), ("experiment", ["x"]), ("experiment", {"x": 1}),
                             ("unit", ["u"]), ("decision_id", {"d": 1})]]
    _produce(client, good[20:])
    worker = workers()
    _wait(lambda: _drained(client), 20, "the stream to drain", worker)
    assert _stored(client, {"x"}) == _expected(good)
    assert {fields["id"] for fields in _dead_letters(client)} == set(odd)


async def test_missing_experiment_is_retried_then_dead_lettered(
        redis_url: str, client: SyncRedis, workers: Callable[..., Worker]) -> None:
    late = _events(30, seed=7, experiments=("late",), prefix="late")
    never = _events(5, seed=8, experiments=("never",), prefix="never")
    _produce(client, late + never)
    # An entry a consumer died on nine times already: over the limit, dead-lettered unread.
    client.xgroup_create(STREAM, "bandit", id="0")
    poison = client.xadd(STREAM, {"event": json.dumps(late[0])})
    client.xreadgroup("bandit", "ghost", {STREAM: ">"}, count=100)
    client.xclaim(STREAM, "bandit", "ghost", 0, [poison], retrycount=9)
    port = free_port()
    worker = workers("--claim-idle-ms", "200", "--max-deliveries", "3",
                     "--metrics-port", str(port))
    _wait(lambda: client.hlen("{rewards}:failures") == 35, 20, "the entries to be deferred",
          worker)
    metrics = _metrics(port)
    assert metrics["bandit_stream_pending_entries"] >= 35
    assert metrics["bandit_stream_lag_entries"] == 0
    await _create(redis_url, "late")
    _wait(lambda: _drained(client), 20, "the stream to drain", worker)
    assert _stored(client, {"late"}) == _expected(late)
    letters = _dead_letters(client)
    by_id = {json.loads(f["event"])["id"]: f for f in letters if f["id"] != poison}
    assert set(by_id) == {e["id"] for e in never}
    for fields in by_id.values():
        assert fields["deliveries"] == "3"
        assert "'never' does not exist" in fields["reason"]
    [poisoned] = [f for f in letters if f["id"] == poison]
    assert "delivered 10 times, over --max-deliveries 3" in poisoned["reason"]
    assert client.hlen("{rewards}:failures") == 0
    metrics = _metrics(port)
    assert metrics['bandit_stream_dead_letters_total{kind="max_deliveries"}'] == 1
    assert metrics['bandit_stream_dead_letters_total{kind="rejected"}'] == 5
    assert metrics['bandit_stream_events_total{outcome="applied"}'] == 30


async def test_redis_outage_is_retried_in_place(
        client: SyncRedis, workers: Callable[..., Worker], tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        own = redis.Redis(port=server.port, decode_responses=True)
        await _create(server.url, "x", "y", "z")
        events = _events(20_000, seed=9)
        _produce(own, events[:15_000])  # more than the worker drains before the outage
        worker = workers("--batch", "50", "--max-deliveries", "1", url=server.url,
                         env={"BANDIT_REDIS_TIMEOUT_S": "0.4"})
        _wait(lambda: bool(own.hlen(Keys("bandit", "x").stats) > 1), 20,
              "the first events to land", worker)
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)  # unreachable: every command times out
        time.sleep(1.5)
        server.process.send_signal(signal.SIGCONT)
        _produce(own, events[15_000:])
        _wait(lambda: _drained(own), 30, "the stream to drain", worker)
        assert _stored(own, {"x", "y", "z"}) == _expected(events)
        # One delivery allowed, yet nothing dead-lettered: an outage spends no deliveries.
        assert not own.exists(DEAD)
        assert "Redis unavailable" in worker.output()
        # (Once in several full runs the worker has not stopped within 20 s of SIGTERM: its
        # log says where it was.)
        code = worker.stop()
        assert code == 0, worker.final_output[-4000:]
        own.close()
    finally:
        server.stop()


async def test_sigterm_finishes_the_batch_and_acknowledges(
        redis_url: str, client: SyncRedis, workers: Callable[..., Worker]) -> None:
    await _create(redis_url, "x", "y", "z")
    events = _events(20_000, seed=10)
    ids = _produce(client, events)
    worker = workers("--batch", "500", "--consumer", "term")
    _wait(lambda: _pending_of(client, "term") > 0, 20, "the worker to start", worker)
    worker.signal(signal.SIGTERM)
    assert worker.process.wait(timeout=20) == 0
    groups: list[dict[str, Any]] = client.xinfo_groups(STREAM)
    [group] = groups
    assert group["pending"] == 0
    delivered = ids.index(group["last-delivered-id"]) + 1
    assert delivered < len(events)  # it stopped mid-stream
    assert _stored(client, {"x", "y", "z"}) == _expected(events[:delivered])
    assert "stopped:" in worker.output()


async def test_lag_of_a_known_backlog(redis_url: str, client: SyncRedis,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    seconds, _ = client.time()
    written_ms = (int(seconds) - 5) * 1000
    for i in range(100):
        client.xadd(STREAM, {"event": "{}"}, id=f"{written_ms}-{i}")
    client.xgroup_create(STREAM, "bandit", id="0")
    store = RedisStore.from_settings(Settings(redis_url=redis_url))
    try:
        lag = await measure_lag(store.client, STREAM, "bandit")
        assert (lag.entries, lag.capped, lag.pending) == (100, False, 0)  # nothing delivered
        assert 5.0 <= lag.seconds < 7.0
        client.xreadgroup("bandit", "c", {STREAM: ">"}, count=40)
        lag = await measure_lag(store.client, STREAM, "bandit")
        assert (lag.entries, lag.capped, lag.pending) == (60, False, 40)
        assert 5.0 <= lag.seconds < 7.0 and 5.0 <= lag.oldest_pending_seconds < 7.0
        monkeypatch.setattr(stream_module, "LAG_COUNT_CAP", 25)
        lag = await measure_lag(store.client, STREAM, "bandit")
        assert (lag.entries, lag.capped) == (25, True)
        client.xreadgroup("bandit", "c", {STREAM: ">"}, count=100)
        lag = await measure_lag(store.client, STREAM, "bandit")
        assert (lag.entries, lag.seconds, lag.pending) == (0, 0.0, 100)
    finally:
        await store.close()


async def test_metrics_count_a_drained_backlog(
        redis_url: str, client: SyncRedis, workers: Callable[..., Worker]) -> None:
    await _create(redis_url, "x", "y", "z")
    events = _events(1000, seed=11)
    _produce(client, events + events[:100])
    port = free_port()
    worker = workers("--metrics-port", str(port), "--batch", "100")
    _wait(lambda: _drained(client), 20, "the stream to drain", worker)
    _wait(lambda: "events/s" in worker.output(), 5, "a throughput line", worker)
    metrics = _metrics(port)
    assert metrics['bandit_stream_events_total{outcome="applied"}'] == 1000
    assert metrics['bandit_stream_events_total{outcome="duplicate"}'] == 100
    assert metrics['bandit_stream_entries_total{source="new"}'] == 1100
    assert metrics["bandit_stream_batches_total"] == metrics["bandit_stream_apply_seconds_count"]
    assert metrics["bandit_stream_batches_total"] >= 11
    assert metrics["bandit_stream_lag_entries"] == 0
    assert metrics["bandit_stream_lag_seconds"] == 0
    assert metrics["bandit_stream_pending_entries"] == 0
    assert "bandit_stream_events_per_second" in metrics


def test_refuses_to_run_without_a_store() -> None:
    env = {k: v for k, v in os.environ.items() if k != "BANDIT_REDIS_URL"}
    result = subprocess.run([sys.executable, "-m", "bandit", "worker", "--stream", STREAM],
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "--redis URL" in result.stderr


async def test_two_workers_on_a_redis_cluster(
        tmp_path: Path, workers: Callable[..., Worker]) -> None:
    """The stream, its dead letters and the experiments spread over three shards: two
    workers, one killed with entries pending, still apply every event exactly once."""
    with LocalCluster(tmp_path / "cluster", masters=3, replicas=0) as cluster:
        await _create(cluster.url, "x", "y", "z")
        node = cluster.nodes[0]
        client = RedisCluster(host="127.0.0.1", port=node.port, decode_responses=True)
        events = _events(8000, seed=11)
        _produce(client, events + events[:500])  # 500 resent
        client.xadd(STREAM, {"event": "{not json"})
        options = ("--batch", "100", "--claim-idle-ms", "300")
        victim = workers("--consumer", "victim", *options, url=cluster.url)
        _wait(lambda: _pending_of(client, "victim") > 0, 20, "the victim to start", victim)
        assert _freeze_with_pending(client, victim, "victim") > 0
        survivor = workers("--consumer", "survivor", *options, url=cluster.url)
        time.sleep(0.5)
        _kill_frozen(victim)
        _wait(lambda: _drained(client), 30, "the survivor to drain the stream", survivor)
        assert _stored(client, {"x", "y", "z"}) == _expected(events)
        [letter] = _dead_letters(client)  # in the stream's slot, written with its XACK
        assert "not valid JSON" in letter["reason"]
        shards = {cluster.master_of_slot(key_slot(Keys("bandit", x).meta.encode())).port
                  for x in ("x", "y", "z")}
        shards.add(cluster.master_of_slot(key_slot(STREAM.encode())).port)
        assert len(shards) >= 2  # the stream and the experiments do not share one shard
        assert survivor.stop() == 0
        client.close()
