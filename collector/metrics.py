"""Prometheus metrics of one collector app (own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "CollectorMetrics"]


class CollectorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "eventpipe_collector_requests", "Ingestion requests by endpoint and answered status",
            ["endpoint", "status"], registry=self.registry,
        )
        self.events_accepted = Counter(
            "eventpipe_collector_events_accepted", "Events acknowledged by Kafka and answered 200",
            ["endpoint"], registry=self.registry,
        )
        self.events_rejected = Counter(
            "eventpipe_collector_events_rejected", "Events of requests answered 4xx/5xx, by reason",
            ["endpoint", "reason"], registry=self.registry,
        )
        self.events_throttled = Counter(
            "eventpipe_collector_events_throttled", "Events answered 429 because their device/user/key was over its rate",
            ["endpoint", "limit"], registry=self.registry,
        )
        self.plan_violations = Counter(
            "eventpipe_collector_plan_violations", "Events violating the tracking plan, by enforcement mode",
            ["mode"], registry=self.registry,
        )
        self.produce_latency = Histogram(
            "eventpipe_collector_produce_latency_seconds", "Time from send to the last acknowledgement of a request",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.request_latency = Histogram(
            "eventpipe_collector_request_latency_seconds", "Whole request handling time", ["endpoint"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )

        fine = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1)
        self.loop_lag = Histogram(
            "eventpipe_collector_loop_lag_seconds", "How late a 50 ms timer of the event loop fires (loop blocked)",
            registry=self.registry, buckets=fine,
        )
        self.gc_pause = Histogram(
            "eventpipe_collector_gc_pause_seconds", "Python garbage-collector pauses, by generation", ["generation"],
            registry=self.registry, buckets=fine,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
