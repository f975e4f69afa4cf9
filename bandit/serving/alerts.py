"""Alerts: a webhook when the sample ratio fails, rewards stall or a winner is called.

Every ``alert_interval_s`` each process reads the stats of the experiments it serves that are
active (changed or served decisions lately; :meth:`Alerts.due`): the stats endpoint's own
answer, ``health.sample_ratio.ok``, ``health.rewards.stalled`` and ``winner``. It tells the
shared episode state (``bandit.store.episodes``) what it saw. An episode begins when a
condition starts to hold and ends when it clears; a winner call is an episode per winning arm.
The process whose observation begins an episode delivers its one alert; the others see it
under way. A check with nothing to judge yet (no history) changes no episode.

Delivery is at least once per episode while the episode lasts: a delivery that fails every
attempt is counted and tried again at the next check by whichever process makes it (a process
keeps checking an experiment whose alert it failed to send); a process that dies between the
receiver's answer and recording it makes another send it again (the body's ``episode`` id
tells a receiver it has seen it). An episode that ends before its alert got through is not
sent any more.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from bandit.errors import NotFound, StoreUnavailable
from bandit.serving.changes import cancelling
from bandit.serving.service import BanditService
from bandit.serving.webhooks import Webhooks
from bandit.settings import Settings, redacted_webhook
from bandit.store.episodes import AlertEpisodes, Claim

logger = logging.getLogger(__name__)

SAMPLE_RATIO, REWARDS_STALLED, WINNER = "sample_ratio", "rewards_stalled", "winner"
#: The subject of a condition that holds and has no subject of its own (a winner's is its arm).
HOLDS = "1"
#: Deliveries claimed per check (and made at once).
PARALLEL_DELIVERIES = 8
#: Experiments whose served counts are read in one round trip.
SERVED_CHUNK = 1000
#: Added to the longest a delivery can take: how long its lease outlives it.
LEASE_MARGIN_S = 10.0

#: Called with (kind, outcome) per webhook per delivery: ``delivered`` or ``failed``.
Count = Callable[[str, str], None]


def subjects(stats: dict[str, Any]) -> dict[str, str | None]:
    """What a stats answer says of each condition: the subject of one that holds, None for
    one that does not; a condition with nothing to judge yet is left out."""
    seen: dict[str, str | None] = {}
    health = stats.get("health") or {}
    sample_ratio = health.get("sample_ratio")
    if sample_ratio is not None:
        seen[SAMPLE_RATIO] = None if sample_ratio["ok"] else HOLDS
    rewards = health.get("rewards")
    if rewards is not None:
        seen[REWARDS_STALLED] = HOLDS if rewards["stalled"] else None
    winner = stats.get("winner")
    seen[WINNER] = None if winner is None else str(winner["arm"])
    return seen


def payload(kind: str, stats: dict[str, Any], claim: Claim, *, public_url: str | None,
            now: float) -> dict[str, Any]:
    """The alert's JSON: Slack shows ``text`` and ignores the other fields."""
    experiment = stats["experiment"]
    details = {SAMPLE_RATIO: stats["health"]["sample_ratio"],
               REWARDS_STALLED: stats["health"]["rewards"], WINNER: stats["winner"]}[kind]
    text = _text(kind, experiment, details)
    dashboard = None
    if public_url is not None:
        dashboard = f"{public_url.rstrip('/')}/#/exp/{experiment}"
        text += f"\n<{dashboard}|Dashboard>"
    return {"text": text, "experiment": experiment, "kind": kind, "episode": claim.episode,
            "started_at": claim.since, "sent_at": now, "details": details,
            "dashboard": dashboard}


#: Per kind: the headline, and the figures of ``details`` quoted after it (label, field,
#: format). Only the fields present are quoted: the health checks' answers may grow or change,
#: and an alert must never fail for a missing number.
_TEXTS: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    SAMPLE_RATIO: ("Sample ratio mismatch in experiment *{experiment}*: decisions served per "
                   "arm are not what the allocation promised",
                   [("decisions", "decisions", "{:,}"), ("observed", "observed", "{}"),
                    ("expected", "expected", "{}"), ("chi-square", "chi2", "{:.4g}"),
                    ("dof", "dof", "{}"), ("p", "p_value", "{:.3g}")]),
    REWARDS_STALLED: ("Rewards stalled in experiment *{experiment}*: decisions are served, no "
                      "new reward arrives",
                      [("quiet for", "quiet_for_s", "{:,.0f} s"),
                       ("decisions since", "decisions_since", "{:,}"),
                       ("observations", "observations", "{:,.0f}")]),
    WINNER: ("Winner called in experiment *{experiment}*: arm *{arm}*",
             [("P(best)", "p_best", "{:.4f}"), ("threshold", "threshold", "{:g}"),
              ("expected loss", "expected_loss", "{:.3g}"), ("max loss", "max_loss", "{:.3g}")]),
}


def _text(kind: str, experiment: str, details: dict[str, Any]) -> str:
    headline, quoted = _TEXTS[kind]
    figures = []
    for label, field, form in quoted:
        try:
            figures.append(f"{label} {form.format(details[field])}")
        except (KeyError, TypeError, ValueError):
            continue
    text = headline.format(experiment=experiment, arm=details.get("arm"))
    return f"{text} ({', '.join(figures)})." if figures else f"{text}."


class Alerts:
    """The periodic check of one process, and the deliveries it claims."""

    def __init__(self, service: BanditService, settings: Settings, count: Count) -> None:
        self._service = service
        self._settings = settings
        self._count = count
        self._episodes = AlertEpisodes(service.store.client, settings.key_prefix)
        self._webhooks = Webhooks.from_settings(settings)
        self._lease_s = self._webhooks.longest_delivery_s * len(
            self._webhooks.targets) + LEASE_MARGIN_S
        # A change shows in the health checks once the next history sample lands (within 1.5
        # intervals): an experiment is checked until a while after its last sign of activity.
        self._linger_s = 2 * settings.history_interval_s + 2 * settings.alert_interval_s
        #: Experiment id -> its snapshot's state and its served total, as last seen.
        self._seen: dict[str, tuple[int, int, float, int]] = {}
        #: Experiment id -> until when (monotonic) it is checked.
        self._watched: dict[str, float] = {}

    async def due(self) -> list[str]:
        """The cached experiments to check: those that changed, or were served decisions by
        any process, lately, and those with an alert to send still.

        Only those: checking reads the stats, which marks an experiment used, and would keep
        every experiment in the cache for good (one round trip per 1,000 experiments).
        """
        snapshots = [s for s in self._service.cache.snapshots() if not s.experiment.archived]
        now = time.monotonic()
        for start in range(0, len(snapshots), SERVED_CHUNK):
            chunk = snapshots[start:start + SERVED_CHUNK]
            served = await self._service.store.served([s.experiment.id for s in chunk])
            for snapshot, counts in zip(chunk, served, strict=True):
                experiment_id = snapshot.experiment.id
                state = (snapshot.revision, snapshot.experiment.version, snapshot.server_time,
                         sum(counts.values()))
                if self._seen.get(experiment_id) != state:
                    self._seen[experiment_id] = state
                    self._watched[experiment_id] = now + self._linger_s
        cached = {s.experiment.id for s in snapshots}
        self._seen = {k: v for k, v in self._seen.items() if k in cached}
        self._watched = {k: t for k, t in self._watched.items() if k in cached and t >= now}
        return list(self._watched)

    def _keep_watching(self, experiment_id: str) -> None:
        """Check it again until a while from now (an alert of it is still to be sent)."""
        self._watched[experiment_id] = time.monotonic() + self._linger_s

    async def check(self, session: aiohttp.ClientSession) -> None:
        """Judge the experiments :meth:`due` names once, and deliver what this claims.

        Deliveries start as they are claimed (a claim's lease counts from then), at most
        ``PARALLEL_DELIVERIES`` per check: past that, observations still begin and end
        episodes but claim none, and the next checks deliver them.
        """
        targets = list(self._webhooks.targets)
        deliveries: list[asyncio.Task[None]] = []
        try:
            for experiment_id in await self.due():
                try:
                    stats = await self._service.stats(experiment_id)
                except NotFound:
                    continue
                for kind, subject in subjects(stats).items():
                    claiming = len(deliveries) < PARALLEL_DELIVERIES
                    observed = await self._episodes.observe(
                        experiment_id, kind, subject, secrets.token_hex(8), self._lease_s,
                        targets if claiming else [])
                    if observed.ended is not None:
                        logger.info("alert episode %s (%s of %s) ended", observed.ended, kind,
                                    experiment_id)
                    if observed.claim is not None:
                        if observed.claim.began:
                            logger.info("alert episode %s (%s of %s) began",
                                        observed.claim.episode, kind, experiment_id)
                        deliveries.append(asyncio.create_task(
                            self._deliver(session, kind, stats, observed.claim)))
                    elif subject is not None and not claiming:
                        self._keep_watching(experiment_id)
        finally:
            for outcome in await asyncio.gather(*deliveries, return_exceptions=True):
                if isinstance(outcome, Exception):
                    logger.error("alert delivery failed", exc_info=outcome)

    async def _deliver(self, session: aiohttp.ClientSession, kind: str,
                       stats: dict[str, Any], claim: Claim) -> None:
        experiment_id = stats["experiment"]
        body = orjson.dumps(payload(kind, stats, claim, public_url=self._settings.public_url,
                                    now=time.time()))
        delivered = []
        for target in claim.targets:
            url = self._webhooks.targets[target]
            if await self._webhooks.post(session, url, body):
                delivered.append(target)
                self._count(kind, "delivered")
            else:
                self._count(kind, "failed")
                self._keep_watching(experiment_id)
                logger.error("alert %s (%s of %s) not delivered to %s; tried again at the "
                             "next check while the episode lasts", claim.episode, kind,
                             experiment_id, redacted_webhook(url))
        try:
            await self._episodes.delivered(experiment_id, kind, claim.episode, delivered)
        except StoreUnavailable as error:
            # The lease runs out: the next check after it sends the alert again.
            logger.warning("alert %s: delivery not recorded: %s", claim.episode, error)

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while not cancelling():
                await asyncio.sleep(self._settings.alert_interval_s)
                try:
                    await self.check(session)
                except StoreUnavailable as error:
                    logger.warning("alert check skipped: %s", error)
                except Exception:
                    # A webhook or an answer nobody foresaw must not end the checks for good.
                    logger.exception("alert check failed")
