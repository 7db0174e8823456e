"""Kafka outages: the collector answers 503 (retryable), never 200 for events that were not written,
and recovers by itself when the broker is back.

Uses its own broker (not the session's) with S3 storage on the moto server, so the log survives the
broker restart and the test can check afterwards exactly which events were written.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from embedded.broker import EmbeddedBroker, ensure_topics, free_port
from eventpipe_core.lake_store import s3_client
from eventpipe_core.metadata import MetadataStore
from eventpipe_core.settings import Settings, load_settings
from tests.collector_support import collector_settings, collector_store, event, new_project, read_envelopes, serve
from tests.conftest import AWS_TEST_KEYS

__all__ = ["collector_store"]

UNAVAILABLE = {"code": 503, "error": "Service unavailable: events were not written, retry"}


def _post(url: str, key: str, marker: str, n: int = 3) -> httpx.Response:
    events = [event(i, event_type=marker, time=1_767_225_600_000 + i) for i in range(n)]
    return httpx.post(f"{url}/2/httpapi", json={"api_key": key, "events": events}, timeout=60)


def _until_ok(url: str, key: str, marker: str, timeout: float = 60) -> tuple[httpx.Response, int]:
    """Post the same events until a 200 comes back, as an SDK retries (the producer reconnects on
    its own); count the 503s before it."""
    deadline, failures = time.monotonic() + timeout, 0
    while True:
        r = _post(url, key, marker)
        if r.status_code == 200 or time.monotonic() > deadline:
            return r, failures
        assert (r.status_code, r.json()) == (503, UNAVAILABLE)
        failures += 1
        time.sleep(0.5)


def test_kafka_down_503_and_recovery(settings: Settings, collector_store: MetadataStore, s3_server: str, tmp_path: Any) -> None:
    bucket = f"broker-{uuid.uuid4().hex[:8]}"
    s3_client(load_settings(aws_endpoint_url=s3_server, **AWS_TEST_KEYS)).create_bucket(Bucket=bucket)
    broker = EmbeddedBroker(
        host="127.0.0.1", port=free_port(), storage_url=f"s3://{bucket}/", log_path=tmp_path / "broker.log",
        s3_endpoint=s3_server, aws_access_key_id="testing", aws_secret_access_key="testing",
    )
    # Each device may send 3 events per 300 s: only the 2 accepted requests may count against it —
    # requests answered 503 are refunded (without that, the retries here would be answered 429).
    cfg = collector_settings(settings, kafka_bootstrap_servers=broker.bootstrap, collector_produce_timeout_s=3,
                             collector_v2_eps=0.01, collector_eps_window_s=300)
    project, key = new_project(collector_store, "down")
    accepted: list[str] = []  # markers of requests answered 200
    refused: list[str] = []  # markers of requests answered 503
    try:
        with serve(cfg, collector_store) as api:
            # 1. The collector starts without Kafka: not ready, and uploads get 503, not 200.
            assert httpx.get(f"{api.url}/readyz", timeout=10).status_code == 503
            r = _post(api.url, key, "before-broker")
            assert (r.status_code, r.json()) == (503, UNAVAILABLE)
            refused.append("before-broker")

            broker.start()
            ensure_topics(cfg, broker.bootstrap)
            r, _ = _until_ok(api.url, key, "up-1")
            assert r.status_code == 200, r.text
            accepted.append("up-1")
            assert httpx.get(f"{api.url}/readyz", timeout=10).status_code == 200

            # 2. Broker stops mid-run: 503 within the produce timeout, readiness fails.
            broker.stop()
            t0 = time.monotonic()
            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(_post, api.url, key, "while-down")
                # While that request waits for Kafka, the event loop keeps answering.
                time.sleep(0.3)
                for _ in range(5):
                    t_h = time.monotonic()
                    assert httpx.get(f"{api.url}/healthz", timeout=5).status_code == 200
                    assert time.monotonic() - t_h < 0.5
                assert not pending.done()
                r = pending.result()
            assert (r.status_code, r.json()) == (503, UNAVAILABLE)
            assert time.monotonic() - t0 < 3 + 2.5
            refused.append("while-down")
            assert httpx.get(f"{api.url}/readyz", timeout=10).status_code == 503
            time.sleep(3.5)  # longer than the delivery timeout: the refused records expire in the producer

            # 3. Broker back (same port, same storage): requests succeed again without a collector restart.
            broker.start()
            ensure_topics(cfg, broker.bootstrap)
            r, _ = _until_ok(api.url, key, "up-2")
            assert r.status_code == 200, r.text
            accepted.append("up-2")
            assert httpx.get(f"{api.url}/readyz", timeout=10).status_code == 200
            metrics = httpx.get(f"{api.url}/metrics").text
            assert 'eventpipe_collector_requests_total{endpoint="httpapi",status="503"}' in metrics
            assert 'reason="kafka_unavailable"' in metrics

        found = read_envelopes(cfg, lambda e: e["project"] == project, 3 * len(accepted), bootstrap=broker.bootstrap)
    finally:
        broker.stop()
    ids: dict[str, set[str]] = {}
    users: dict[str, set[str]] = {}
    for _, env in found:
        ids.setdefault(env["event"]["event_type"], set()).add(env["event"]["insert_id"])
        users.setdefault(env["event"]["event_type"], set()).add(env["event"]["user_id"])
    # Every event answered 200 is in Kafka. A 503'd attempt that Kafka wrote in part anyway (acks
    # lost to the timeout) left copies with the same insert_id only: downstream drops them.
    assert {m: len(ids.get(m, ())) for m in accepted} == {m: 3 for m in accepted}
    assert {m: users.get(m) for m in accepted} == {m: {"user-00000", "user-00001", "user-00002"} for m in accepted}
    # Events of requests refused while the broker was down never showed up (they expired in the producer).
    assert not any(m in ids for m in refused), sorted(ids)
