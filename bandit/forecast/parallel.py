"""Replications on a thread pool: the replication loop releases the GIL, so threads scale.

Both the advisor's forecast and the simulator run their replications here. Each replication
writes its own rows of preallocated arrays and draws from its own generator, so the results
do not depend on the number of threads nor on the order replications finish in.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed

__all__ = ["run_replications"]


def run_replications(replicate: Callable[[int], None], reps: int, threads: int | None,
                     progress: Callable[[int], None] | None) -> None:
    """``replicate(i)`` for i in 0 .. reps-1 on up to ``threads`` threads (default: all cores).

    Each replication writes its own rows, so the order does not matter. ``progress`` is called
    from this thread with 1 per finished replication; a failure cancels the ones not started.
    """
    workers = min(threads or os.cpu_count() or 1, reps)
    if workers == 1:
        for i in range(reps):
            replicate(i)
            if progress is not None:
                progress(1)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(replicate, i) for i in range(reps)]
        try:
            for future in as_completed(futures):
                future.result()
                if progress is not None:
                    progress(1)
        except BaseException:
            for future in futures:
                future.cancel()
            raise

