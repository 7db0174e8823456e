"""The shared event model: envelope -> lake row, and the reasons bad records are dead-lettered."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from eventpipe_core.event_model import (
    RAW_EVENT_SCHEMA,
    InvalidEnvelope,
    encode_envelope,
    envelope_to_row,
    event_key,
    hour_partition,
    make_envelope,
    rows_to_table,
)


def _envelope(**event: object) -> bytes:
    base = {"insert_id": "i-1", "event_type": "signup", "device_id": "device-1", "time": 1767225600123}
    return encode_envelope(make_envelope(base | event, project="p", received_at_ms=1767225601000,
                                         client_ip="203.0.113.9", upload_id="u1"))


def test_envelope_becomes_typed_row() -> None:
    raw = _envelope(event_properties={"b": 1, "a": [1, 2]}, productId="sku", revenue=9.5, quantity=2,
                    session_id=1767225000000)
    row = envelope_to_row(raw, partition=3, offset=42)
    assert row["event_time"] == datetime(2026, 1, 1, 0, 0, 0, 123000, tzinfo=UTC)
    assert row["event_properties"] == '{"a":[1,2],"b":1}'
    assert (row["product_id"], row["revenue"], row["quantity"]) == ("sku", 9.5, 2)
    assert (row["kafka_partition"], row["kafka_offset"]) == (3, 42)
    table = rows_to_table([row])
    assert table.schema.equals(RAW_EVENT_SCHEMA)
    assert hour_partition(row["event_time"]) == ("2026-01-01", "00")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe not json", "undecodable"),
        (b"[1,2]", "not an envelope"),
        (json.dumps({"v": 99, "event": {}}).encode(), "unsupported envelope version"),
        (_envelope(insert_id=None), "insert_id"),
        (_envelope(device_id=None), "neither user_id nor device_id"),
        (_envelope(time="yesterday"), "event.time"),
        (_envelope(time=10**20), "out of range"),
        (_envelope(price="free"), "price is not a number"),
    ],
)
def test_bad_records_get_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEnvelope, match=reason):
        envelope_to_row(raw, 0, 0)


def test_event_key_prefers_device() -> None:
    assert event_key({"device_id": "d", "user_id": "u"}) == b"d"
    assert event_key({"user_id": "u"}) == b"u"
    assert event_key({}) is None
