"""Redis failures, translated at the boundary: what the caller should retry becomes
``StoreUnavailable`` (a 503 with Retry-After), with a message that says what happened."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from redis import exceptions as redis_errors
from redis.commands.core import AsyncScript

from bandit.errors import StoreUnavailable

T = TypeVar("T")

_RETRYABLE = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError,
              redis_errors.BusyLoadingError, redis_errors.ClusterError,
              redis_errors.TryAgainError, redis_errors.ClusterDownError,
              redis_errors.MasterDownError)


async def call(function: Callable[..., Awaitable[T]] | AsyncScript, *args: Any,
                **kwargs: Any) -> Any:
    with failures():
        return await function(*args, **kwargs)


@contextmanager
def failures() -> Iterator[None]:
    """Redis being unreachable (or a cluster shard failing over), inside the block, becomes
    ``StoreUnavailable``: a cluster pipeline already talks to Redis when it is entered."""
    try:
        yield
    except _RETRYABLE as error:
        raise translate(error) from error


def on_replica(error: Exception) -> bool:
    """A write refused because the node is a replica. Inside a script Redis reports it as a
    script error (a plain ResponseError naming READONLY), not as redis-py's ReadOnlyError."""
    return isinstance(error, redis_errors.ReadOnlyError) or (
        isinstance(error, redis_errors.ResponseError) and "-READONLY " in str(error))


def translate(error: Exception) -> Exception:
    """Redis failures the caller should retry become ``StoreUnavailable``; others stay."""
    if on_replica(error):
        return StoreUnavailable("Redis refused a write: the node is a replica (a failover in "
                                "progress, or a URL that names a replica); retry shortly")
    if isinstance(error, redis_errors.BusyLoadingError):
        return StoreUnavailable("Redis is loading its data set; retry shortly")
    if isinstance(error, (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)):
        if isinstance(error.__cause__, TimeoutError) and "No connection available" in str(error):
            return StoreUnavailable("every Redis connection of this process is busy (Redis is "
                                    "slow or unreachable, or the load is over capacity); "
                                    "retry shortly")
        return StoreUnavailable(f"Redis is unreachable: {error}")
    if isinstance(error, (redis_errors.ClusterError, redis_errors.TryAgainError,
                          redis_errors.ClusterDownError, redis_errors.MasterDownError)):
        return StoreUnavailable(f"the Redis Cluster is not serving this experiment's shard "
                                f"(a failover in progress?): {error}; retry shortly")
    return error
