"""What a process checks in Redis before it starts serving."""

from __future__ import annotations

import logging

from bandit.errors import StoreUnavailable
from bandit.settings import Settings, SettingsError
from bandit.store.keys import dedup_window
from bandit.store.redis_store import RedisStore

logger = logging.getLogger(__name__)


async def check_deployment(settings: Settings) -> None:
    """Before a process starts serving: refuse a dedup window that differs from the one the
    deployment's other processes use (``SettingsError``). When Redis cannot be reached the
    check is skipped (the process starts and answers 503 until Redis is back)."""
    store = RedisStore.from_settings(settings)
    try:
        agreed = await store.agree_dedup_window(settings.dedup_window_s)
        moved = await store.merge_legacy_registry()
        if moved:
            logger.info("merged %d experiment ids of an earlier version into the index", moved)
    except StoreUnavailable as error:
        logger.warning("could not check the shared dedup window: %s", error)
        return
    finally:
        await store.close()
    if agreed != float(settings.dedup_window_s):
        raise SettingsError(
            f"dedup_window_s: {settings.dedup_window_s:g} s, but this deployment's processes "
            f"use {agreed:g} s (recorded in Redis under {dedup_window(settings.key_prefix)!r}): "
            "processes with different windows would count a resent event twice. Use "
            f"{agreed:g}, or stop every process and delete that key to change it (the event "
            "ids remembered so far are then forgotten).")
