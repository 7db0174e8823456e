"""Pure enrichment rules: sessions across an hour boundary, identity stitching, bots, UA, geo-IP, determinism."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from enrichment.geoip import open_geoip
from enrichment.rules import (
    ENRICHED_SCHEMA,
    EnrichmentConfig,
    enrich_hour,
    parse_user_agent,
    plan_violation_count,
    session_state_from_enriched,
    to_parquet_bytes,
)
from eventpipe_core.event_model import RAW_EVENT_SCHEMA
from tests.orchestration_support import GOOGLEBOT_UA, LONDON_IP, raw_row, write_geoip_db

H0 = datetime(2026, 3, 1, 10, tzinfo=UTC)
H1 = H0 + timedelta(hours=1)


def table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=RAW_EVENT_SCHEMA)


def by_id(result) -> dict[str, dict]:  # noqa: ANN001
    return {r["insert_id"]: r for r in result.table.to_pylist()}


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def test_sessions_continue_across_hour_boundary_and_split_on_inactivity() -> None:
    hour0 = [raw_row("a1", H0 + timedelta(minutes=40)), raw_row("a2", H0 + timedelta(minutes=50))]
    r0 = enrich_hour(table(hour0), hour_start=H0)
    assert {r["session_id"] for r in r0.table.to_pylist()} == {ms(H0 + timedelta(minutes=40))}

    carry = session_state_from_enriched(r0.table.to_pandas(), H1, timedelta(minutes=30))
    hour1 = [
        raw_row("b1", H1 + timedelta(minutes=10)),  # 20 min after a2: same session
        raw_row("b2", H1 + timedelta(minutes=45)),  # 35 min gap: new session
        raw_row("c1", H1 + timedelta(minutes=5), device_id="device-bbbb"),  # other device: own session
        raw_row("s1", H1 + timedelta(minutes=50), device_id="device-cccc", session_id=123456),  # sent: honoured
        raw_row("s2", H1 + timedelta(minutes=55), device_id="device-cccc"),  # continues the sent session
    ]
    rows = by_id(enrich_hour(table(hour1), hour_start=H1, carry=carry))
    assert rows["b1"]["session_id"] == ms(H0 + timedelta(minutes=40))
    assert rows["b2"]["session_id"] == ms(H1 + timedelta(minutes=45))
    assert rows["c1"]["session_id"] == ms(H1 + timedelta(minutes=5))
    assert rows["s1"]["session_id"] == 123456
    assert rows["s2"]["session_id"] == 123456

    # without the carried state the boundary would have split the session
    alone = by_id(enrich_hour(table(hour1), hour_start=H1))
    assert alone["b1"]["session_id"] == ms(H1 + timedelta(minutes=10))


def test_carry_ignores_sessions_older_than_timeout() -> None:
    r0 = enrich_hour(table([raw_row("a1", H0 + timedelta(minutes=5))]), hour_start=H0)
    assert session_state_from_enriched(r0.table.to_pandas(), H1, timedelta(minutes=30)) == {}


def test_identity_stitching_from_hour_and_known_map() -> None:
    rows = [
        raw_row("anon1", H0 + timedelta(minutes=1), device_id="dev-login"),
        raw_row("login", H0 + timedelta(minutes=2), device_id="dev-login", user_id="alice"),
        raw_row("anon2", H0 + timedelta(minutes=3), device_id="dev-known"),
        raw_row("anon3", H0 + timedelta(minutes=4), device_id="dev-stranger"),
        raw_row("server", H0 + timedelta(minutes=5), device_id=None, user_id="carol"),
    ]
    result = enrich_hour(table(rows), hour_start=H0, identity_map={"dev-known": "bob"})
    out = by_id(result)
    assert out["anon1"]["user_id"] is None and out["anon1"]["resolved_user_id"] == "alice"
    assert out["anon1"]["actor_id"] == "alice"
    assert out["anon2"]["resolved_user_id"] == "bob"
    assert out["anon3"]["resolved_user_id"] is None and out["anon3"]["actor_id"] == "dev-stranger"
    assert out["server"]["actor_id"] == "carol" and out["server"]["device_id"] is None
    assert result.identities[["device_id", "user_id"]].values.tolist() == [["dev-login", "alice"]]
    assert result.stats["stitched"] == 2


def test_bots_flagged_by_user_agent_and_by_rate() -> None:
    rows = [raw_row("human", H0 + timedelta(minutes=1), device_id="dev-human")]
    rows.append(raw_row("crawler", H0 + timedelta(minutes=2), device_id="dev-crawler", user_agent=GOOGLEBOT_UA))
    rows.append(raw_row("curl", H0 + timedelta(minutes=2), device_id="dev-curl", user_agent="curl/8.5.0"))
    rows += [raw_row(f"fast{i}", H0 + timedelta(minutes=3, milliseconds=100 * i), device_id="dev-fast") for i in range(11)]
    out = by_id(enrich_hour(table(rows), hour_start=H0, config=EnrichmentConfig(bot_max_events_per_minute=10)))
    assert (out["human"]["is_bot"], out["human"]["bot_reason"]) == (0, "")
    assert (out["crawler"]["is_bot"], out["crawler"]["bot_reason"]) == (1, "ua:spider")
    assert (out["curl"]["is_bot"], out["curl"]["bot_reason"]) == (1, "ua:pattern")
    assert {(out[f"fast{i}"]["is_bot"], out[f"fast{i}"]["bot_reason"]) for i in range(11)} == {(1, "rate:11/min")}


def test_user_agent_parsing() -> None:
    info = parse_user_agent("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
                            "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1")
    assert (info.browser, info.browser_version, info.os, info.device) == ("Mobile Safari", "17.1", "iOS", "iPhone")
    assert parse_user_agent("").browser == ""


def test_geoip_fills_missing_location_only(tmp_path: Path) -> None:
    geo = open_geoip(write_geoip_db(tmp_path / "city.mmdb"))
    assert geo is not None
    rows = [
        raw_row("by-client-ip", H0, client_ip=LONDON_IP),
        raw_row("by-event-ip", H0, ip=LONDON_IP, client_ip="10.0.0.1"),
        raw_row("own-country", H0, client_ip=LONDON_IP, country="France"),
        raw_row("unknown-ip", H0, client_ip="8.8.8.8"),
    ]
    out = by_id(enrich_hour(table(rows), hour_start=H0, geo_lookup=geo))
    assert (out["by-client-ip"]["country"], out["by-client-ip"]["region"], out["by-client-ip"]["city"],
            out["by-client-ip"]["dma"]) == ("United Kingdom", "England", "London", "826")
    assert out["by-event-ip"]["city"] == "London" and out["by-event-ip"]["ip"] == LONDON_IP
    assert out["own-country"]["country"] == "France" and out["own-country"]["city"] == "London"
    assert out["unknown-ip"]["country"] == ""
    assert open_geoip(tmp_path / "absent.mmdb") is None


def test_dedupe_schema_defaults_and_byte_identical_output() -> None:
    rows = [
        raw_row("dup", H0 + timedelta(minutes=1), offset=1, event_type="first"),
        raw_row("dup", H0 + timedelta(minutes=1), offset=2, event_type="second",
                received_at=H0 + timedelta(minutes=2)),
        raw_row("x", H0 + timedelta(minutes=2), plan_violations='["event_properties.plan: a","b"]'),
    ]
    r1 = enrich_hour(table(rows), hour_start=H0)
    r2 = enrich_hour(table(list(reversed(rows))), hour_start=H0)
    assert r1.table.schema == ENRICHED_SCHEMA
    assert r1.table.num_rows == 2 and r1.stats["duplicates"] == 1
    assert by_id(r1)["dup"]["event_type"] == "first"
    assert by_id(r1)["x"]["event_properties"] == "{}" and by_id(r1)["x"]["country"] == ""
    assert to_parquet_bytes(r1.table) == to_parquet_bytes(r2.table)
    assert pq.read_table(io.BytesIO(to_parquet_bytes(r1.table))).schema == ENRICHED_SCHEMA  # survives Parquet
    assert plan_violation_count(r1.table.column("plan_violations").to_pandas()) == 2
    assert r1.table.column("event_hour").to_pylist() == [H0, H0]


@pytest.mark.parametrize("rows", [[]])
def test_empty_hour(rows: list) -> None:
    result = enrich_hour(table(rows), hour_start=H0)
    assert result.table.num_rows == 0 and result.table.schema == ENRICHED_SCHEMA
