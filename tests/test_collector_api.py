"""The collector over real HTTP against the session's Kafka: V2, Batch, /track, keys, server fields."""

from __future__ import annotations

import gzip
import json
import os
import time
import uuid

import httpx
import pytest

from eventpipe_core.metadata import MetadataStore
from eventpipe_core.settings import Settings
from tests.collector_support import collector_settings, collector_store, event, new_project, read_envelopes, serve

__all__ = ["collector_store"]


@pytest.fixture(scope="module")
def api(settings: Settings, collector_store: MetadataStore):
    cfg = collector_settings(settings, collector_trusted_proxies="127.0.0.1/32")
    with serve(cfg, collector_store) as server:
        yield server


def test_v2_upload_is_in_kafka_with_server_fields(api, collector_store: MetadataStore, settings: Settings) -> None:
    project, key = new_project(collector_store)
    events = [event(i) for i in range(3)]
    events[0]["insert_id"] = "client-insert-id-0"
    events[1]["ip"] = "$remote"
    del events[2]["device_id"]
    t0 = int(time.time() * 1000)
    r = httpx.post(f"{api.url}/2/httpapi", json={"api_key": key, "events": events}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["code"] == 200 and body["events_ingested"] == 3
    assert body["payload_size_bytes"] == len(r.request.content)
    assert t0 <= body["server_upload_time"] <= int(time.time() * 1000)

    found = read_envelopes(settings, lambda e: e["project"] == project, 3)
    assert len(found) == 3
    by_user = {env["event"]["user_id"]: (k, env) for k, env in found}
    k0, e0 = by_user["user-00000"]
    assert k0 == b"device-00000"  # key = device_id
    assert by_user["user-00002"][0] == b"user-00002"  # no device_id: key = user_id
    assert e0["event"]["insert_id"] == "client-insert-id-0"
    assert e0["event"]["event_properties"] == {"i": 0}
    assert e0["v"] == 1 and e0["client_ip"] == "127.0.0.1"
    assert e0["received_at"] == body["server_upload_time"]
    assert len({env["upload_id"] for _, env in found}) == 1
    uuid.UUID(e0["upload_id"])
    assert by_user["user-00001"][1]["event"]["ip"] == "127.0.0.1"  # $remote
    for _, env in found:  # every event identifiable downstream
        assert env["event"]["insert_id"]


def test_generated_insert_id_is_stable_for_a_retried_event(api, collector_store: MetadataStore, settings: Settings) -> None:
    """Events without insert_id get one derived from their content: a re-sent request (after a 503 or
    a partial write) gets the same ids, so downstream dedup drops the copies; identical events inside
    one request stay distinct; any change of content gives another id."""
    project, key = new_project(collector_store)
    same = event(7)
    no_time = event(8, time=None)
    for _ in range(2):
        r = httpx.post(f"{api.url}/2/httpapi", json={"api_key": key, "events": [same, no_time, no_time]}, timeout=30)
        assert r.status_code == 200, r.text
    other = event(7, event_properties={"i": 8})
    r = httpx.post(f"{api.url}/2/httpapi", json={"api_key": key, "events": [other]}, timeout=30)
    assert r.status_code == 200, r.text
    found = read_envelopes(settings, lambda e: e["project"] == project, 7)
    assert len(found) == 7
    ids_timed = [env["event"]["insert_id"] for _, env in found if env["event"]["user_id"] == "user-00007"]
    ids_untimed = [env["event"]["insert_id"] for _, env in found if env["event"]["user_id"] == "user-00008"]
    assert len(ids_timed) == 3 and len(set(ids_timed)) == 2  # the re-send repeats its id; other content, other id
    assert len(ids_untimed) == 4 and len(set(ids_untimed)) == 2  # two identical events per request, re-sent once
    untimed = [env for _, env in found if env["event"]["user_id"] == "user-00008"]
    assert all(env["event"]["time"] == env["received_at"] for env in untimed)


def test_gzip_body_and_batch_and_track(api, collector_store: MetadataStore, settings: Settings) -> None:
    project, key = new_project(collector_store)
    raw = json.dumps({"api_key": key, "events": [event(1, event_type="gz")]}).encode()
    r = httpx.post(f"{api.url}/2/httpapi", content=gzip.compress(raw),
                   headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}, timeout=30)
    assert r.status_code == 200, r.text
    r = httpx.post(f"{api.url}/batch", json={"api_key": key, "events": [event(2, event_type="batched")] * 1}, timeout=30)
    assert r.status_code == 200, r.text
    # /track: a single bare event with the key in a header, a list, and {"event": ...} with the key in the body
    r = httpx.post(f"{api.url}/track", json=event(3, event_type="t1"), headers={"X-API-Key": key}, timeout=30)
    assert r.status_code == 200 and r.json()["events_ingested"] == 1, r.text
    r = httpx.post(f"{api.url}/track", json=[event(4, event_type="t2"), event(5, event_type="t2")],
                   headers={"X-API-Key": key}, timeout=30)
    assert r.status_code == 200 and r.json()["events_ingested"] == 2, r.text
    r = httpx.post(f"{api.url}/track", json={"api_key": key, "event": event(6, event_type="t3")}, timeout=30)
    assert r.status_code == 200, r.text
    r = httpx.post(f"{api.url}/track", json=event(7, event_type="t4"), timeout=30)
    assert r.status_code == 400 and r.json() == {"code": 400, "error": "Request missing required field",
                                                 "missing_field": "api_key"}
    found = read_envelopes(settings, lambda e: e["project"] == project, 6)
    assert sorted(env["event"]["event_type"] for _, env in found) == ["batched", "gz", "t1", "t2", "t2", "t3"]


def test_x_forwarded_for_only_from_trusted_proxies(settings: Settings, collector_store: MetadataStore, api) -> None:
    project, key = new_project(collector_store)
    hdr = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9"}
    r = httpx.post(f"{api.url}/2/httpapi", json={"api_key": key, "events": [event(1, ip="$remote")]}, headers=hdr,
                   timeout=30)
    assert r.status_code == 200
    # Peer 127.0.0.1 is not trusted here: the header is ignored.
    untrusted = collector_settings(settings, collector_trusted_proxies="10.0.0.0/8")
    with serve(untrusted, collector_store) as other:
        r = httpx.post(f"{other.url}/2/httpapi", json={"api_key": key, "events": [event(2, ip="$remote")]},
                       headers=hdr, timeout=30)
        assert r.status_code == 200
    found = {env["event"]["user_id"]: env for _, env in read_envelopes(settings, lambda e: e["project"] == project, 2)}
    assert found["user-00001"]["client_ip"] == "203.0.113.9"  # right-most untrusted address
    assert found["user-00001"]["event"]["ip"] == "203.0.113.9"
    assert found["user-00002"]["client_ip"] == "127.0.0.1"


def test_unknown_and_revoked_keys(api, collector_store: MetadataStore) -> None:
    project, key = new_project(collector_store)
    body = {"api_key": key, "events": [event(1)]}
    assert httpx.post(f"{api.url}/2/httpapi", json=body, timeout=30).status_code == 200
    assert collector_store.revoke_key(key)
    r = httpx.post(f"{api.url}/2/httpapi", json=body, timeout=30)
    assert r.status_code == 400
    assert r.json() == {"code": 400, "error": f"Invalid API key: {key}"}
    r = httpx.post(f"{api.url}/batch", json=body | {"api_key": "0" * 32}, timeout=30)
    assert r.status_code == 400 and r.json()["error"].startswith("Invalid API key:")
    assert not collector_store.revoke_key(key)  # already revoked
    assert [k.revoked_at is not None for k in collector_store.list_keys(project)] == [True]


def test_health_ready_and_metrics(api, collector_store: MetadataStore) -> None:
    assert httpx.get(f"{api.url}/healthz").json() == {"status": "ok", "worker": os.getpid()}  # served in this process
    r = httpx.get(f"{api.url}/readyz", timeout=10)
    assert r.status_code == 200 and r.json()["kafka"] == "reachable"
    _, key = new_project(collector_store)
    httpx.post(f"{api.url}/2/httpapi", json={"api_key": key, "events": [event(1), event(2)]}, timeout=30)
    httpx.post(f"{api.url}/2/httpapi", json={"api_key": key, "events": [event(1, user_id="null")]}, timeout=30)
    text = httpx.get(f"{api.url}/metrics").text
    assert 'eventpipe_collector_requests_total{endpoint="httpapi",status="200"}' in text
    assert 'eventpipe_collector_requests_total{endpoint="httpapi",status="400"}' in text
    assert 'eventpipe_collector_events_rejected_total{endpoint="httpapi",reason="invalid_field"}' in text
    accepted = [ln for ln in text.splitlines() if ln.startswith('eventpipe_collector_events_accepted_total{endpoint="httpapi"}')]
    assert accepted and float(accepted[0].split()[-1]) >= 2
    assert "eventpipe_collector_produce_latency_seconds_count" in text
    assert "# TYPE eventpipe_collector_events_throttled_total counter" in text


def test_unknown_path_and_method_answer_json(api) -> None:
    r = httpx.post(f"{api.url}/nope", json={})
    assert r.status_code == 404 and r.json() == {"code": 404, "error": "Invalid request path"}
    r = httpx.get(f"{api.url}/2/httpapi")
    assert r.status_code == 405 and r.json()["code"] == 405
