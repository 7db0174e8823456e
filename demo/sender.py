"""Sending to the collector over HTTP (Amplitude Batch API) and poison records straight to Kafka.

Retries follow the official SDKs: 429 and 5xx/408 and connection errors re-send the same batch
after a back-off (the collector answers all-or-nothing, so a re-sent batch is never half
counted); 413 splits the batch; any other 4xx is a bug in what we send and stops the upload.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from demo.generator import MalformedRequest
from eventpipe_core.settings import Settings

RETRY_STATUSES = {408, 429, 500, 502, 503, 504}


class SendError(RuntimeError):
    """The collector refused events it should have accepted."""


@dataclass
class SendStats:
    requests: int = 0
    accepted: int = 0
    retries: int = 0
    throttled: int = 0
    accepted_at: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, events) per accepted batch


class Sender:
    """POSTs batches of events to ``{collector}/batch`` with one API key."""

    def __init__(self, collector_url: str, api_key: str, *, endpoint: str = "/batch", timeout: float = 60.0,
                 max_attempts: int = 12) -> None:
        self.url = collector_url.rstrip("/") + endpoint
        self.base = collector_url.rstrip("/")
        self.api_key = api_key
        self.max_attempts = max_attempts
        self.client = httpx.Client(timeout=timeout)
        self.stats = SendStats()

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, events: list[dict[str, Any]], on_batch: Callable[[int], None] | None = None,
             batch_size: int = 1000) -> SendStats:
        """Send every event (in order, ``batch_size`` per request); returns the running totals."""
        for i in range(0, len(events), batch_size):
            chunk = events[i : i + batch_size]
            self._send_batch(chunk)
            if on_batch is not None:
                on_batch(len(chunk))
        return self.stats

    def _send_batch(self, events: list[dict[str, Any]]) -> None:
        delay = 0.5
        for attempt in range(1, self.max_attempts + 1):
            try:
                resp = self.client.post(self.url, json={"api_key": self.api_key, "events": events})
            except httpx.TransportError as exc:
                if attempt == self.max_attempts:
                    raise SendError(f"collector unreachable at {self.url}: {exc}") from exc
                self.stats.retries += 1
                time.sleep(delay)
                delay = min(delay * 2, 10)
                continue
            self.stats.requests += 1
            if resp.status_code == 200:
                self.stats.accepted += len(events)
                self.stats.accepted_at.append((time.monotonic(), len(events)))
                return
            if resp.status_code == 413 and len(events) > 1:
                half = len(events) // 2
                self._send_batch(events[:half])
                self._send_batch(events[half:])
                return
            if resp.status_code in RETRY_STATUSES and attempt < self.max_attempts:
                self.stats.retries += 1
                self.stats.throttled += resp.status_code == 429
                time.sleep(delay)
                delay = min(delay * 2, 10)
                continue
            raise SendError(f"collector answered {resp.status_code}: {resp.text[:500]}")
        raise SendError(f"gave up after {self.max_attempts} attempts")

    def send_malformed(self, requests: Iterable[MalformedRequest]) -> tuple[int, int]:
        """Send requests the collector must refuse with 400; returns (requests, events) refused."""
        refused = events = 0
        for req in requests:
            body = req.body if req.bad_key else req.body.replace(b"$KEY", self.api_key.encode())
            resp = self.client.post(self.url, content=body, headers={"Content-Type": "application/json"})
            if resp.status_code != 400:
                raise SendError(f"malformed request ({req.description}) answered {resp.status_code}, not 400")
            refused += 1
            events += req.events
        return refused, events

    def collector_metrics(self) -> dict[str, float]:
        """The collector's Prometheus counters, summed by name and selected labels."""
        text = self.client.get(self.base + "/metrics").text
        return parse_prometheus(text)


def parse_prometheus(text: str) -> dict[str, float]:
    """``name{labels} value`` lines -> {"name{labels}": value} (comments skipped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


def rejected_from_metrics(metrics: dict[str, float]) -> tuple[int, int]:
    """(requests answered 400, events in them) as the collector counts them (throttling and 503 excluded)."""
    requests = sum(v for k, v in metrics.items() if k.startswith("eventpipe_collector_requests_total{")
                   and 'status="400"' in k)
    events = sum(v for k, v in metrics.items() if k.startswith("eventpipe_collector_events_rejected_total{")
                 and not any(f'reason="{r}"' in k for r in ("throttled", "throttled_key", "kafka_unavailable")))
    return int(requests), int(events)


def produce_poison(settings: Settings, records: list[bytes]) -> int:
    """Write records to the events topic as a broken producer would (bypassing the collector)."""
    from kafka import KafkaProducer

    from eventpipe_core.kafka_clients import producer_config

    producer = KafkaProducer(**producer_config(settings))
    try:
        futures = [producer.send(settings.kafka_events_topic, key=b"poison", value=r) for r in records]
        producer.flush(30)
        for f in futures:
            f.get(timeout=30)
    finally:
        producer.close(timeout=5)
    return len(records)


def dumps(events: list[dict[str, Any]]) -> str:
    return json.dumps(events, separators=(",", ":"))
