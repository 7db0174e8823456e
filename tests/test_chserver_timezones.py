"""Column time zones survive the round trip through chserver's Native output (clickhouse-connect's format)."""

from __future__ import annotations

import datetime as dt
import uuid
from zoneinfo import ZoneInfo

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client

from tests.chserver_support import READER, ChServer

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture()
def ch(chserver: ChServer) -> Client:
    return clickhouse_connect.get_client(host=chserver.host, port=chserver.port, password=chserver.password)


def test_zoned_datetime_expressions_keep_their_zone(ch: Client) -> None:
    r = ch.query("SELECT toDateTime('2026-01-01 08:00:00', 'Asia/Shanghai') AS a, toDateTime('2026-01-01 00:00:00') AS b")
    assert [t.name for t in r.column_types] == ["DateTime('Asia/Shanghai')", "DateTime"]
    a, b = r.result_rows[0]
    assert a == dt.datetime(2026, 1, 1, 8, 0, tzinfo=SHANGHAI) and a.utcoffset() == dt.timedelta(hours=8)
    assert b.tzinfo is None  # a column without a zone stays as before (the server's zone, UTC)


def test_table_columns_keep_their_zones_among_other_types(ch: Client) -> None:
    t = f"t_tz_{uuid.uuid4().hex[:6]}"
    ch.command(
        f"CREATE TABLE {t} (s LowCardinality(String), m Map(String, Array(Nullable(String))), "
        "tp Tuple(a String, b Decimal(9, 2)), ln LowCardinality(Nullable(String)), a DateTime('Asia/Shanghai'), "
        "n Nullable(DateTime('UTC')), e Enum8('x' = 1), z DateTime('America/New_York')) ENGINE = MergeTree ORDER BY s"
    )
    try:
        instant = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
        epoch = int(instant.timestamp())
        ch.command(
            f"INSERT INTO {t} SELECT toString(number % 7), map('k', [toString(number), NULL]), (toString(number), number / 3), "
            f"if(number % 2, NULL, 'q'), toDateTime({epoch}), NULL, 'x', toDateTime({epoch}) FROM numbers(300000)"
        )
        # big enough to be streamed in many blocks: every block's header is fixed
        r = ch.query(f"SELECT * FROM {t} SETTINGS max_block_size = 10000")
        names = [c.name for c in r.column_types]
        assert names[4] == "DateTime('Asia/Shanghai')" and names[7] == "DateTime('America/New_York')"
        assert len(r.result_rows) == 300_000
        assert {row[4] for row in r.result_rows} == {instant.astimezone(SHANGHAI)}
        assert {row[7].utcoffset() for row in r.result_rows} == {dt.timedelta(hours=-5)}
        with ch.query_row_block_stream(f"SELECT s, z FROM {t} SETTINGS max_block_size = 10000") as stream:
            zones = {row[1].tzinfo for block in stream for row in block}
        assert zones == {NEW_YORK}
    finally:
        ch.command(f"DROP TABLE {t}")


def test_reader_gets_zones_too(chserver: ChServer) -> None:
    reader = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username=READER[0], password=READER[1])
    r = reader.query("SELECT toDateTime('2026-01-01 08:00:00', 'Asia/Shanghai') AS a")
    assert r.column_types[0].name == "DateTime('Asia/Shanghai')"
    assert r.result_rows[0][0].tzinfo == SHANGHAI
