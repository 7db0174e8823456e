"""chserver over raw HTTP: ClickHouse's protocol conventions, input formats, compressions, malformed requests."""

from __future__ import annotations

import base64
import gzip
import io
import json
import struct
import threading
import time
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Iterator

import httpx
import lz4.frame
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from tests.chserver_support import READER, ChServer

N = 1000
EXPECTED = (N, sum(range(N)), sum(len(f"name-{i}") for i in range(N)))  # count, sum(id), sum(length(name))


@pytest.fixture()
def http(chserver: ChServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=chserver.url, timeout=60, auth=chserver.auth) as c:
        yield c


@pytest.fixture()
def table(http: httpx.Client) -> Iterator[str]:
    name = f"analytics.h_{uuid.uuid4().hex[:8]}"
    r = http.post("/", content=f"CREATE TABLE {name} (id UInt64, name String) ENGINE = MergeTree ORDER BY id".encode())
    assert r.status_code == 200, r.text
    yield name
    http.post("/", content=f"DROP TABLE IF EXISTS {name}".encode())


def totals(http: httpx.Client, table: str) -> tuple[int, int, int]:
    r = http.post("/", content=f"SELECT count(), sum(id), sum(length(name)) FROM {table}".encode())
    assert r.status_code == 200, r.text
    a, b, c = r.text.split()
    return int(a), int(b), int(c)


def assert_ch_error(r: httpx.Response, status: int, code: int) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["X-ClickHouse-Exception-Code"] == str(code)
    assert r.text.startswith(f"Code: {code}. DB::Exception: "), r.text
    assert "(version " in r.text


def raw_get(url: str, headers: dict[str, str], auth: tuple[str, str]) -> tuple[int, dict[str, str], bytes]:
    """urllib does not decode Content-Encoding: the test sees exactly what the server sent."""
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    req = urllib.request.Request(url, headers={**headers, "Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


# --- protocol basics -----------------------------------------------------------------------------------
def test_ping_and_root(http: httpx.Client) -> None:
    assert http.get("/ping").text == "Ok.\n"
    r = http.get("/")
    assert (r.status_code, r.text) == (200, "Ok.\n")
    assert http.get("/no/such/handler").status_code == 404


def test_get_select_with_headers(http: httpx.Client) -> None:
    r = http.get("/", params={"query": "SELECT number FROM system.numbers LIMIT 5", "query_id": "my-query-1"})
    assert r.status_code == 200
    assert r.text == "0\n1\n2\n3\n4\n"
    assert r.headers["X-ClickHouse-Query-Id"] == "my-query-1"
    assert r.headers["X-ClickHouse-Format"] == "TabSeparated"
    assert r.headers["X-ClickHouse-Timezone"]
    summary = json.loads(r.headers["X-ClickHouse-Summary"])
    assert int(summary["read_rows"]) >= 5 and "elapsed_ns" in summary
    assert r.headers["content-type"].startswith("text/tab-separated-values")
    # without a query_id one is generated
    assert len(http.get("/", params={"query": "SELECT 1"}).headers["X-ClickHouse-Query-Id"]) >= 16


def test_no_format_header_without_a_result_set(http: httpx.Client) -> None:
    """As ClickHouse: DDL/SET/INSERT answers carry no X-ClickHouse-Format (clickhouse-connect's command() checks it)."""
    name = f"analytics.fmt_{uuid.uuid4().hex[:8]}"
    for sql in (f"CREATE TABLE {name} (a UInt8) ENGINE = Memory", f"INSERT INTO {name} VALUES (1)", "SET max_threads = 1",
                f"DROP TABLE {name}"):
        r = http.post("/", content=sql.encode())
        assert r.status_code == 200 and "X-ClickHouse-Format" not in r.headers, (sql, r.headers)
        assert "X-ClickHouse-Summary" in r.headers
    assert http.post("/", content=b"SHOW DATABASES").headers["X-ClickHouse-Format"] == "TabSeparated"


def test_query_from_parameter_and_body_together(http: httpx.Client) -> None:
    r = http.post("/", params={"query": "SELECT 40 +"}, content=b"2")
    assert r.text == "42\n"


def test_formats_default_format_and_format_clause(http: httpx.Client) -> None:
    r = http.post("/", params={"default_format": "JSONEachRow"}, content=b"SELECT 1 AS a, 'x' AS b")
    assert r.headers["X-ClickHouse-Format"] == "JSONEachRow"
    assert json.loads(r.text) == {"a": 1, "b": "x"}
    r = http.post("/", params={"default_format": "JSONEachRow"}, content=b"SELECT 1 AS a, 'x' AS b FORMAT CSVWithNames")
    assert r.headers["X-ClickHouse-Format"] == "CSVWithNames"
    assert r.text == '"a","b"\n1,"x"\n'
    # FORMAT inside a string literal is data, not a clause
    r = http.post("/", content=b"SELECT 'FORMAT JSON' AS s")
    assert (r.headers["X-ClickHouse-Format"], r.text) == ("TabSeparated", "FORMAT JSON\n")


def test_query_parameters(http: httpx.Client) -> None:
    r = http.post("/", params={"param_n": "5", "param_s": "a'b"}, content=b"SELECT {n:UInt8} * 2, {s:String}")
    assert r.text == "10\ta\\'b\n"


def test_settings_apply_to_one_request_only(http: httpx.Client) -> None:
    default = http.post("/", content=b"SELECT getSetting('max_block_size')").text
    r = http.post("/", params={"max_block_size": "1234"}, content=b"SELECT getSetting('max_block_size')")
    assert r.text == "1234\n"
    assert http.post("/", content=b"SELECT getSetting('max_block_size')").text == default
    r = http.post("/", params={"database": "system"}, content=b"SELECT currentDatabase(), count() > 0 FROM one")
    assert r.text == "system\t1\n"
    assert http.post("/", content=b"SELECT currentDatabase()").text == "default\n"


def test_get_requests_are_read_only(http: httpx.Client, table: str) -> None:
    r = http.get("/", params={"query": f"INSERT INTO {table} VALUES (1, 'x')"})
    assert_ch_error(r, 500, 164)
    assert totals(http, table)[0] == 0


# --- INSERT: every input format, statement in `query` or at the head of the body -------------------------
def payload(fmt: str, http: httpx.Client) -> bytes:
    """N rows (id, name) encoded in ``fmt`` — by hand or with pyarrow where the format is simple enough."""
    if fmt == "JSONEachRow":
        return "".join(json.dumps({"id": i, "name": f"name-{i}"}) + "\n" for i in range(N)).encode()
    if fmt == "CSV":
        return "".join(f'{i},"name-{i}"\n' for i in range(N)).encode()
    if fmt == "TabSeparated":
        return "".join(f"{i}\tname-{i}\n" for i in range(N)).encode()
    if fmt == "RowBinary":
        out = io.BytesIO()
        for i in range(N):
            name = f"name-{i}".encode()
            out.write(struct.pack("<QB", i, len(name)) + name)
        return out.getvalue()
    if fmt == "Parquet":
        buf = io.BytesIO()
        table = pa.table({"id": pa.array(range(N), pa.uint64()), "name": [f"name-{i}" for i in range(N)]})
        pq.write_table(table, buf)
        return buf.getvalue()
    if fmt == "Native":
        sql = f"SELECT number AS id, concat('name-', toString(number)) AS name FROM numbers({N}) FORMAT Native"
        r = http.post("/", content=sql.encode())
        assert r.status_code == 200
        return r.content
    raise AssertionError(fmt)


INPUT_FORMATS = ["Native", "RowBinary", "JSONEachRow", "CSV", "TabSeparated", "Parquet"]


@pytest.mark.parametrize("fmt", INPUT_FORMATS)
def test_insert_format_with_statement_in_query(http: httpx.Client, table: str, fmt: str) -> None:
    r = http.post("/", params={"query": f"INSERT INTO {table} FORMAT {fmt}"}, content=payload(fmt, http))
    assert r.status_code == 200, r.text
    assert json.loads(r.headers["X-ClickHouse-Summary"])["written_rows"] == str(N)
    assert totals(http, table) == EXPECTED


@pytest.mark.parametrize("fmt", INPUT_FORMATS)
def test_insert_format_with_statement_at_head_of_body(http: httpx.Client, table: str, fmt: str) -> None:
    body = f"INSERT INTO {table} (id, name) FORMAT {fmt}\n".encode() + payload(fmt, http)
    r = http.post("/", content=body)
    assert r.status_code == 200, r.text
    assert totals(http, table) == EXPECTED


def test_insert_values_and_insert_select(http: httpx.Client, table: str) -> None:
    assert http.post("/", params={"query": f"INSERT INTO {table} VALUES"}, content=b"(1, 'a'), (2, 'b')").status_code == 200
    r = http.post("/", content=f"INSERT INTO {table} SELECT number + 10, 'c' FROM numbers(3)".encode())
    assert r.status_code == 200, r.text
    assert totals(http, table) == (5, 1 + 2 + 10 + 11 + 12, 5)


def test_native_data_starting_with_whitespace_bytes(http: httpx.Client) -> None:
    """A Native block of 10 or 32 columns begins with byte \\n or space: only one newline may be skipped."""
    name = f"analytics.w_{uuid.uuid4().hex[:8]}"
    cols = ", ".join(f"c{i} UInt8" for i in range(10))
    assert http.post("/", content=f"CREATE TABLE {name} ({cols}) ENGINE = Memory".encode()).status_code == 200
    select = ", ".join(f"toUInt8({i}) AS c{i}" for i in range(10))
    data = http.post("/", content=f"SELECT {select} FROM numbers(3) FORMAT Native".encode()).content
    assert data[:1] == b"\n"
    r = http.post("/", content=f"INSERT INTO {name} FORMAT Native\n".encode() + data)
    assert r.status_code == 200, r.text
    assert http.post("/", content=f"SELECT count(), sum(c9) FROM {name}".encode()).text == "3\t27\n"
    http.post("/", content=f"DROP TABLE {name}".encode())


# --- compression -------------------------------------------------------------------------------------------
def encode(data: bytes, method: str) -> bytes:
    if method == "gzip":
        return gzip.compress(data)
    if method == "deflate":
        return zlib.compress(data)
    if method == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    if method == "lz4":
        return lz4.frame.compress(data)
    raise AssertionError(method)


def decode(data: bytes, method: str) -> bytes:
    if method == "gzip":
        return gzip.decompress(data)
    if method == "deflate":
        return zlib.decompress(data)
    if method == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if method == "lz4":
        return lz4.frame.decompress(data)
    raise AssertionError(method)


@pytest.mark.parametrize("method", ["gzip", "deflate", "zstd", "lz4"])
def test_compressed_request_bodies(http: httpx.Client, table: str, method: str) -> None:
    body = f"INSERT INTO {table} FORMAT CSV\n".encode() + payload("CSV", http)
    r = http.post("/", content=encode(body, method), headers={"Content-Encoding": method})
    assert r.status_code == 200, r.text
    assert totals(http, table) == EXPECTED
    r = http.post("/", content=encode(b"SELECT 6 * 7", method), headers={"Content-Encoding": method})
    assert r.text == "42\n"


@pytest.mark.parametrize("method", ["gzip", "deflate", "zstd", "lz4"])
def test_compressed_responses(chserver: ChServer, method: str) -> None:
    url = f"{chserver.url}/?query=SELECT+number+FROM+numbers(10000)&enable_http_compression=1"
    expected = "".join(f"{i}\n" for i in range(10000)).encode()
    status, headers, body = raw_get(url, {"Accept-Encoding": f"{method}, identity;q=0.5"}, chserver.auth)
    assert status == 200
    assert headers.get("content-encoding") == method
    assert len(body) < len(expected)
    assert decode(body, method) == expected
    # without enable_http_compression=1 the response is plain even if the client accepts compression
    status, headers, body = raw_get(url.replace("&enable_http_compression=1", ""), {"Accept-Encoding": method}, chserver.auth)
    assert "content-encoding" not in {k.lower() for k in headers} and body == expected


# --- malformed requests: ClickHouse-style errors, never a crash ---------------------------------------------
def test_bad_sql_and_unknown_objects(http: httpx.Client) -> None:
    assert_ch_error(http.post("/", content=b"SELEC 1"), 400, 62)
    assert_ch_error(http.post("/", content=b"SELECT * FROM analytics.no_such_table"), 404, 60)
    assert_ch_error(http.post("/", content=b"SELECT 1", params={"database": "no_such_db"}), 404, 81)
    assert_ch_error(http.post("/", content=b"SELECT 1", params={"no_such_setting": "1"}), 404, 115)
    assert_ch_error(http.post("/", content=b"SELECT 1", params={"default_format": "NoSuchFormat"}), 404, 73)
    assert_ch_error(http.post("/", content=b""), 400, 62)
    assert_ch_error(http.post("/", content=b"SELECT 1; SELECT 2"), 400, 62)
    assert_ch_error(http.post("/", content=b"SELECT '\xff\xfe'"), 400, 36)


def test_truncated_and_garbage_bodies(http: httpx.Client, table: str) -> None:
    native = payload("Native", http)
    r = http.post("/", content=f"INSERT INTO {table} FORMAT Native\n".encode() + native[: len(native) // 2])
    assert_ch_error(r, 500, 33)  # CANNOT_READ_ALL_DATA
    r = http.post("/", content=f"INSERT INTO {table} FORMAT JSONEachRow\n".encode() + b'{"id": 1, "name": ')
    assert r.status_code in (400, 500) and r.text.startswith("Code: ")
    r = http.post("/", content=f"INSERT INTO {table} FORMAT Parquet\n".encode() + b"PAR1 not really parquet")
    assert r.status_code in (400, 500) and r.text.startswith("Code: ")
    r = http.post("/", content=f"INSERT INTO {table} FORMAT NoSuchFormat\n1\n".encode())
    assert_ch_error(r, 404, 73)
    assert totals(http, table)[0] == 0  # nothing half-inserted


def test_wrong_content_encoding(http: httpx.Client) -> None:
    body = b"SELECT 1"
    assert_ch_error(http.post("/", content=body, headers={"Content-Encoding": "gzip"}), 500, 354)
    assert_ch_error(http.post("/", content=body, headers={"Content-Encoding": "zstd"}), 500, 561)
    assert_ch_error(http.post("/", content=body, headers={"Content-Encoding": "lz4"}), 500, 618)
    assert_ch_error(http.post("/", content=gzip.compress(body)[:-6], headers={"Content-Encoding": "gzip"}), 500, 354)
    assert_ch_error(http.post("/", content=body, headers={"Content-Encoding": "snappy-ish"}), 501, 48)
    assert http.get("/ping").text == "Ok.\n"


# --- users ---------------------------------------------------------------------------------------------------
def test_users_by_basic_auth_headers_and_parameters(http: httpx.Client, table: str) -> None:
    with httpx.Client(base_url=http.base_url, timeout=60) as anonymous:
        _check_users(anonymous, table)
    assert totals(http, table)[0] == 0


def _check_users(http: httpx.Client, table: str) -> None:
    basic = "Basic " + base64.b64encode(f"{READER[0]}:{READER[1]}".encode()).decode()
    headers_ok = [
        {"Authorization": basic},
        {"X-ClickHouse-User": READER[0], "X-ClickHouse-Key": READER[1]},
    ]
    for headers in headers_ok:
        r = http.post("/", content=f"SELECT count() FROM {table}".encode(), headers=headers)
        assert r.text == "0\n"
        r = http.post("/", content=f"INSERT INTO {table} VALUES (1, 'x')".encode(), headers=headers)
        assert_ch_error(r, 500, 164)
        r = http.post("/", params={"query": f"INSERT INTO {table} FORMAT CSV"}, content=b"1,x\n", headers=headers)
        assert_ch_error(r, 500, 164)
        r = http.post("/", content=f"INSERT INTO {table} VALUES (1, 'x')".encode(), params={"readonly": "0"}, headers=headers)
        assert_ch_error(r, 500, 164)  # a read-only user cannot relax readonly
    r = http.post("/", params={"user": READER[0], "password": READER[1]}, content=b"SELECT currentUser() != ''")
    assert r.text == "1\n"
    wrong = [
        {"X-ClickHouse-User": READER[0], "X-ClickHouse-Key": "nope"},
        {"Authorization": "Basic " + base64.b64encode(b"default:nope").decode()},
        {"Authorization": "Basic !!!not-base64"},
        {"X-ClickHouse-User": "ghost"},
    ]
    for headers in wrong:
        assert_ch_error(http.post("/", content=b"SELECT 1", headers=headers), 403, 516)


# --- concurrency -----------------------------------------------------------------------------------------------
def test_long_query_does_not_block_ping_or_other_queries(chserver: ChServer) -> None:
    done: list[float] = []

    def long_query() -> None:
        with httpx.Client(base_url=chserver.url, timeout=60, auth=chserver.auth) as c:
            t0 = time.monotonic()
            r = c.post("/", content=b"SELECT sleep(2), sleep(1)")
            assert r.status_code == 200
            done.append(time.monotonic() - t0)

    worker = threading.Thread(target=long_query)
    worker.start()
    time.sleep(0.3)
    with httpx.Client(base_url=chserver.url, timeout=10, auth=chserver.auth) as c:
        latencies = []
        for _ in range(10):
            t0 = time.monotonic()
            assert c.get("/ping").text == "Ok.\n"
            latencies.append(time.monotonic() - t0)
        t0 = time.monotonic()
        assert c.post("/", content=b"SELECT 1").text == "1\n"
        other = time.monotonic() - t0
        still_running = worker.is_alive()
    worker.join()
    assert still_running, "the long query finished before the checks: the test proves nothing"
    assert max(latencies) < 0.5, latencies
    assert other < 1.0
    assert done and done[0] >= 2.9
