"""chserver through clickhouse-connect, the client Dagster steps, dbt and the API use."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import clickhouse_connect
import httpx
import pandas as pd
import pyarrow as pa
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError as ClientError

from tests.chserver_support import READER, ChServer

UTC = dt.UTC


def client(server: ChServer, **kwargs: object) -> Client:
    kwargs.setdefault("database", "analytics")
    if kwargs.get("username", "default") == "default":
        kwargs.setdefault("password", server.password)
    return clickhouse_connect.get_client(host=server.host, port=server.port, **kwargs)  # type: ignore[arg-type]


@pytest.fixture()
def ch(chserver: ChServer) -> Iterator[Client]:
    c = client(chserver, compress="lz4")
    yield c
    c.close()


@pytest.fixture()
def table(ch: Client) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:8]}"
    ch.command(
        f"CREATE TABLE {name} (id UInt64, name String, ts DateTime64(3, 'UTC'), score Float64, tags Array(String)) "
        "ENGINE = MergeTree ORDER BY id"
    )
    yield name
    ch.command(f"DROP TABLE IF EXISTS {name}")


def rows(n: int, offset: int = 0) -> list[list[object]]:
    base = dt.datetime(2026, 1, 1, tzinfo=UTC)
    return [[i, f"n{i}", base + dt.timedelta(seconds=i), i / 2, [f"t{i % 3}"]] for i in range(offset, offset + n)]


COLUMNS = ["id", "name", "ts", "score", "tags"]


def test_ddl_and_lz4_native_insert_then_query(ch: Client, table: str) -> None:
    summary = ch.insert(table, rows(10_000), column_names=COLUMNS)
    assert summary.written_rows == 10_000
    result = ch.query(f"SELECT count(), sum(id), min(ts), max(name) FROM {table}")
    count, total, first, top = result.result_rows[0]
    assert (count, total) == (10_000, sum(range(10_000)))
    assert first.replace(tzinfo=None) == dt.datetime(2026, 1, 1)
    assert top == "n9999"
    # DDL round trip: the table is listed with its engine and columns
    assert ch.command(f"EXISTS TABLE {table}") == 1
    described = ch.query(f"DESCRIBE TABLE {table}").result_rows
    assert [r[0] for r in described] == COLUMNS
    ch.command(f"ALTER TABLE {table} ADD COLUMN extra UInt8 DEFAULT 7")
    assert ch.query(f"SELECT DISTINCT extra FROM {table}").result_rows == [(7,)]


def test_insert_uses_lz4_native_body(chserver: ChServer, ch: Client, table: str) -> None:
    """What clickhouse-connect sends (lz4 body, statement at its head) is what the server accepted."""
    assert ch.write_compression == "lz4"
    ch.insert(table, rows(3), column_names=COLUMNS)
    assert ch.query(f"SELECT groupArray(name) FROM (SELECT name FROM {table} ORDER BY id)").result_rows == [(["n0", "n1", "n2"],)]


def test_query_arrow_and_df(ch: Client, table: str) -> None:
    ch.insert(table, rows(100), column_names=COLUMNS)
    arrow = ch.query_arrow(f"SELECT id, name, score, tags FROM {table} ORDER BY id")
    assert isinstance(arrow, pa.Table)
    assert arrow.num_rows == 100
    assert arrow.column("name")[5].as_py() in ("n5", b"n5")
    df = ch.query_df(f"SELECT id, score, ts FROM {table} WHERE id < 10 ORDER BY id")
    assert isinstance(df, pd.DataFrame)
    assert list(df["id"]) == list(range(10))
    assert df["score"].sum() == pytest.approx(sum(i / 2 for i in range(10)))
    assert str(df["ts"].iloc[0]).startswith("2026-01-01 00:00:00")


def test_server_side_parameters(ch: Client, table: str) -> None:
    ch.insert(table, rows(20), column_names=COLUMNS)
    sql = f"SELECT count() FROM {table} WHERE id >= {{lo:UInt64}} AND name != {{skip:String}}"
    got = ch.query(sql, parameters={"lo": 5, "skip": "n7"})
    assert got.result_rows == [(14,)]


def test_settings_and_database_are_per_request_under_concurrency(chserver: ChServer) -> None:
    """Threads hammer the server with different settings/databases; each answer must match its request."""
    admin = client(chserver)
    dbs = [f"iso_{uuid.uuid4().hex[:6]}_{i}" for i in range(4)]
    for db in dbs:
        admin.command(f"CREATE DATABASE {db}")
        admin.command(f"CREATE TABLE {db}.marker (v String) ENGINE = MergeTree ORDER BY v")
        admin.command(f"INSERT INTO {db}.marker VALUES ('{db}')")
    default_block = int(admin.query("SELECT getSetting('max_block_size')", settings={}).result_rows[0][0])
    errors: list[str] = []
    stop = threading.Event()

    def with_settings(i: int) -> None:
        c = client(chserver, database=dbs[i])
        try:
            for n in range(40):
                block = 1000 + i * 100 + n
                r = c.query(
                    "SELECT getSetting('max_block_size'), currentDatabase(), (SELECT any(v) FROM marker)",
                    settings={"max_block_size": block},
                ).result_rows[0]
                if (int(r[0]), r[1], r[2]) != (block, dbs[i], dbs[i]):
                    errors.append(f"thread {i}: expected {(block, dbs[i])}, got {r}")
        finally:
            c.close()

    def leaky_statements() -> None:
        # SET / USE statements in sessionless requests must not change later requests.
        with httpx.Client(base_url=chserver.url, auth=chserver.auth) as h:
            while not stop.is_set():
                h.post("/", content=b"SET max_block_size = 7")
                h.post("/", content=f"USE {dbs[0]}".encode())

    def bare(i: int) -> None:
        with httpx.Client(base_url=chserver.url, auth=chserver.auth) as h:
            for _ in range(60):
                r = h.post("/", content=b"SELECT getSetting('max_block_size'), currentDatabase()")
                if r.text != f"{default_block}\tdefault\n":
                    errors.append(f"bare {i}: leaked state {r.text!r}")

    leaker = threading.Thread(target=leaky_statements)
    leaker.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(with_settings, i) for i in range(4)] + [pool.submit(bare, i) for i in range(3)]
            for f in futures:
                f.result()
    finally:
        stop.set()
        leaker.join()
    assert errors == []
    for db in dbs:
        admin.command(f"DROP DATABASE {db}")
    admin.close()


def test_error_codes_reach_the_client(ch: Client) -> None:
    with pytest.raises(ClientError) as unknown:
        ch.query("SELECT * FROM analytics.no_such_table")
    assert "Code: 60" in str(unknown.value) and "UNKNOWN_TABLE" in str(unknown.value)
    with pytest.raises(ClientError) as syntax:
        ch.command("SELEC 1")
    assert "Code: 62" in str(syntax.value)
    with pytest.raises(ClientError) as setting:
        ch.query("SELECT 1", settings={"max_block_size": "not a number"})
    assert "Code:" in str(setting.value)
    # the connection is still usable afterwards
    assert ch.command("SELECT 40 + 2") == 42


def test_read_only_user(chserver: ChServer, ch: Client, table: str) -> None:
    ch.insert(table, rows(5), column_names=COLUMNS)
    reader = client(chserver, username=READER[0], password=READER[1])
    try:
        assert reader.query(f"SELECT count() FROM {table}").result_rows == [(5,)]
        assert reader.query("SELECT 1", settings={"max_block_size": 123}).result_rows == [(1,)]
        refused = [
            lambda: reader.insert(table, rows(1), column_names=COLUMNS),
            lambda: reader.command(f"INSERT INTO {table} (id) VALUES (99)"),
            lambda: reader.command(f"CREATE TABLE {table}_x (a UInt8) ENGINE = Memory"),
            lambda: reader.command(f"DROP TABLE {table}"),
            lambda: reader.command(f"TRUNCATE TABLE {table}"),
            lambda: reader.command(f"ALTER TABLE {table} DELETE WHERE 1"),
        ]
        for attempt in refused:
            with pytest.raises(ClientError) as exc:
                attempt()
            assert "Code: 164" in str(exc.value) and "READONLY" in str(exc.value)
        with pytest.raises(ClientError) as fs:
            reader.query("SELECT * FROM file('/etc/hostname', 'LineAsString')")
        assert "Code: 497" in str(fs.value)
    finally:
        reader.close()
    assert ch.query(f"SELECT count() FROM {table}").result_rows == [(5,)]
    assert ch.command(f"EXISTS TABLE {table}") == 1


def test_wrong_password_is_refused(chserver: ChServer) -> None:
    for user, password in [(READER[0], "wrong"), ("default", "not-the-password"), ("nobody", "")]:
        with pytest.raises(ClientError) as exc:
            client(chserver, username=user, password=password)
        assert "516" in str(exc.value) or "AUTHENTICATION_FAILED" in str(exc.value)


def test_concurrent_writers_and_readers_see_consistent_data(chserver: ChServer, table: str) -> None:
    """Dagster steps, dbt threads and BI tools at once: every acknowledged insert lands exactly once."""

    def writer(w: int) -> int:
        c = client(chserver, compress="lz4")
        try:
            for b in range(5):
                c.insert(table, rows(2_000, offset=(w * 5 + b) * 2_000), column_names=COLUMNS)
            return 10_000
        finally:
            c.close()

    def reader(_: int) -> int:
        c = client(chserver)
        try:
            seen = 0
            for _ in range(15):
                n, distinct = c.query(f"SELECT count(), uniqExact(id) FROM {table}").result_rows[0]
                assert n == distinct  # never a duplicated or torn row
                assert n >= seen  # counts only grow
                seen = n
            return seen
        finally:
            c.close()

    with ThreadPoolExecutor(8) as pool:
        writes = [pool.submit(writer, w) for w in range(5)]
        reads = [pool.submit(reader, r) for r in range(3)]
        written = sum(f.result() for f in writes)
        for f in reads:
            f.result()
    check = client(chserver)
    final = check.query(f"SELECT count(), uniqExact(id), sum(id) FROM {table}").result_rows
    assert final == [(written, written, sum(range(written)))]
    check.close()
