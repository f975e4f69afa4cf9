"""Prometheus metrics of one service process (each worker exposes its own)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """The metrics, with their labelled children cached: ``labels()`` is too slow per request."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, ...], Any] = {}
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "bandit_request_seconds", "HTTP request latency by route and status",
            ["route", "status"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
        )
        self.decisions = Counter("bandit_decisions_total", "Decisions served",
                                 ["experiment"], registry=self.registry)
        self.events = Counter("bandit_events_total", "Reward events by outcome",
                              ["outcome"], registry=self.registry)
        self.cache_age = Gauge("bandit_cache_age_seconds",
                               "Seconds since this process last confirmed its cache with Redis",
                               registry=self.registry)
        self.stale = Counter("bandit_stale_decisions_total",
                             "Decisions served from a cache older than the stale limit",
                             registry=self.registry)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        key = ("request", route, str(status))
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(route, str(status))
        child.observe(seconds)

    def count_decisions(self, experiment: str, decisions: int) -> None:
        key = ("decisions", experiment)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.decisions.labels(experiment)
        child.inc(decisions)
