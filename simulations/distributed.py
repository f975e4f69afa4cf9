"""Simulation runs on a Dask cluster: ``bandit simulate --dask [ADDRESS]``.

The work is cut into tasks of (policy, a contiguous chunk of replication indices), all submitted
at once, so a sweep of many configurations times many replications spreads over every worker
thread. A task runs :func:`simulations.engine.simulate_chunk`, which gives replication i the
generator the single-machine run gives it (child i of ``SeedSequence(seed)``); the client
writes each chunk's rows into arrays laid out as :func:`simulations.engine.simulate` lays them
out. The report then reduces the same numbers in the same order, so every output is
bit-identical to the run without Dask; only the run times differ.

Every machine (client, scheduler, workers) needs the same version of this project installed:
tasks name the engine's functions, which workers import. :func:`connect` checks the workers'
version and refuses to run on a mismatch. (Bit-identity across machines also assumes the same
numpy, numba and CPU family: the kernels compile for the host CPU.)

``distributed`` ships type hints but leaves a few of its calls unannotated; those calls carry
``type: ignore[no-untyped-call]`` here, and nowhere else in the project touches Dask.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt
from distributed import Client, Future, LocalCluster, as_completed
from distributed.deploy.utils import nprocesses_nthreads

from simulations.engine import SimulationResult, simulate_chunk
from simulations.environments import Environment
from simulations.policies import PolicySpec

__all__ = [
    "LOCAL",
    "ClusterError",
    "check_versions",
    "chunk_size",
    "chunks",
    "connect",
    "simulate_policies",
    "worker_threads",
]

LOCAL = "local"  # the address meaning "start a local cluster"
DISTRIBUTION = "bandit-service"
CONNECT_TIMEOUT_S = 5.0  # an unreachable scheduler is reported after this long
WORKERS_TIMEOUT_S = 30.0  # a scheduler with no worker is reported after this long
# Tasks per worker thread: enough that a slow chunk at the end does not leave threads idle.
TASKS_PER_THREAD = 4
# A task should be worth its scheduling overhead (~1 ms): at least ~10 ms of simulation.
MIN_TASK_PULLS = 200_000


class ClusterError(RuntimeError):
    """The Dask cluster cannot be reached, has no workers, or runs another version."""


@contextmanager
def connect(address: str = LOCAL, *, threads: int | None = None) -> Iterator[Client]:
    """A client of a new local cluster (``address`` ``"local"``) or of the scheduler at
    ``address`` (e.g. ``tcp://scheduler:8786``), closed (with its cluster) on exit.

    A local cluster has ``threads`` worker threads in all (default: all cores), spread over
    processes the way ``dask worker --nworkers auto`` does; a remote cluster's workers choose
    their own (``dask worker --nthreads``), so ``threads`` is refused there.
    """
    with ExitStack() as stack:
        if address == LOCAL:
            stack.enter_context(_log_level("distributed", logging.ERROR))
            cluster = stack.enter_context(_local_cluster(threads))
            client = stack.enter_context(Client(cluster))  # type: ignore[no-untyped-call]
        else:
            if threads is not None:
                raise ValueError("--threads sets the size of a local cluster; a remote "
                                 "cluster's workers choose theirs (dask worker --nthreads)")
            client = stack.enter_context(_remote_client(address))
        check_versions(client.run(importlib.metadata.version, DISTRIBUTION, on_error="return"),
                       importlib.metadata.version(DISTRIBUTION))
        yield client


def _local_cluster(threads: int | None) -> LocalCluster:
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    total = threads or os.cpu_count() or 1
    processes, threads_per_process = nprocesses_nthreads(total)  # type: ignore[no-untyped-call]
    # Processes, not threads: the kernels release the GIL, but the Python around each
    # replication does not. No dashboard (it needs bokeh); the scheduler's other HTTP routes
    # on a free loopback port, since the default 8787 may be taken (a warning, then another
    # port). The workers' logs are silenced below errors so they do not tear the progress bar.
    return LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=processes, threads_per_worker=threads_per_process, processes=True,
        host="127.0.0.1", dashboard_address="127.0.0.1:0",
        scheduler_kwargs={"dashboard": False}, silence_logs=logging.ERROR,
    )


@contextmanager
def _log_level(name: str, level: int) -> Iterator[None]:
    """The logger ``name`` at ``level`` for a while.

    The local scheduler runs in this process, and its INFO records reach the root logger's
    handlers (``bandit`` configures those) whatever ``silence_logs`` does to Dask's own.
    """
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _remote_client(address: str) -> Client:
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S)  # type: ignore[no-untyped-call]
    except (OSError, ValueError) as error:
        reason = str(error).replace("\n", " ")
        raise ClusterError(f"cannot connect to the Dask scheduler at {address!r}: "
                           f"{reason}") from error
    try:
        client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
    except TimeoutError as error:
        client.close()  # type: ignore[no-untyped-call]
        raise ClusterError(f"no Dask worker joined the scheduler at {address!r} within "
                           f"{WORKERS_TIMEOUT_S:g} s (start some with: dask worker "
                           f"{address})") from error
    return client


def check_versions(versions: Mapping[str, object], expected: str) -> None:
    """Refuse workers that lack this project or run another version of it.

    ``versions`` maps each worker's address to the version it reports (``client.run`` of
    ``importlib.metadata.version``) or to the exception it raised.
    """
    if not versions:
        raise ClusterError("the Dask cluster has no workers")
    for worker, version in sorted(versions.items()):
        if version == expected:
            continue
        found = (f"runs {DISTRIBUTION} {version}" if isinstance(version, str)
                 else f"cannot import {DISTRIBUTION} ({type(version).__name__}: {version})")
        raise ClusterError(f"worker {worker} {found}; this client runs {expected}: install "
                           f"the same version on every worker (pip install "
                           f"{DISTRIBUTION}=={expected})")


def worker_threads(client: Client) -> dict[str, int]:
    """Each worker's address and its number of threads."""
    threads: dict[str, int] = client.nthreads()  # type: ignore[no-untyped-call]
    return threads


def chunks(reps: int, size: int) -> list[tuple[int, int]]:
    """Contiguous ``(start, stop)`` ranges of at most ``size`` covering 0 .. reps-1 in order."""
    if reps < 1 or size < 1:
        raise ValueError(f"reps and size must be >= 1, got {reps!r} and {size!r}")
    return [(start, min(start + size, reps)) for start in range(0, reps, size)]


def chunk_size(reps: int, policies: int, horizon: int, threads: int) -> int:
    """Replications per task: about ``TASKS_PER_THREAD`` tasks per worker thread over the whole
    run, each worth at least ``MIN_TASK_PULLS`` pulls."""
    per_policy = math.ceil(TASKS_PER_THREAD * max(threads, 1) / policies)
    size = max(math.ceil(reps / per_policy), math.ceil(MIN_TASK_PULLS / horizon))
    return max(1, min(size, reps))


def simulate_policies(
    client: Client,
    policies: Sequence[PolicySpec],
    environment: Environment,
    *,
    horizon: int,
    reps: int,
    seed: int,
    batch: int = 1,
    delay: float = 0.0,
    checkpoints: npt.ArrayLike | None = None,
    size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[SimulationResult]:
    """:func:`simulations.engine.simulate` of every policy, on the cluster of ``client``.

    The results equal the engine's array for array, bit for bit. Replications are cut into
    tasks of ``size`` (default: :func:`chunk_size`); ``progress`` is called with the number of
    replications of each finished task. A result's ``seconds`` is the wall time of the whole
    run shared out in proportion to the compute time of the policy's tasks, so the policies'
    times add up to the run's, as they do in sequential single-machine runs.
    """
    if not policies:
        raise ValueError("no policy to simulate")
    if isinstance(reps, bool) or int(reps) != reps or reps < 1:
        raise ValueError(f"reps must be an integer >= 1, got {reps!r}")
    options: dict[str, Any] = {"horizon": horizon, "seed": seed, "batch": batch,
                               "delay": delay, "checkpoints": checkpoints}
    # Empty chunks validate every argument here, before anything is sent.
    shells = [simulate_chunk(policy, environment, start=0, stop=0, **options)
              for policy in policies]
    threads = sum(worker_threads(client).values())
    if size is None:
        size = chunk_size(reps, len(policies), horizon, threads)
    results = [_allocate(shell, reps) for shell in shells]
    compute_seconds = [0.0] * len(policies)
    started = time.perf_counter()
    tasks: dict[Future[SimulationResult], tuple[int, int, int]] = {}
    for index, policy in enumerate(policies):
        for start, stop in chunks(reps, size):
            # PolicySpec holds a mappingproxy, which does not pickle: send its parts.
            future = client.submit(_run_chunk, policy.name, dict(policy.params), environment,
                                   start=start, stop=stop, pure=False, **options)
            tasks[future] = (index, start, stop)
    try:
        for future in as_completed(tasks):  # type: ignore[no-untyped-call]
            part: SimulationResult = future.result()
            index, start, stop = tasks[future]
            future.release()
            _write_rows(results[index], part, start, stop)
            compute_seconds[index] += part.seconds
            if progress is not None:
                progress(stop - start)
    except BaseException:
        client.cancel(list(tasks))  # type: ignore[no-untyped-call]
        raise
    wall = time.perf_counter() - started
    total = sum(compute_seconds) or 1.0
    return [SimulationResult(policy=r.policy, checkpoints=r.checkpoints,
                             pseudo_regret=r.pseudo_regret, regret=r.regret,
                             best_arm_rate=r.best_arm_rate, shares=r.shares, pulls=r.pulls,
                             seconds=wall * seconds / total)
            for r, seconds in zip(results, compute_seconds, strict=True)]


def _run_chunk(name: str, params: dict[str, float], environment: Environment, *, start: int,
               stop: int, **options: Any) -> SimulationResult:
    """One task, on a worker: one thread, since the worker runs one task per thread."""
    return simulate_chunk(PolicySpec(name, params), environment, start=start, stop=stop,
                          threads=1, **options)


def _allocate(shell: SimulationResult, reps: int) -> SimulationResult:
    """Zeroed arrays of ``reps`` rows, laid out as the engine lays out its own."""
    n_checkpoints, n_arms = shell.checkpoints.shape[0], shell.pulls.shape[1]
    return SimulationResult(policy=shell.policy, checkpoints=shell.checkpoints,
                            pseudo_regret=np.zeros((reps, n_checkpoints)),
                            regret=np.zeros((reps, n_checkpoints)),
                            best_arm_rate=np.zeros((reps, n_checkpoints)),
                            shares=np.zeros((reps, n_checkpoints, n_arms)),
                            pulls=np.zeros((reps, n_arms)), seconds=0.0)


def _write_rows(result: SimulationResult, part: SimulationResult, start: int,
                stop: int) -> None:
    if part.pseudo_regret.shape[0] != stop - start:
        raise RuntimeError(f"a task returned {part.pseudo_regret.shape[0]} replications for "
                           f"{start}..{stop - 1}")
    result.pseudo_regret[start:stop] = part.pseudo_regret
    result.regret[start:stop] = part.regret
    result.best_arm_rate[start:stop] = part.best_arm_rate
    result.shares[start:stop] = part.shares
    result.pulls[start:stop] = part.pulls
