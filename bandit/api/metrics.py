"""Prometheus metrics of one service process (each worker exposes its own).

The per-request metrics (latency histogram, decisions served) are plain Python counters
turned into Prometheus families only when scraped: ``prometheus_client``'s ``observe`` and
``inc`` take a lock and walk the buckets on every call, a tenth of a small request's time.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

#: Upper bounds of the latency histogram buckets, in seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class _Latency:
    __slots__ = ("buckets", "count", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.count = 0
        self.total = 0.0


class Metrics:
    def __init__(self, cache_age: Callable[[], float] = lambda: 0.0) -> None:
        self.registry = CollectorRegistry()
        self._latency: defaultdict[tuple[str, int], _Latency] = defaultdict(_Latency)
        self._decisions: defaultdict[str, int] = defaultdict(int)
        #: Units assigned per layer and reason (``assigned``, ``targeting``, ...).
        self._assignments: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._stale = 0
        #: Reward events answered accepted, duplicate and rejected.
        self._events = [0, 0, 0]
        self.cache_age = cache_age
        #: Script calls made for groups of reward requests, and the requests they answered
        #: (``bandit.serving.groups``).
        self.event_groups: Callable[[], tuple[int, int]] = lambda: (0, 0)
        #: The decision log of this process: records written, dropped, waiting.
        self.log_counts: Callable[[], tuple[int, int, int]] = lambda: (0, 0, 0)
        self.alerts = Counter("bandit_alerts_total",
                              "Alert deliveries to one webhook by kind and outcome (delivered, "
                              "or failed after every attempt of one check)",
                              ["kind", "outcome"], registry=self.registry)
        self.registry.register(self)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        latency = self._latency[(route, status)]
        latency.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        latency.count += 1
        latency.total += seconds

    def count_decisions(self, experiment: str, decisions: int, *, stale: bool) -> None:
        self._decisions[experiment] += decisions
        if stale:
            self._stale += decisions

    def count_assignments(self, results: list[dict[str, Any]], *, stale: bool) -> None:
        """An assign request's answers: each unit's entry per layer, and its decisions."""
        assignments, decided = self._assignments, self._decisions
        served = 0
        for result in results:
            for entry in result["assignments"]:
                assignments[entry["layer"], entry["reason"]] += 1
                if entry["experiment"] is not None:
                    decided[entry["experiment"]] += 1
                    served += 1
        if stale:
            self._stale += served

    def count_events(self, accepted: int, duplicates: int, rejected: int) -> None:
        events = self._events
        events[0] += accepted
        events[1] += duplicates
        events[2] += rejected

    def count_alert(self, kind: str, outcome: str) -> None:
        self.alerts.labels(kind=kind, outcome=outcome).inc()

    def collect(self) -> Iterator[Metric]:
        """Called by the registry at scrape time."""
        histogram = HistogramMetricFamily("bandit_request_seconds",
                                          "HTTP request latency by route and status",
                                          labels=["route", "status"])
        for (route, status), latency in sorted(self._latency.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), latency.buckets,
                                    strict=True):
                cumulative += count
                buckets.append((str(bound) if bound != float("inf") else "+Inf", cumulative))
            histogram.add_metric([route, str(status)], buckets, latency.total)
        yield histogram
        decisions = CounterMetricFamily("bandit_decisions", "Decisions served",
                                        labels=["experiment"])
        for experiment, count in sorted(self._decisions.items()):
            decisions.add_metric([experiment], count)
        yield decisions
        assignments = CounterMetricFamily(
            "bandit_assignments", "Units assigned in a layer (POST /v1/assign), by reason: "
            "assigned to an experiment, or the default (unassigned, targeting, archived, "
            "missing)", labels=["layer", "reason"])
        for (layer, reason), count in sorted(self._assignments.items()):
            assignments.add_metric([layer, reason], count)
        yield assignments
        events = CounterMetricFamily("bandit_events", "Reward events by outcome",
                                     labels=["outcome"])
        for outcome, count in zip(("accepted", "duplicate", "rejected"), self._events,
                                  strict=True):
            events.add_metric([outcome], count)
        yield events
        calls, requests = self.event_groups()
        yield CounterMetricFamily("bandit_event_group_calls",
                                  "Script calls that applied a group of small reward requests "
                                  "(requests for one experiment that arrived together)",
                                  value=calls)
        yield CounterMetricFamily("bandit_event_group_requests",
                                  "Reward requests applied in a group's script call",
                                  value=requests)
        yield CounterMetricFamily("bandit_stale_decisions",
                                  "Decisions served from a cache older than the stale limit",
                                  value=self._stale)
        yield GaugeMetricFamily("bandit_cache_age_seconds",
                                "Seconds since this process last confirmed its cache with Redis",
                                value=self.cache_age())
        written, dropped, buffered = self.log_counts()
        yield CounterMetricFamily("bandit_decision_log_written",
                                  "Decision records this process appended to decision logs",
                                  value=written)
        yield CounterMetricFamily("bandit_decision_log_dropped",
                                  "Decision records this process dropped, its buffer full while "
                                  "Redis was slow or unreachable", value=dropped)
        yield GaugeMetricFamily("bandit_decision_log_buffered",
                                "Decision records waiting in this process for the next flush",
                                value=buffered)
