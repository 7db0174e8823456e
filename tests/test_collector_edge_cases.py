"""Collector edge cases of issue 18, each with its exact status against a real server and broker:
an event over the broker's message limit, the /batch event cap, a big /batch not stalling the event
loop, header and body read timeouts (slowloris), CORS preflight."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from eventpipe_core.metadata import MetadataStore
from eventpipe_core.settings import Settings
from tests.collector_support import collector_settings, collector_store, event, new_project, read_envelopes, serve

__all__ = ["collector_store"]

UNLIMITED = {"collector_key_rps": 1e6, "collector_v2_eps": 1e6, "collector_batch_eps": 1e6}


@pytest.fixture(scope="module")
def api(settings: Settings, collector_store: MetadataStore) -> Iterator[Any]:
    cfg = collector_settings(settings, collector_batch_max_events=50_000, collector_header_timeout_s=1.0,
                             collector_body_timeout_s=1.5, collector_cors_origins="https://app.example.com", **UNLIMITED)
    with serve(cfg, collector_store) as server:
        yield server


def test_event_over_the_message_limit_is_a_400_naming_its_index(api, collector_store: MetadataStore,
                                                                 settings: Settings) -> None:
    project, key = new_project(collector_store)
    huge = event(1, event_properties={f"p{i}": i for i in range(100_000)})  # ~1.3 MB encoded
    events = [event(0), huge, event(2)]
    r = httpx.post(f"{api.url}/batch", json={"api_key": key, "events": events}, timeout=60)
    assert (r.status_code, r.json()) == (400, {
        "code": 400, "error": "Some events are larger than the broker's message limit",
        "events_with_invalid_fields": {"event": [1]}, "events_too_large": [1], "max_event_bytes": 1_000_000,
    })
    # The SDK drops the listed event and re-sends the others: accepted, and only they are in Kafka.
    r = httpx.post(f"{api.url}/batch", json={"api_key": key, "events": [events[0], events[2]]}, timeout=60)
    assert r.status_code == 200, r.text
    found = read_envelopes(settings, lambda e: e["project"] == project, 2)
    assert sorted(env["event"]["user_id"] for _, env in found) == ["user-00000", "user-00002"]


def test_batch_event_cap(api, collector_store: MetadataStore) -> None:
    _, key = new_project(collector_store)
    tiny = {"user_id": "user-12345", "event_type": "e", "insert_id": "x"}
    r = httpx.post(f"{api.url}/batch", json={"api_key": key, "events": [tiny] * 50_001}, timeout=60)
    assert (r.status_code, r.json()) == (413, {"code": 413, "error": "Payload too large"})


def test_big_batch_does_not_stall_the_event_loop_and_a_resend_is_deduplicable(
    api, collector_store: MetadataStore, settings: Settings,
) -> None:
    """50k events without insert_id (~9 MB) in one /batch: other requests keep being answered while it
    is parsed, validated, encoded and produced; every event is in Kafka once it answers 200, and the
    same request sent again carries the same generated insert_ids (a partial write re-sent is
    deduplicated downstream)."""
    project, key = new_project(collector_store)
    base = 1_767_225_600_000
    events = [{"user_id": f"user-{i % 3000:05d}", "event_type": "view", "time": base + i,
               "event_properties": {"path": f"/p/{i % 97}", "referrer": "https://example.com/" + "x" * 80}}
              for i in range(50_000)]
    body = json.dumps({"api_key": key, "events": events}).encode()
    result: dict[str, Any] = {}

    def send() -> None:
        result["r"] = httpx.post(f"{api.url}/batch", content=body, headers={"Content-Type": "application/json"}, timeout=120)

    worst = 0.0
    sender = threading.Thread(target=send)
    sender.start()
    with httpx.Client(timeout=10) as client:
        while sender.is_alive():
            t0 = time.monotonic()
            assert client.get(f"{api.url}/healthz").status_code == 200
            worst = max(worst, time.monotonic() - t0)
            time.sleep(0.02)
    sender.join()
    r = result["r"]
    assert r.status_code == 200 and r.json()["events_ingested"] == 50_000, r.text
    # done on the loop in one go this stalls for seconds (8.7 s for 400k events); margin for a loaded machine
    assert worst < 2.5, f"/healthz waited {worst:.2f}s while a big /batch was processed"
    found = read_envelopes(settings, lambda e: e["project"] == project, 50_000, timeout=90)
    ids = [env["event"]["insert_id"] for _, env in found]
    assert len(ids) == 50_000 and len(set(ids)) == 50_000
    # a re-send of part of it (as after a partial write) gets exactly the same ids
    r = httpx.post(f"{api.url}/batch", json={"api_key": key, "events": events[:100]}, timeout=60)
    assert r.status_code == 200, r.text
    found = read_envelopes(settings, lambda e: e["project"] == project, 50_100, timeout=90)
    assert len(found) == 50_100 and len({env["event"]["insert_id"] for _, env in found}) == 50_000


def _connect(api) -> socket.socket:
    sock = socket.create_connection((api.host, api.port), timeout=10)
    sock.settimeout(10)
    return sock


def _closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> tuple[bool, bytes]:
    """Trickle bytes one by one until the server closes the connection (or ``seconds`` pass)."""
    deadline = time.monotonic() + seconds
    received = b""
    sock.settimeout(0.2)
    i = 0
    while time.monotonic() < deadline:
        try:
            if i < len(trickle):
                sock.sendall(trickle[i:i + 1])
                i += 1
            chunk = sock.recv(65536)
            if not chunk:
                return True, received
            received += chunk
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True, received
    return False, received


def test_slow_headers_are_cut_off(api) -> None:
    sock = _connect(api)
    try:
        sock.sendall(b"POST /2/httpapi HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        closed, _ = _closed_within(sock, 8, trickle=b"X-Slow: " + b"a" * 200)
        assert closed, "a connection trickling its headers must be closed"
        assert time.monotonic() - t0 < 4  # COLLECTOR_HEADER_TIMEOUT_S=1 (+ load)
    finally:
        sock.close()
    # an idle connection that never sends a byte is closed too
    sock = _connect(api)
    try:
        assert _closed_within(sock, 8)[0]
    finally:
        sock.close()


def test_slow_body_gets_408(api, collector_store: MetadataStore) -> None:
    _, key = new_project(collector_store)
    body = json.dumps({"api_key": key, "events": [event(0)]}).encode()
    sock = _connect(api)
    try:
        sock.sendall(b"POST /2/httpapi HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body))
        t0 = time.monotonic()
        closed, received = _closed_within(sock, 10, trickle=body[:-1])  # never the last byte
        head, _, payload = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), received[:300]
        assert json.loads(payload) == {"code": 408, "error": "Request timeout: the body did not arrive in time"}
        assert time.monotonic() - t0 < 6
    finally:
        sock.close()


def test_cors_preflight_and_allowed_origins(api, collector_store: MetadataStore) -> None:
    _, key = new_project(collector_store)
    preflight = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"}
    r = httpx.options(f"{api.url}/2/httpapi", headers=preflight)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "content-type" in r.headers["access-control-allow-headers"].lower()
    r = httpx.options(f"{api.url}/2/httpapi", headers=preflight | {"Origin": "https://evil.example.org"})
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
    r = httpx.post(f"{api.url}/2/httpapi", json={"api_key": key, "events": [event(0)]},
                   headers={"Origin": "https://app.example.com"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example.com"
