"""``bandit simulate --dask``: the numbers of the run without Dask, bit for bit, on a local
cluster and on a scheduler given by address; clear errors when a cluster cannot be used."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from distributed import LocalCluster

from bandit.ops.cli import main
from simulations import distributed
from simulations.engine import SimulationResult, simulate, simulate_chunk
from simulations.environments import Environment
from simulations.policies import parse_policy

SWEEP = ("--means", "0.5,0.45,0.4", "--horizon", "400", "--reps", "6", "--seed", "3",
         "--policy", "thompson", "--sweep", "epsilon=0,0.1", "--sweep", "temperature=1,2")
POLICIES = ("--means", "0.5,0.4", "--horizon", "300", "--reps", "5", "--seed", "11",
            "--batch", "3", "--delay", "2", "--policy", "thompson", "--policy", "ucb1")
ARRAYS = ("pseudo_regret", "regret", "best_arm_rate", "shares", "pulls")


def simulate_cli(*arguments: str) -> int:
    return main(["simulate", "--no-progress", *arguments])


def outputs(directory: Path) -> dict[str, Any]:
    """What a run wrote, but its run times (the only fields allowed to differ)."""
    summary = json.loads((directory / "summary.json").read_text())
    for row in summary["policies"].values():
        assert row.pop("seconds") > 0
        assert row.pop("pulls_per_second") > 0
    files = {name: (directory / name).read_bytes()
             for name in ("regret.csv", "metrics.csv", "sweep.csv")
             if (directory / name).exists()}
    return {"summary": summary, **files}


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """A scheduler with two one-thread worker processes, as `dask scheduler` and
    `dask worker --nworkers 2 --nthreads 1` would give, owned by these tests."""
    # distributed leaves LocalCluster's constructor unannotated.
    with LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address="127.0.0.1:0", scheduler_kwargs={"dashboard": False},
        silence_logs=logging.ERROR,
    ) as local:
        yield local


def test_sweep_on_a_local_cluster_matches_the_single_machine_run(tmp_path: Path) -> None:
    assert simulate_cli(*SWEEP, "--out", str(tmp_path / "here")) == 0
    # Two cores: two worker processes of one thread each.
    assert simulate_cli(*SWEEP, "--dask", "--threads", "2", "--out", str(tmp_path / "dask")) == 0
    here, on_dask = outputs(tmp_path / "here"), outputs(tmp_path / "dask")
    assert set(here) == {"summary", "regret.csv", "metrics.csv", "sweep.csv"}
    assert len(here["summary"]["policies"]) == 4
    assert on_dask == here


def test_policies_on_a_scheduler_address_match_the_single_machine_run(
    tmp_path: Path, cluster: LocalCluster
) -> None:
    assert simulate_cli(*POLICIES, "--out", str(tmp_path / "here")) == 0
    assert simulate_cli(*POLICIES, "--dask", cluster.scheduler_address,
                        "--out", str(tmp_path / "dask")) == 0
    here = outputs(tmp_path / "here")
    assert set(here["summary"]["policies"]) == {"thompson", "ucb1"}
    assert outputs(tmp_path / "dask") == here


def test_uneven_chunks_give_the_engines_arrays_bit_for_bit(cluster: LocalCluster) -> None:
    policies = [parse_policy("thompson:top_two=0.5"), parse_policy("kl-ucb")]
    environment = Environment(reward="bernoulli", means=np.array([0.3, 0.25, 0.2]), churn=0.01)
    options: dict[str, Any] = {"horizon": 250, "seed": 5, "batch": 2, "delay": 1.5}
    updates: list[int] = []
    with distributed.connect(cluster.scheduler_address) as client:
        results = distributed.simulate_policies(client, policies, environment, reps=10,
                                                size=4, progress=updates.append, **options)
    assert sorted(updates) == [2, 2, 4, 4, 4, 4]  # chunks 0-3, 4-7, 8-9 of each policy
    for policy, result in zip(policies, results, strict=True):
        expected = simulate(policy, environment, reps=10, threads=2, **options)
        assert result.policy == expected.policy
        assert result.checkpoints.tobytes() == expected.checkpoints.tobytes()
        for name in ARRAYS:
            mine, theirs = getattr(result, name), getattr(expected, name)
            assert mine.shape == theirs.shape and mine.flags.c_contiguous
            assert mine.tobytes() == theirs.tobytes(), name


def test_a_chunk_is_the_rows_of_the_whole_run() -> None:
    policy = parse_policy("thompson")
    environment = Environment.bernoulli([0.5, 0.4])
    whole = simulate(policy, environment, horizon=200, reps=7, seed=2, threads=1)
    parts: list[SimulationResult] = [
        simulate_chunk(policy, environment, horizon=200, seed=2, start=start, stop=stop)
        for start, stop in distributed.chunks(7, 3)]
    for name in ARRAYS:
        joined = np.concatenate([getattr(part, name) for part in parts])
        assert joined.tobytes() == getattr(whole, name).tobytes(), name
    empty = simulate_chunk(policy, environment, horizon=200, seed=2, start=4, stop=4)
    assert empty.pulls.shape == (0, 2)
    with pytest.raises(ValueError, match="stop must be >= start"):
        simulate_chunk(policy, environment, horizon=200, seed=2, start=4, stop=3)


def test_chunks_cover_the_replications_in_order() -> None:
    assert distributed.chunks(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert distributed.chunks(3, 5) == [(0, 3)]
    # ~4 tasks per thread, but none below MIN_TASK_PULLS pulls.
    assert distributed.chunk_size(reps=100, policies=1, horizon=10**6, threads=2) == 13
    assert distributed.chunk_size(reps=100, policies=50, horizon=10**6, threads=2) == 100
    assert distributed.chunk_size(reps=100, policies=1, horizon=100, threads=2) == 100


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_an_unreachable_scheduler_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(distributed, "CONNECT_TIMEOUT_S", 1.0)  # the CLI waits 5 s
    address = f"tcp://127.0.0.1:{free_port()}"
    assert simulate_cli("--means", "0.5,0.4", "--dask", address, "--out", str(tmp_path)) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"bandit simulate: --dask: cannot connect to the Dask scheduler "
                            f"at '{address}'")
    assert error.count("\n") == 1 and "Traceback" not in error
    assert not (tmp_path / "summary.json").exists()


def test_threads_are_refused_for_a_remote_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert simulate_cli("--means", "0.5,0.4", "--dask", "tcp://127.0.0.1:1", "--threads", "2",
                        "--out", str(tmp_path)) == 2
    assert "dask worker --nthreads" in capsys.readouterr().err


def test_workers_of_another_version_are_refused() -> None:
    mine = importlib.metadata.version("bandit-service")
    distributed.check_versions({"tcp://10.0.0.1:1": mine, "tcp://10.0.0.2:1": mine}, mine)
    with pytest.raises(distributed.ClusterError,
                       match=r"worker tcp://10.0.0.2:1 runs bandit-service 0.0.1; this client "
                             rf"runs {mine}: install the same version"):
        distributed.check_versions({"tcp://10.0.0.1:1": mine, "tcp://10.0.0.2:1": "0.0.1"},
                                   mine)
    missing = importlib.metadata.PackageNotFoundError("bandit-service")
    with pytest.raises(distributed.ClusterError, match="cannot import bandit-service"):
        distributed.check_versions({"tcp://10.0.0.1:1": missing}, mine)
    with pytest.raises(distributed.ClusterError, match="no workers"):
        distributed.check_versions({}, mine)
