"""The official `amplitude-analytics` SDK, pointed at the collector with ``Config(server_url=…)``.

Everything goes over a real HTTP socket to uvicorn, and through the SDK's own response handling
(amplitude/processor.py): it drops the events our 400 lists, re-sends the others, and re-schedules
the events our 429 lists 30 s later.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import httpx
import pytest
from amplitude import Amplitude, BaseEvent, Config, EventOptions, Identify, Revenue
from amplitude.storage import InMemoryStorage, InMemoryStorageProvider

from eventpipe_core.metadata import MetadataStore
from eventpipe_core.settings import Settings
from tests.collector_support import collector_settings, collector_store, new_project, read_envelopes, serve

__all__ = ["collector_store"]


class Recorder:
    """The SDK's per-event callback: (event, code, message) of every event it settles."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, int, str]] = []
        self.lock = threading.Lock()

    def __call__(self, event: Any, code: int, message: str | None = None) -> None:
        with self.lock:
            self.calls.append((event, code, message or ""))

    def codes(self) -> dict[str, int]:
        with self.lock:
            return {e.user_id: c for e, c, _ in self.calls}

    def wait(self, n: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.calls) < n and time.monotonic() < deadline:
            time.sleep(0.05)


class KeptStorage(InMemoryStorageProvider):
    """The SDK's own in-memory storage, kept reachable so the test can look at scheduled retries."""

    def __init__(self) -> None:
        self.storage: InMemoryStorage | None = None

    def get_storage(self) -> InMemoryStorage:
        self.storage = InMemoryStorage()
        return self.storage


def sdk_client(url: str, key: str, recorder: Recorder, **config: Any) -> Amplitude:
    # A short flush interval: the SDK's own background loop sends its re-tries quickly.
    cfg = Config(server_url=url, flush_interval_millis=200, flush_queue_size=100, callback=recorder, **config)
    return Amplitude(key, cfg)


def flush(client: Amplitude) -> None:
    """Send what the SDK holds now and wait for that request's answer to be processed."""
    for future in client.flush():
        if future is not None:
            future.result(30)


@pytest.fixture(scope="module")
def api(settings: Settings, collector_store: MetadataStore):
    with serve(collector_settings(settings), collector_store) as server:
        yield server


def test_sdk_track_identify_revenue_arrive_in_kafka(api, collector_store: MetadataStore, settings: Settings) -> None:
    project, key = new_project(collector_store, "sdk")
    rec = Recorder()
    client = sdk_client(f"{api.url}/2/httpapi", key, rec)
    try:
        client.track(BaseEvent("Song Played", user_id="sdk-user-1", device_id="sdk-device-1",
                               event_properties={"title": "Blue", "seconds": 215}, platform="python"))
        client.identify(Identify().set("plan", "pro").add("logins", 1), EventOptions(user_id="sdk-user-1"))
        client.revenue(Revenue(price=9.99, quantity=2, product_id="sku-42", revenue_type="purchase"),
                       EventOptions(user_id="sdk-user-1", device_id="sdk-device-1"))
        flush(client)
        rec.wait(3)
    finally:
        client.shutdown()
    assert [c for _, c, _ in rec.calls] == [200, 200, 200], rec.calls

    found = {env["event"]["event_type"]: (k, env) for k, env in read_envelopes(settings, lambda e: e["project"] == project, 3)}
    assert set(found) == {"Song Played", "$identify", "revenue_amount"}
    key_tp, played = found["Song Played"]
    assert key_tp == b"sdk-device-1"
    ev = played["event"]
    assert ev["user_id"] == "sdk-user-1" and ev["platform"] == "python"
    assert ev["event_properties"] == {"title": "Blue", "seconds": 215}
    assert ev["library"].startswith("amplitude-python/")
    assert isinstance(ev["time"], int) and ev["insert_id"]
    ident = found["$identify"][1]["event"]
    assert ident["user_properties"] == {"$set": {"plan": "pro"}, "$add": {"logins": 1}}
    rev = found["revenue_amount"][1]["event"]["event_properties"]
    assert rev["$price"] == 9.99 and rev["$quantity"] == 2 and rev["$productId"] == "sku-42"
    assert rev["$revenueType"] == "purchase"


def test_sdk_batch_endpoint_and_min_id_length(api, collector_store: MetadataStore, settings: Settings) -> None:
    project, key = new_project(collector_store, "sdk")
    rec = Recorder()
    client = sdk_client(f"{api.url}/batch", key, rec, use_batch=True, min_id_length=3)
    try:
        client.track(BaseEvent("short id", user_id="abc"))  # 3 chars: valid only with options.min_id_length
        flush(client)
        rec.wait(1)
    finally:
        client.shutdown()
    assert rec.codes() == {"abc": 200}
    assert len(read_envelopes(settings, lambda e: e["project"] == project, 1)) == 1


def test_sdk_drops_events_our_400_lists_and_resends_the_rest(api, collector_store: MetadataStore, settings: Settings) -> None:
    project, key = new_project(collector_store, "sdk")
    rec = Recorder()
    client = sdk_client(f"{api.url}/2/httpapi", key, rec)
    try:
        client.track(BaseEvent("ok", user_id="good-user-1"))
        client.track(BaseEvent("bad", user_id="n/a"))  # on Amplitude's invalid-ID list
        client.track(BaseEvent("bad", user_id="abc"))  # shorter than 5
        client.track(BaseEvent("ok", user_id="good-user-2"))
        flush(client)
        rec.wait(4)
    finally:
        client.shutdown()
    codes = rec.codes()
    assert codes["n/a"] == 400 and codes["abc"] == 400  # dropped by the SDK, reported to the callback
    assert codes["good-user-1"] == 200 and codes["good-user-2"] == 200  # re-sent by the SDK, accepted
    found = read_envelopes(settings, lambda e: e["project"] == project, 2)
    assert sorted(env["event"]["user_id"] for _, env in found) == ["good-user-1", "good-user-2"]


def test_sdk_reschedules_throttled_events_and_resends_the_others(
    settings: Settings, collector_store: MetadataStore,
) -> None:
    project, key = new_project(collector_store, "sdk")
    # 2 events/s per device over a 2 s window: a bucket of 4 events.
    cfg = collector_settings(settings, collector_v2_eps=2, collector_eps_window_s=2)
    with serve(cfg, collector_store) as api:
        # Use up device "hot-device"'s bucket with plain HTTP first.
        burst = [{"event_type": "warm", "device_id": "hot-device", "user_id": f"warm-user-{i}"} for i in range(4)]
        r = httpx.post(f"{api.url}/2/httpapi", json={"api_key": key, "events": burst}, timeout=30)
        assert r.status_code == 200, r.text

        rec = Recorder()
        kept = KeptStorage()
        client = sdk_client(f"{api.url}/2/httpapi", key, rec, storage_provider=kept)
        try:
            client.track(BaseEvent("hot", device_id="hot-device", user_id="hot-user-1"))
            client.track(BaseEvent("cold", device_id="cold-device", user_id="cold-user-1"))
            client.track(BaseEvent("hot", device_id="hot-device", user_id="hot-user-2"))
            t_sent = time.time() * 1000
            flush(client)
            rec.wait(1)
            assert rec.codes() == {"cold-user-1": 200}  # not throttled: re-sent at once and accepted

            # The throttled ones wait in the SDK's storage ~30 s (its reaction to throttled_events).
            storage = kept.storage
            assert storage is not None
            with storage.lock:
                scheduled = [(at, e.user_id, e.retry) for at, e in storage.buffer_data]
            assert sorted(u for _, u, _ in scheduled) == ["hot-user-1", "hot-user-2"]
            assert all(at - t_sent >= 29_000 and retry == 1 for at, _, retry in scheduled), scheduled

            time.sleep(2.2)  # the bucket refills; flush() sends what is scheduled without waiting 30 s
            flush(client)
            rec.wait(3)
        finally:
            client.shutdown()
    assert rec.codes() == {"cold-user-1": 200, "hot-user-1": 200, "hot-user-2": 200}
    found = read_envelopes(settings, lambda e: e["project"] == project and e["event"]["event_type"] != "warm", 3)
    assert sorted(env["event"]["user_id"] for _, env in found) == ["cold-user-1", "hot-user-1", "hot-user-2"]


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_sdk_reports_invalid_api_key(api) -> None:
    rec = Recorder()
    captured = Captured()
    logger = logging.getLogger(f"amplitude-test-{uuid.uuid4().hex[:6]}")
    logger.addHandler(captured)
    client = sdk_client(f"{api.url}/2/httpapi", uuid.uuid4().hex, rec, logger=logger)
    try:
        client.track(BaseEvent("x", user_id="some-user"))
        flush(client)
    finally:
        client.shutdown()
    # The SDK recognises our answer as Amplitude's ("Invalid API key: …" -> InvalidAPIKeyError).
    assert "Invalid API Key" in captured.messages
    assert rec.calls == []
