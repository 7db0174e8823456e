"""``CLICKHOUSE_PARTITION=day``: analytics.events in day partitions, still replaced hour by hour.

A load rewrites its day (the day's other hours from the table + the staged hours) and swaps it in one
REPLACE PARTITION; live appends attach into the day; every writer of a day holds the day's lock, so
concurrent loads and appends of different hours of one day lose nothing. A table created with hour
partitions keeps them whatever the setting says.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import clickhouse_connect
import pyarrow as pa
import pytest

from enrichment.rules import enrich_hour, to_parquet_bytes
from eventpipe_core.event_model import RAW_EVENT_SCHEMA
from eventpipe_core.settings import SettingsError, load_settings
from orchestration.clickhouse.load import (
    DAY_LOCK_STALE_S,
    append_hour,
    day_lock,
    hour_row_count,
    load_hour,
    load_hours,
    log_day_rewrite,
)
from orchestration.clickhouse.schema import adapt_to_existing, ensure_schema
from tests.chserver_support import ChServer
from tests.orchestration_support import raw_row

DAY = datetime(2026, 3, 1, tzinfo=UTC)


def _client(chserver: ChServer) -> Any:
    return clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default",
                                         password=chserver.password)


@pytest.fixture
def database(chserver: ChServer) -> Iterator[tuple[str, Any]]:
    name = f"t_{uuid.uuid4().hex[:10]}"
    client = _client(chserver)
    yield name, client
    client.command(f"DROP DATABASE IF EXISTS {name}")


def _settings(chserver: ChServer, name: str, partition: str) -> Any:
    # TTL far past 2026-03-01: with the default 90 days, merges of the day's many parts would expire its rows
    return load_settings(clickhouse_url=chserver.clickhouse_url.rsplit("/", 1)[0] + f"/{name}",
                         clickhouse_partition=partition, clickhouse_ttl_days=36500)


def parquet(ids: list[str], h: datetime, **fields: Any) -> tuple[bytes, int]:
    rows = [raw_row(i, h + timedelta(minutes=k % 60), offset=k, **fields) for k, i in enumerate(ids)]
    table = enrich_hour(pa.Table.from_pylist(rows, schema=RAW_EVENT_SCHEMA), hour_start=h).table
    return to_parquet_bytes(table), table.num_rows


def partitions(client: Any, name: str) -> dict[str, int]:
    rows = client.query("SELECT partition_id, sum(rows) FROM system.parts WHERE database = {d:String}"
                        " AND table = 'events' AND active GROUP BY partition_id", parameters={"d": name}).result_rows
    return {str(p): int(n) for p, n in rows}


def test_day_partitions_replace_hours_and_clear_empty_ones(chserver: ChServer, database) -> None:  # noqa: ANN001
    name, client = database
    plan = ensure_schema(client, _settings(chserver, name, "day"))
    assert plan.partition == "day"
    ddl = client.command(f"SELECT engine_full FROM system.tables WHERE database = '{name}' AND name = 'events'")
    assert "PARTITION BY toYYYYMMDD(event_hour)" in ddl
    h10, h11, next_day = DAY + timedelta(hours=10), DAY + timedelta(hours=11), DAY + timedelta(days=1, hours=3)
    assert load_hour(client, plan, h10, *parquet(["a", "b", "c"], h10)) == 3
    assert load_hour(client, plan, h11, *parquet(["x"], h11)) == 1
    assert load_hour(client, plan, next_day, *parquet(["n"], next_day)) == 1
    assert partitions(client, name) == {"20260301": 4, "20260302": 1}
    assert load_hour(client, plan, h10, *parquet(["a", "b"], h10)) == 2  # replaced, not appended
    assert hour_row_count(client, plan, h11) == 1  # the day's other hour kept
    assert append_hour(client, plan, h11, *parquet(["y", "z"], h11)) == 2  # live rows join the day
    assert hour_row_count(client, plan, h11) == 3
    assert load_hour(client, plan, h10, b"", 0) == 0  # an hour that became empty is cleared ...
    assert partitions(client, name) == {"20260301": 3, "20260302": 1}  # ... the rest of its day is not
    # a range over both days: each day rewritten once, empty hours cleared
    assert load_hours(client, plan, [(h11, b"", 0), (h10, *parquet(["q"], h10)),
                                     (next_day, *parquet(["n", "m"], next_day))]) == [0, 1, 2]
    assert partitions(client, name) == {"20260301": 1, "20260302": 2}
    load_hours(client, plan, [(h10, b"", 0)])
    assert partitions(client, name) == {"20260302": 2}  # nothing left of the day: the partition is dropped
    leftovers = client.command(f"SELECT count() FROM system.tables WHERE database = '{name}' AND name LIKE 'events\\_\\_%'")
    assert int(leftovers) == 0  # no staging table, no lock left behind


def test_copies_within_a_day_are_listed(chserver: ChServer, database) -> None:  # noqa: ANN001
    """The day's rewrite copies the other hours' rows: they are not new copies, only the staged hour's are."""
    name, client = database
    plan = ensure_schema(client, _settings(chserver, name, "day"))
    h1, h2 = DAY + timedelta(hours=1), DAY + timedelta(hours=2)
    load_hour(client, plan, h1, *parquet(["dup", "only1"], h1))
    load_hour(client, plan, h2, *parquet(["dup", "only2"], h2))
    load_hour(client, plan, h1, *parquet(["dup", "only1"], h1))  # re-load: the day's copy of h2 is not a new copy
    listed = {r[0] for r in client.query(f"SELECT DISTINCT insert_id FROM {name}.event_copies WHERE project != ''").result_rows}
    assert listed == {"dup"}


def test_concurrent_writers_of_one_day_lose_nothing(chserver: ChServer, database) -> None:  # noqa: ANN001
    """Loads of four hours and live appends to a fifth, all at once, three rounds: each hour holds exactly its
    rows after every round (without the day lock, a rewrite would drop what another writer swapped in)."""
    name, client = database
    plan = ensure_schema(client, _settings(chserver, name, "day"))
    hours = [DAY + timedelta(hours=h) for h in range(4)]
    live = DAY + timedelta(hours=20)
    errors: list[BaseException] = []
    for rnd in range(3):
        files = {h: parquet([f"r{rnd}-{h.hour}-{k}" for k in range(5 + h.hour + rnd)], h) for h in hours}
        appends = [parquet([f"live-{rnd}-{k}"], live) for k in range(4)]

        def load(h: datetime, files: dict = files) -> None:
            try:
                load_hour(_client(chserver), plan, h, *files[h])
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        def append(appends: list = appends) -> None:
            try:
                c = _client(chserver)
                for data in appends:
                    append_hour(c, plan, live, *data)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=load, args=(h,)) for h in hours] + [threading.Thread(target=append)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert {h.hour: hour_row_count(client, plan, h) for h in hours} == {h.hour: 5 + h.hour + rnd for h in hours}
        assert hour_row_count(client, plan, live) == 4 * (rnd + 1)


def test_day_lock_excludes_and_a_stale_lock_is_taken_over(chserver: ChServer, database) -> None:  # noqa: ANN001
    name, client = database
    plan = ensure_schema(client, _settings(chserver, name, "day"))
    with day_lock(client, plan, "20260301"):
        with pytest.raises(TimeoutError, match="still locked"):
            with day_lock(_client(chserver), plan, "20260301", timeout_s=0.3):
                pass
        with day_lock(_client(chserver), plan, "20260302", timeout_s=0.3):  # another day is free
            pass
    with day_lock(client, plan, "20260301", timeout_s=0.3):  # released
        pass
    client.command(f"CREATE TABLE {name}.events__lock_20260303 (held UInt8) ENGINE = Memory")  # a crashed writer's
    with day_lock(client, plan, "20260303", timeout_s=5, stale_s=-1):
        pass
    # a crashed writer of this version: its tag is in the lock, but no query of it runs
    client.command(f"CREATE TABLE {name}.events__lock_20260304 (holder String) ENGINE = Memory")
    client.command(f"INSERT INTO {name}.events__lock_20260304 VALUES ('eventpipe-day-lock-20260304-dead')")
    with day_lock(client, plan, "20260304", timeout_s=5, stale_s=-1):
        pass


def test_a_long_running_holder_keeps_its_lock_past_the_stale_age(chserver: ChServer, database) -> None:  # noqa: ANN001
    name, client = database
    plan = ensure_schema(client, _settings(chserver, name, "day"))
    with day_lock(client, plan, "20260305") as run:
        long = threading.Thread(target=run, args=("SELECT sleepEachRow(0.1) FROM numbers(25) FORMAT Null",))
        long.start()  # a rewrite's statement, 2.5 s
        time.sleep(0.5)
        with pytest.raises(TimeoutError, match="still locked"):  # old by stale_s=-1, but its holder is at work
            with day_lock(_client(chserver), plan, "20260305", timeout_s=1.0, stale_s=-1):
                pass
        long.join()
    with day_lock(_client(chserver), plan, "20260305", timeout_s=1.0):  # released
        pass


def test_an_hour_table_keeps_hour_partitions_whatever_the_setting(chserver: ChServer, database) -> None:  # noqa: ANN001
    name, client = database
    ensure_schema(client, _settings(chserver, name, "hour"))
    plan = ensure_schema(client, _settings(chserver, name, "day"))
    assert plan.partition == "hour" and adapt_to_existing(client, plan).partition == "hour"
    h = DAY + timedelta(hours=5)
    assert load_hour(client, plan, h, *parquet(["a"], h)) == 1
    assert partitions(client, name) == {str(int(h.timestamp())): 1}


def test_day_partitions_are_single_server_only() -> None:
    with pytest.raises(SettingsError, match="single-server only"):
        load_settings(clickhouse_partition="day", clickhouse_cluster="c1")
    with pytest.raises(SettingsError, match="CLICKHOUSE_PARTITION"):
        load_settings(clickhouse_partition="week")


def test_partition_default_is_day_on_one_server_and_hour_on_a_cluster() -> None:
    assert load_settings(clickhouse_cluster=None).clickhouse_partition == "day"
    assert load_settings(clickhouse_cluster="c1").clickhouse_partition == "hour"
    assert load_settings(clickhouse_partition="hour").clickhouse_partition == "hour"
    assert load_settings(clickhouse_partition="").clickhouse_partition == "day"  # compose's ${CLICKHOUSE_PARTITION:-}
    assert load_settings(clickhouse_partition="", clickhouse_cluster="c1").clickhouse_partition == "hour"


def test_a_slow_day_rewrite_warns_before_the_lock_goes_stale(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="orchestration.clickhouse.load"):
        log_day_rewrite("20260301", 12_000, 0.4)
        log_day_rewrite("20260302", 90_000_000, DAY_LOCK_STALE_S / 4)
    quick, slow = caplog.records
    assert quick.levelno == logging.INFO and "12000 rows rewritten" in quick.getMessage()
    assert slow.levelno == logging.WARNING and "CLICKHOUSE_PARTITION=hour" in slow.getMessage()
