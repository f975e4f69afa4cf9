"""A client for ranking services: decisions that never block them, rewards that are never lost.

::

    from bandit_client import BanditClient

    client = BanditClient("http://127.0.0.1:8080", fallbacks={"homepage-hero": "control"})
    decision = client.decide("homepage-hero", unit="user-42")  # at most 0.2 s; in an
    render(decision.arm)                                        # outage: "control"
    client.reward("homepage-hero", decision.arm, 1.0, decision_id=decision.decision_id)

``AsyncBanditClient`` is the same for asyncio (``await client.decide(...)``,
``async with``). Decisions have a short total timeout and return the caller's fallback
(``Decision.fallback``) when the service cannot answer; a refused request (4xx) raises.
``reward()`` only buffers: a background sender delivers batches, retrying with the same
event ids, which the service counts once.
"""

from typing import TYPE_CHECKING, Any

from bandit_client._common import DecisionOptions
from bandit_client._decisions import Decision
from bandit_client._events import Rejected
from bandit_client._protocol import ClientStats
from bandit_client._sync import BanditClient
from bandit_client.errors import (
    AuthError,
    BanditClientError,
    BufferFull,
    ClientClosed,
    Conflict,
    InvalidRequest,
    NotFound,
    RequestError,
    Unavailable,
)

if TYPE_CHECKING:
    from bandit_client._async import AsyncBanditClient


def __getattr__(name: str) -> Any:
    # Imported on first use: a sync-only program never loads aiohttp.
    if name == "AsyncBanditClient":
        from bandit_client._async import AsyncBanditClient

        return AsyncBanditClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AsyncBanditClient",
    "AuthError",
    "BanditClient",
    "BanditClientError",
    "BufferFull",
    "ClientClosed",
    "ClientStats",
    "Conflict",
    "Decision",
    "DecisionOptions",
    "InvalidRequest",
    "NotFound",
    "Rejected",
    "RequestError",
    "Unavailable",
]
