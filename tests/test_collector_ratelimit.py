"""Rate limits: per device / per user events per second (429 in Amplitude's shape), per API key requests."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from collector.ratelimit import TokenBuckets
from eventpipe_core.metadata import MetadataStore
from eventpipe_core.settings import Settings
from tests.collector_support import collector_settings, collector_store, new_project, read_envelopes, serve
from tests.redis_support import REDIS_URL, scratch_prefix

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
    cfg = collector_settings(settings, collector_key_rps=0.1, collector_eps_window_s=30)  # 3 requests per key, slow refill
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


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A unique key prefix in the shared Redis; its keys are deleted afterwards."""
    yield from scratch_prefix("collector")


def test_redis_buckets_match_the_local_ones(redis_prefix: str) -> None:
    """Same answers as TokenBuckets for the same demands (all-or-nothing, the rate of the keys over)."""
    import asyncio

    import redis.asyncio as aioredis

    from collector.ratelimit import RedisTokenBuckets

    async def run() -> list[dict]:
        client = aioredis.from_url(REDIS_URL)
        shared = RedisTokenBuckets(client, "t", rate=1, window_s=100, prefix=redis_prefix)  # 100 tokens, slow refill
        local = TokenBuckets(rate=1, window_s=100)
        answers = []
        for demand in ({"a": 60}, {"a": 30, "b": 50}, {"a": 50, "b": 10}, {"b": 100}, {"b": 1}):
            answers.append((await shared.acquire(demand), local.acquire(demand)))
        await shared.refund({"a": 50})
        local.refund({"a": 50})
        answers.append((await shared.acquire({"a": 55}), local.acquire({"a": 55})))
        await client.aclose()
        return answers

    answers = asyncio.run(run())
    assert [s for s, _ in answers] == [loc for _, loc in answers]
    assert answers[2][0] == {"a": 2} and answers[3][0] == {"b": 2} and answers[4][0] == {}


def test_limits_are_shared_across_workers_through_redis(
    settings: Settings, collector_store: MetadataStore, redis_prefix: str,
) -> None:
    """Two collector apps (as two workers) with REDIS_URL: a device's budget is spent once overall."""
    _, key = new_project(collector_store, "rl")
    cfg = collector_settings(settings, collector_v2_eps=1, collector_eps_window_s=10, redis_url=REDIS_URL,
                             collector_redis_prefix=redis_prefix)  # 10 events per device
    events = [{"event_type": "e", "device_id": "dev-shared"}] * 6
    with serve(cfg, collector_store) as a, serve(cfg, collector_store) as b:
        assert _post(a.url, key, events).status_code == 200
        r = _post(b.url, key, events)
        assert r.status_code == 429 and r.json()["throttled_devices"] == {"dev-shared": 2}
        assert _post(b.url, key, events[:4]).status_code == 200
    # without Redis each worker has its own budget (documented)
    local = collector_settings(settings, collector_v2_eps=1, collector_eps_window_s=10)
    with serve(local, collector_store) as a, serve(local, collector_store) as b:
        assert _post(a.url, key, events).status_code == 200
        assert _post(b.url, key, events).status_code == 200
