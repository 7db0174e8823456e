"""The vectorized enrichment (enrichment.rules) against the per-row rules it replaced (tests/enrichment_reference.py).

Same input -> byte-identical Parquet, the same learned identities, the same carried session state and the
same stats: over the demo's synthetic product (every hour of two days, sessions and identities carried
from hour to hour, geo-IP on) and over hypothesis-generated pairs of hours (sessions crossing the hour
boundary, sent and unsent session ids, identity stitching from the hour and from a known map, bots by
user agent and by rate, duplicates landed twice with other coordinates, odd ids and IPs).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import chdb
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tests.enrichment_reference as ref
from demo.generator import DemoConfig, generate
from enrichment.geoip import open_geoip
from enrichment.rules import (
    SESSION_KEY_SQL,
    EnrichmentConfig,
    enrich_hour,
    session_keys,
    session_state_from_enriched,
    to_parquet_bytes,
)
from eventpipe_core.event_model import RAW_EVENT_SCHEMA, encode_envelope, envelope_to_row, make_envelope
from tests.orchestration_support import GOOGLEBOT_UA, LONDON_IP, write_geoip_db

H0 = datetime(2026, 3, 1, 10, tzinfo=UTC)
H1 = H0 + timedelta(hours=1)
HOUR_MS = 3_600_000


def assert_same(raw: pa.Table, hour: datetime, **kwargs: Any) -> tuple[Any, Any]:
    """Run both implementations on ``raw``; everything they return must agree."""
    expected = ref.enrich_hour(raw, hour_start=hour, **kwargs)
    got = enrich_hour(raw, hour_start=hour, **kwargs)
    assert got.table.schema == expected.table.schema
    if got.table != expected.table:  # a readable diff before the byte comparison
        for name in expected.table.column_names:
            assert got.table.column(name).to_pylist() == expected.table.column(name).to_pylist(), name
    assert to_parquet_bytes(got.table) == ref.to_parquet_bytes(expected.table)
    pd.testing.assert_frame_equal(got.identities.reset_index(drop=True), expected.identities.reset_index(drop=True))
    assert got.session_state == expected.session_state
    assert got.stats == expected.stats
    return expected, got


def carried(expected: Any, got: Any, hour: datetime, timeout: timedelta) -> dict[str, tuple[int, int]]:
    want = ref.session_state_from_enriched(expected.table.to_pandas(), hour, timeout)
    assert session_state_from_enriched(got.table, hour, timeout) == want
    assert session_state_from_enriched(got.table.to_pandas(), hour, timeout) == want
    return want


# --- the demo's product, hour by hour ---------------------------------------------------------------


def demo_hours() -> dict[int, pa.Table]:
    data = generate(DemoConfig(users=40, days=2, last_day=date(2026, 2, 2)))
    rows = []
    for offset, event in enumerate(data.sent):
        client_ip = LONDON_IP if offset % 3 else f"10.1.{offset % 200}.{offset % 7}"
        envelope = make_envelope(event, project="demo", received_at_ms=event["time"] + 500 + offset % 1000,
                                 client_ip=client_ip, upload_id=uuid.UUID(int=offset).hex)
        rows.append(envelope_to_row(encode_envelope(envelope), offset % 4, offset))
    table = pa.Table.from_pylist(rows, schema=RAW_EVENT_SCHEMA)
    ingested = pa.array([r["kafka_offset"] // 500 * 1000 + 1_770_000_000_000 for r in rows], pa.int64())
    table = table.append_column(pa.field("ingested_at", pa.timestamp("ms", tz="UTC"), nullable=False),
                                ingested.cast(pa.timestamp("ms", tz="UTC")))
    hours = pa.compute.divide(table.column("event_time").cast(pa.int64()), HOUR_MS).to_pylist()
    out: dict[int, list[int]] = {}
    for i, h in enumerate(hours):
        out.setdefault(h, []).append(i)
    return {h: table.take(pa.array(idx)) for h, idx in sorted(out.items())}


def test_demo_product_every_hour_with_carry_identities_and_geo(tmp_path: Path) -> None:
    geo = open_geoip(write_geoip_db(tmp_path / "city.mmdb"))
    config = EnrichmentConfig(bot_max_events_per_minute=20)
    carry: dict[str, tuple[int, int]] = {}
    known: dict[str, str] = {}
    hours = demo_hours()
    assert len(hours) >= 40
    totals = {"rows": 0, "bots": 0, "stitched": 0, "duplicates": 0}
    for h, raw in hours.items():
        hour = datetime.fromtimestamp(h * 3600, tz=UTC)
        devices = {d for d in raw.column("device_id").to_pylist() if d}
        expected, got = assert_same(raw, hour, carry=carry, identity_map={d: known[d] for d in devices if d in known},
                                    geo_lookup=geo, config=config)
        for row in expected.identities.sort_values(["first_seen", "user_id"]).itertuples():
            known.setdefault(row.device_id, row.user_id)
        carry = carried(expected, got, hour + timedelta(hours=1), config.session_timeout)
        for k in totals:
            totals[k] += got.stats[k]
    assert geo is not None
    geo.close()
    # the data exercised what it should: bots, stitching, resends
    assert all(v > 0 for v in totals.values()), totals


# --- hypothesis: two consecutive hours ----------------------------------------------------------------

DEVICES = ["dev-aaaaa", "dev-bbbbb", "u:alice", "d:x", "dev-ü", None]
USERS = ["alice", "bob", "carol", None, None]
AGENTS = [ref.BOT_UA_PATTERN.pattern[:0], None, GOOGLEBOT_UA, "curl/8.5.0", "python-requests/2.31",
          "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
          "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
          "MyBot", "robot-lawnmower/1.0", "Mozilla/5.0 HeadlessChrome/120.0"]
IPS = [None, "", "$remote", LONDON_IP, "81.2.69.1", "not-an-ip", "10.0.0.1", "2001:db8::1"]


@st.composite
def raw_rows(draw: st.DrawFn, hour: datetime, n_max: int) -> list[dict[str, Any]]:
    ids = [f"i{k}" for k in range(draw(st.integers(1, 25)))]
    rows = []
    for offset in range(draw(st.integers(0, n_max))):
        device = draw(st.sampled_from(DEVICES))
        user = draw(st.sampled_from(USERS)) if device is not None else draw(st.sampled_from(["alice", "bob", "zed"]))
        # mostly inside the hour, some minutes around it (late or early landed rows), often in the same minute
        minute = draw(st.one_of(st.integers(0, 59), st.integers(-5, 65), st.just(30)))
        t = hour + timedelta(minutes=minute, milliseconds=draw(st.integers(0, 59_999)))
        sent = draw(st.one_of(st.none(), st.just(-1), st.sampled_from([1, 1_700_000_000_000, int(hour.timestamp() * 1000)])))
        rows.append({
            **dict.fromkeys(RAW_EVENT_SCHEMA.names),
            "insert_id": draw(st.sampled_from(ids)), "event_type": draw(st.sampled_from(["view", "buy", ""])),
            "event_time": t, "user_id": user, "device_id": device, "session_id": sent,
            "event_id": draw(st.one_of(st.none(), st.integers(-(2**40), 2**40))),
            "event_properties": draw(st.sampled_from([None, "{}", '{"a":1}'])),
            "country": draw(st.sampled_from([None, "", "France"])), "city": draw(st.sampled_from([None, "Paris"])),
            "location_lat": draw(st.one_of(st.none(), st.floats(-90, 90))),
            "price": draw(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=False, width=64))),
            "quantity": draw(st.one_of(st.none(), st.integers(-5, 5))),
            "ip": draw(st.sampled_from(IPS)), "client_ip": draw(st.sampled_from(IPS)),
            "user_agent": draw(st.sampled_from(AGENTS)), "project": "p",
            "received_at": t + timedelta(milliseconds=draw(st.integers(0, 5_000))),
            "plan_violations": draw(st.sampled_from([None, '["x"]'])),
            "kafka_partition": draw(st.integers(0, 2)), "kafka_offset": offset,
        })
    return rows


def _table(rows: list[dict[str, Any]], with_ingested: bool) -> pa.Table:
    t = pa.Table.from_pylist(rows, schema=RAW_EVENT_SCHEMA)
    if with_ingested:
        t = t.append_column(pa.field("ingested_at", pa.timestamp("ms", tz="UTC"), nullable=False),
                            t.column("received_at"))
    return t


@pytest.fixture(scope="module")
def geo(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    db = open_geoip(write_geoip_db(tmp_path_factory.mktemp("geo") / "city.mmdb"))
    yield db
    db.close()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(first=raw_rows(H0, 40), second=raw_rows(H1, 40), timeout_min=st.sampled_from([1, 30]),
       max_rate=st.sampled_from([2, 5, 100]), known=st.dictionaries(st.sampled_from(DEVICES[:-1]), st.sampled_from(
           ["bob", "dave"]), max_size=3), with_geo=st.booleans(), with_ingested=st.booleans(),
       outside=st.dictionaries(st.sampled_from(["d:dev-aaaaa", "u:zed", "d:nobody"]), st.tuples(
           st.integers(int(H0.timestamp() * 1000) - 1_800_000, int(H0.timestamp() * 1000)),
           st.sampled_from([5, int(H0.timestamp() * 1000) - 900_000])), max_size=2))
def test_generated_hours_agree(first: list, second: list, timeout_min: int, max_rate: int, known: dict, with_geo: bool,
                               with_ingested: bool, outside: dict, geo: Any) -> None:
    config = EnrichmentConfig(session_timeout=timedelta(minutes=timeout_min), bot_max_events_per_minute=max_rate)
    lookup = geo if with_geo else None
    e0, g0 = assert_same(_table(first, with_ingested), H0, carry=outside, identity_map=known, geo_lookup=lookup,
                         config=config)
    carry = carried(e0, g0, H1, config.session_timeout)
    assert_same(_table(second, with_ingested), H1, carry=carry, identity_map=known, geo_lookup=lookup, config=config)


def test_pandas_input_and_empty_hour_agree() -> None:
    rows = [{**dict.fromkeys(RAW_EVENT_SCHEMA.names), "insert_id": "a", "event_type": "v", "event_time": H0,
             "device_id": "dev-aaaaa", "project": "p", "received_at": H0, "kafka_partition": 0, "kafka_offset": 0}]
    raw = pa.Table.from_pylist(rows, schema=RAW_EVENT_SCHEMA)
    assert_same(raw, H0)
    assert_same(RAW_EVENT_SCHEMA.empty_table(), H0, carry={"d:x": (1, 1)})
    assert to_parquet_bytes(enrich_hour(raw.to_pandas(), hour_start=H0).table) == to_parquet_bytes(
        enrich_hour(raw, hour_start=H0).table)


def test_merge_identity_map_agrees() -> None:
    learned = pd.DataFrame({"device_id": ["d1", "d1", "d2", "d3"], "user_id": ["b", "a", "x", "y"],
                            "first_seen": pd.to_datetime([5, 5, 1, 2], unit="ms", utc=True)})
    from enrichment.rules import merge_identity_map

    assert merge_identity_map({"d3": "known"}, learned) == ref.merge_identity_map({"d3": "known"}, learned) == {
        "d1": "a", "d2": "x", "d3": "known"}


SESSION_KEY_CASES = [  # (device_id, user_id, expected key)
    ("dev1", None, "d:dev1"),
    ("dev1", "alice", "d:dev1"),  # the device wins over the user
    ("u:alice", "alice", "u:alice"),  # a device id already starting with u: is used as is
    ("u:x", None, "u:x"),
    ("u:", "bob", "u:"),
    ("U:x", None, "d:U:x"),  # the prefix is case-sensitive
    ("xu:1", None, "d:xu:1"),
    (None, "bob", "u:bob"),
    (None, "u:bob", "u:u:bob"),
    (None, None, "u:"),
    ("", None, "d:"),  # an empty device is a device
    ("", "carol", "d:"),
    (None, "", "u:"),
    ("", "", "d:"),
    ("dév 'q' \\ ü", "ü", "d:dév 'q' \\ ü"),
]


def test_session_key_sql_agrees_with_session_keys() -> None:
    """SESSION_KEY_SQL (evaluated by chDB, Nullable columns as in ``analytics.events``) and session_keys (pyarrow)
    give the same key on every case, and the expected one."""
    devices, users, expected = (list(c) for c in zip(*SESSION_KEY_CASES, strict=True))
    got_arrow = session_keys(pa.table({"device_id": pa.array(devices, pa.string()),
                                       "user_id": pa.array(users, pa.string())})).to_pylist()
    rows = "\n".join(json.dumps({"i": i, "device_id": d, "user_id": u}) for i, (d, u, _) in enumerate(SESSION_KEY_CASES))
    literal = "'" + rows.replace("\\", "\\\\").replace("'", "\\'") + "'"
    result = chdb.query(f"SELECT i, {SESSION_KEY_SQL} AS key FROM format(JSONEachRow, "
                        f"'i UInt32, device_id Nullable(String), user_id Nullable(String)', {literal}) ORDER BY i",
                        "JSONEachRow")
    got_sql = [json.loads(line)["key"] for line in result.data().splitlines()]
    assert got_arrow == expected
    assert got_sql == expected
