"""Rate limits: per device / per user events per second (429 in Amplitude's shape), per API key requests."""

from __future__ import annotations

import httpx
import pytest

from collector.ratelimit import TokenBuckets
from eventpipe_core.metadata import MetadataStore
from eventpipe_core.settings import Settings
from tests.collector_support import collector_settings, collector_store, new_project, read_envelopes, serve

__all__ = ["collector_store"]

THROTTLED = "Too many requests for some devices and users"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_buckets_all_or_nothing_and_refill() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate=2, window_s=5, clock=clock)  # 10 events per bucket, +2/s
    assert buckets.acquire({"a": 10}) == {}
    assert buckets.acquire({"a": 1, "b": 3}) == {"a": 3}  # (10 - 0 + 1) / 5 -> 3 eps
    assert buckets.acquire({"b": 10}) == {}  # b was not charged by the refused request
    clock.now += 1.0  # +2 tokens
    assert buckets.acquire({"a": 3}) == {"a": 3}
    assert buckets.acquire({"a": 2}) == {}
    clock.now += 100
    assert buckets.acquire({"a": 10}) == {}  # never more than one window's worth
    assert buckets.acquire({"a": 1}) != {}


def test_token_buckets_refund() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate=1, window_s=10, clock=clock)
    assert buckets.acquire({"a": 10}) == {}
    buckets.refund({"a": 4, "unknown": 3})
    assert buckets.acquire({"a": 4}) == {}
    assert buckets.acquire({"a": 1}) == {"a": 2}
    buckets.refund({"a": 100})  # never above one window's worth
    assert buckets.acquire({"a": 11}) != {}


def test_token_buckets_forget_idle_keys() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate=1, window_s=1, max_keys=100, clock=clock)
    for i in range(100):
        buckets.acquire({i: 1})
    clock.now += 5  # all refilled
    buckets.acquire({"new": 1})
    assert len(buckets) == 1


@pytest.fixture(scope="module")
def limited(settings: Settings, collector_store: MetadataStore):
    # V2: 1 event/s per device and per user over 10 s (a bucket of 10); Batch: 100/s.
    cfg = collector_settings(settings, collector_v2_eps=1, collector_batch_eps=100, collector_eps_window_s=10,
                             collector_key_rps=1000)
    with serve(cfg, collector_store) as server:
        yield server


def _post(url: str, key: str, events: list[dict], path: str = "/2/httpapi") -> httpx.Response:
    return httpx.post(f"{url}{path}", json={"api_key": key, "events": events}, timeout=30)


def test_device_over_its_rate_gets_429_and_nothing_is_produced(limited, collector_store: MetadataStore,
                                                               settings: Settings) -> None:
    project, key = new_project(collector_store, "rl")
    burst = [{"event_type": "burst", "device_id": "dev-hot-1", "user_id": f"user-{i:05d}"} for i in range(10)]
    assert _post(limited.url, key, burst).status_code == 200

    mixed = [{"event_type": "late", "device_id": "dev-hot-1"}, {"event_type": "late", "device_id": "dev-cold-1"},
             {"event_type": "late", "device_id": "dev-hot-1"}]
    r = _post(limited.url, key, mixed)
    assert r.status_code == 429
    assert r.json() == {"code": 429, "error": THROTTLED, "eps_threshold": 1, "throttled_devices": {"dev-hot-1": 2},
                        "throttled_users": {}, "throttled_events": [0, 2]}
    # dev-cold-1 was not charged by the refused request: its whole bucket is still there.
    cold = [{"event_type": "cold", "device_id": "dev-cold-1"}] * 10
    assert _post(limited.url, key, cold).status_code == 200
    # The Batch API has its own, higher limit for the same device.
    assert _post(limited.url, key, [{"event_type": "batch", "device_id": "dev-hot-1"}] * 5, "/batch").status_code == 200

    found = read_envelopes(settings, lambda e: e["project"] == project, 25)
    kinds = sorted({env["event"]["event_type"] for _, env in found})
    assert kinds == ["batch", "burst", "cold"] and len(found) == 25  # nothing of the 429 request


def test_user_over_its_rate_across_devices(limited, collector_store: MetadataStore) -> None:
    _, key = new_project(collector_store, "rl")
    events = [{"event_type": "e", "user_id": "user-busy-1", "device_id": f"device-{i:03d}"} for i in range(11)]
    r = _post(limited.url, key, events)
    assert r.status_code == 429
    body = r.json()
    assert body["throttled_users"] == {"user-busy-1": 2} and body["throttled_devices"] == {}
    assert body["throttled_events"] == list(range(11))


def test_refill_lets_a_throttled_device_send_again(limited, collector_store: MetadataStore) -> None:
    import time

    _, key = new_project(collector_store, "rl")
    assert _post(limited.url, key, [{"event_type": "e", "device_id": "dev-refill"}] * 10).status_code == 200
    assert _post(limited.url, key, [{"event_type": "e", "device_id": "dev-refill"}]).status_code == 429
    time.sleep(1.1)  # one event per second comes back
    assert _post(limited.url, key, [{"event_type": "e", "device_id": "dev-refill"}]).status_code == 200


def test_api_key_request_rate(settings: Settings, collector_store: MetadataStore) -> None:
    _, key = new_project(collector_store, "rl")
    _, other = new_project(collector_store, "rl")
    cfg = collector_settings(settings, collector_key_rps=1, collector_eps_window_s=3)  # 3 requests per key
    with serve(cfg, collector_store) as server:
        ok = [_post(server.url, key, [{"event_type": "e", "device_id": f"device-{i}"}]).status_code for i in range(3)]
        assert ok == [200, 200, 200]
        events = [{"event_type": "e", "device_id": "device-x"}, {"event_type": "e", "device_id": "device-y"}]
        r = _post(server.url, key, events)
        assert r.status_code == 429
        assert r.json() == {"code": 429, "error": "Too many requests for this API key", "eps_threshold": 30,
                            "throttled_devices": {}, "throttled_users": {}, "throttled_events": [0, 1]}
        assert _post(server.url, other, events).status_code == 200  # per key
        metrics = httpx.get(f"{server.url}/metrics").text
    assert 'eventpipe_collector_events_throttled_total{endpoint="httpapi",limit="api_key"} 2.0' in metrics
    assert 'eventpipe_collector_requests_total{endpoint="httpapi",status="429"} 1.0' in metrics
