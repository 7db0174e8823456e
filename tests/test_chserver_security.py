"""Hostile attempts of the read-only user (and of anonymous clients) against chserver, each with its exact answer.

Every attempt is a real HTTP request to a real chserver; a refused attempt must leave nothing behind
(no file written, no table changed). Codes are ClickHouse's: READONLY 164 (HTTP 500), ACCESS_DENIED
497 (403), AUTHENTICATION_FAILED 516 (401 without credentials, 403 with wrong ones).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.chserver_support import READER, ChServer

DENIED = (403, 497)
READONLY = (500, 164)

# (sql, expected (status, code)) — the probe's categories: files, network, output files, settings, writes.
HOSTILE: list[tuple[str, tuple[int, int]]] = [
    ("SELECT * FROM file('/etc/passwd', 'LineAsString')", DENIED),
    ("SELECT * FROM `file`('/etc/passwd', 'LineAsString')", DENIED),
    ('SELECT * FROM "file"(\'/etc/passwd\', \'LineAsString\')', DENIED),
    ("SELECT * FROM FiLe('/etc/passwd', 'LineAsString')", DENIED),
    ("SELECT * FROM /* x */ file /* y */ ('/etc/passwd', 'LineAsString')", DENIED),
    ("SELECT * FROM file\n-- c\n('/etc/passwd', 'LineAsString')", DENIED),
    ("SELECT file('/etc/hostname')", DENIED),
    ("SELECT length(`file`('/etc/hostname'))", DENIED),
    ("SELECT * FROM filesystem('/etc')", DENIED),
    ("SELECT * FROM eval('SELECT 1')", DENIED),
    ("SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')", DENIED),
    ("SELECT * FROM `url`('http://127.0.0.1:1/', 'LineAsString')", DENIED),
    ("SELECT * FROM s3('http://127.0.0.1:1/b/k', 'LineAsString')", DENIED),
    ("SELECT * FROM remote('127.0.0.1:1', system.one)", DENIED),
    ("SELECT * FROM executable('id', 'LineAsString', 'x String')", DENIED),
    ("SELECT * FROM merge('default', '.*')", DENIED),
    ("SELECT * FROM numbers(1) AS n JOIN file('/etc/passwd', 'LineAsString') AS f ON 1", DENIED),
    ("SELECT 1 WHERE 'x' IN (SELECT * FROM file('/etc/passwd', 'LineAsString'))", DENIED),
    ("WITH t AS (SELECT * FROM file('/etc/passwd', 'LineAsString')) SELECT * FROM t", DENIED),
    ("SELECT * FROM (SELECT * FROM (SELECT * FROM file('/etc/passwd', 'LineAsString')))", DENIED),
    ("SELECT * FROM view(SELECT * FROM file('/etc/passwd', 'LineAsString'))", DENIED),
    ("DESCRIBE file('/etc/passwd', 'CSVWithNames')", DENIED),
    ("DESCRIBE TABLE file('/etc/passwd')", DENIED),
    ("EXPLAIN SELECT * FROM file('/etc/passwd', 'LineAsString')", DENIED),
    ("EXPLAIN PIPELINE SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')", DENIED),
    ("SELECT $a$'$a$ FROM file('/etc/passwd', 'LineAsString') -- '", DENIED),
    ("SELECT * FROM {f:Identifier}", DENIED),  # bound to secret_db.t below
    ("SELECT 1 INTO OUTFILE 'pwned.txt' FORMAT RawBLOB", DENIED),
    ("SELECT 1 INTO OUTFILE 'pwned.txt' TRUNCATE FORMAT RawBLOB", DENIED),
    ("SELECT $a$'$a$ INTO OUTFILE 'pwned.txt' FORMAT RawBLOB -- '", DENIED),
    ("SHOW TABLES INTO OUTFILE 'pwned.txt'", DENIED),
    ("EXPLAIN SELECT 1 INTO OUTFILE 'pwned.txt'", DENIED),
    ("SELECT * FROM secret_db.t", DENIED),
    ("SELECT * FROM `secret_db`.`t`", DENIED),
    ("SELECT * FROM \"secret_db\".t", DENIED),
    ("SELECT 1 WHERE 1 IN secret_db.t", DENIED),
    ("SELECT * FROM numbers(1) WHERE number IN (SELECT x FROM secret_db.t)", DENIED),
    ("SHOW TABLES FROM secret_db", DENIED),
    ("SHOW COLUMNS FROM t FROM secret_db", DENIED),
    ("SHOW CREATE TABLE secret_db.t", DENIED),
    ("EXISTS secret_db.t", DENIED),
    ("DESCRIBE secret_db.t", DENIED),
    ("USE secret_db", DENIED),
    ("SELECT 1 SETTINGS readonly = 0", READONLY),
    ("SELECT 1 SETTINGS allow_ddl = 1", READONLY),
    ("SELECT 1 SETTINGS max_execution_time = 0", READONLY),
    ("SELECT 1 SETTINGS max_execution_time = 100000", READONLY),
    ("SELECT 1 SETTINGS `allow_introspection_functions` = 1", READONLY),
    ("SET readonly = 0", READONLY),
    ("SET allow_experimental_analyzer = 0", READONLY),
    ("SET max_memory_usage = 0", READONLY),
    ("SET dialect = 'prql'", READONLY),
    ("INSERT INTO analytics.sec_t VALUES (1)", READONLY),
    ("INSERT INTO FUNCTION file('pwned.txt', 'CSV') SELECT 1", READONLY),
    ("CREATE TABLE analytics.pwn (a UInt8) ENGINE = Memory", READONLY),
    ("CREATE TEMPORARY TABLE pwn (a UInt8)", READONLY),
    ("DROP TABLE analytics.sec_t", READONLY),
    ("TRUNCATE TABLE analytics.sec_t", READONLY),
    ("ALTER TABLE analytics.sec_t DELETE WHERE 1", READONLY),
    ("OPTIMIZE TABLE analytics.sec_t", READONLY),
    ("SYSTEM FLUSH LOGS", READONLY),
    ("KILL QUERY WHERE 1", DENIED),  # readers may kill only their own queries, named by id
    ("CREATE USER x IDENTIFIED BY 'y'", READONLY),
    ("GRANT ALL ON *.* TO reader", READONLY),
    ("/* comment */ DROP TABLE analytics.sec_t", READONLY),
    ("(SELECT 1); DROP TABLE analytics.sec_t", (400, 62)),
    # tables and dictionaries named inside functions
    ("SELECT dictGet('secret_db.d', 'x', toUInt64(1))", DENIED),
    ("SELECT dictGetOrDefault('secret_db.d', 'x', toUInt64(1), '')", DENIED),
    ("SELECT dictHas(secret_db.d, toUInt64(1))", DENIED),
    ("SELECT dictGet(concat('secret_db', '.d'), 'x', toUInt64(1))", DENIED),
    ("SELECT joinGet('secret_db.j', 'v', toUInt64(1))", DENIED),
    ("SELECT joinGet(secret_db.j, 'v', toUInt64(1))", DENIED),
    ("SELECT joinGetOrNull(`secret_db`.`j`, 'v', toUInt64(1))", DENIED),
    ("SELECT hasColumnInTable('secret_db', 't', 'x')", DENIED),
    # other users' queries and the access configuration
    ("SELECT query FROM system.processes", DENIED),
    ("SELECT query FROM `system`.`processes`", DENIED),
    ("SELECT query FROM system.query_log", DENIED),
    ("SELECT 1 WHERE 'x' IN (SELECT query FROM system.processes)", DENIED),
    ("SELECT last_error_message FROM system.errors", DENIED),
    ("SHOW PROCESSLIST", DENIED),
]

# Statements a reader may run.
ALLOWED = [
    "SELECT count() FROM sec_t",
    "SELECT count() FROM analytics.sec_t",
    "SELECT * FROM numbers(3) AS n JOIN analytics.sec_t AS t ON n.number = t.a",
    "SELECT count() FROM generateSeries(1, 3)",
    "SELECT * FROM values('x Int8', 1, 2)",
    "SELECT * FROM view(SELECT 1)",
    "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
    "SELECT 'file(' || 'INTO OUTFILE', 'secret_db'",
    "SELECT count() FROM system.tables WHERE database = 'secret_db'",
    "SHOW TABLES",
    "SHOW TABLES FROM analytics",
    "SHOW DATABASES",
    "DESCRIBE analytics.sec_t",
    "EXISTS analytics.sec_t",
    "EXPLAIN SELECT 1",
    "SELECT 1 SETTINGS max_threads = 1, max_execution_time = 5",
    "SET max_threads = 2",
    "SELECT number FROM numbers(2) FORMAT JSONEachRow",
    "SELECT joinGet('analytics.sec_j', 'v', toUInt64(1))",
    "SELECT joinGet(sec_j, 'v', toUInt64(1))",
    "SELECT dictGet('analytics.sec_d', 'v', toUInt64(1))",
    "SELECT hasColumnInTable('analytics', 'sec_t', 'a')",
    "SELECT count() FROM system.one",
]


@pytest.fixture(scope="module")
def setup(chserver: ChServer) -> Iterator[ChServer]:
    with httpx.Client(base_url=chserver.url, auth=chserver.auth, timeout=60) as w:
        for sql in (
            "CREATE DATABASE IF NOT EXISTS secret_db",
            "CREATE TABLE IF NOT EXISTS secret_db.t (x String) ENGINE = Memory",
            "INSERT INTO secret_db.t VALUES ('secret')",
            "CREATE TABLE IF NOT EXISTS analytics.sec_t (a UInt64) ENGINE = Memory",
            "INSERT INTO analytics.sec_t VALUES (1)",
            "CREATE TABLE IF NOT EXISTS secret_db.j (k UInt64, v String) ENGINE = Join(ANY, LEFT, k)",
            "INSERT INTO secret_db.j VALUES (1, 'secret')",
            "CREATE TABLE IF NOT EXISTS analytics.sec_j (k UInt64, v String) ENGINE = Join(ANY, LEFT, k)",
            "INSERT INTO analytics.sec_j VALUES (1, 'public')",
            "CREATE DICTIONARY IF NOT EXISTS secret_db.d (k UInt64, x String) PRIMARY KEY k "
            "SOURCE(CLICKHOUSE(QUERY 'SELECT 1 AS k, \\'secret\\' AS x')) LIFETIME(0) LAYOUT(FLAT())",
            "CREATE DICTIONARY IF NOT EXISTS analytics.sec_d (k UInt64, v String) PRIMARY KEY k "
            "SOURCE(CLICKHOUSE(QUERY 'SELECT 1 AS k, \\'public\\' AS v')) LIFETIME(0) LAYOUT(FLAT())",
        ):
            assert w.post("/", content=sql.encode()).status_code == 200, sql
        yield chserver
        w.post("/", content=b"DROP DATABASE secret_db")
        w.post("/", content=b"DROP TABLE analytics.sec_t")
        w.post("/", content=b"DROP TABLE analytics.sec_j")
        w.post("/", content=b"DROP DICTIONARY analytics.sec_d")


@pytest.fixture()
def reader(setup: ChServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=setup.url, auth=READER, timeout=60) as c:
        yield c


@pytest.mark.parametrize(("sql", "expected"), HOSTILE, ids=[h[0][:60] for h in HOSTILE])
def test_reader_hostile_attempt_is_refused(reader: httpx.Client, setup: ChServer, sql: str, expected: tuple[int, int]) -> None:
    params = {"param_f": "secret_db.t"} if "{f:" in sql else {}
    r = reader.post("/", content=sql.encode(), params=params)
    assert (r.status_code, r.headers.get("X-ClickHouse-Exception-Code")) == (expected[0], str(expected[1])), r.text
    assert "root:" not in r.text and "secret" not in r.text.replace("secret_db", "")
    assert not list(Path.cwd().glob("pwned.txt")) and not list(setup.data_dir.rglob("pwned.txt"))
    with httpx.Client(base_url=setup.url, auth=setup.auth, timeout=60) as w:
        assert w.post("/", content=b"SELECT count() FROM analytics.sec_t").text == "1\n"


@pytest.mark.parametrize("sql", ALLOWED)
def test_reader_may_read(reader: httpx.Client, sql: str) -> None:
    r = reader.post("/", content=sql.encode(), params={"database": "analytics"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"readonly": "0"}, READONLY),  # URL settings: readonly cannot be relaxed
        ({"allow_ddl": "1"}, READONLY),
        ({"allow_experimental_analyzer": "0"}, READONLY),
        ({"max_execution_time": "0"}, READONLY),
        ({"max_execution_time": "3600"}, READONLY),
        ({"max_memory_usage": "0"}, READONLY),
        ({"dialect": "kusto"}, READONLY),
        ({"database": "secret_db"}, DENIED),
    ],
)
def test_reader_url_settings_are_constrained(reader: httpx.Client, params: dict[str, str], expected: tuple[int, int]) -> None:
    r = reader.post("/", content=b"SELECT 1", params=params)
    assert (r.status_code, r.headers.get("X-ClickHouse-Exception-Code")) == (expected[0], str(expected[1])), r.text


def test_reader_settings_within_profile_apply(reader: httpx.Client) -> None:
    sql = b"SELECT getSetting('max_execution_time'), getSetting('max_threads')"
    r = reader.post("/", content=sql, params={"max_threads": "1"})
    assert r.text == "60\t1\n"
    # in a session, a vetted SET persists; a refused one changes nothing
    sid = {"session_id": "reader-sec-1"}
    assert reader.post("/", content=b"SET max_threads = 3", params=sid).status_code == 200
    assert reader.post("/", content=b"SELECT getSetting('max_threads')", params=sid).text == "3\n"
    assert reader.post("/", content=b"SET max_execution_time = 0", params=sid).status_code == 500
    assert reader.post("/", content=b"SELECT getSetting('max_execution_time')", params=sid).text == "60\n"


def test_reader_default_database_is_the_urls(reader: httpx.Client) -> None:
    assert reader.post("/", content=b"SELECT currentDatabase(), count() FROM sec_t").text == "analytics\t1\n"


def test_anonymous_requests_get_401(setup: ChServer) -> None:
    r = httpx.post(setup.url + "/", content=b"DROP TABLE analytics.sec_t", timeout=30)
    assert (r.status_code, r.headers.get("X-ClickHouse-Exception-Code")) == (401, "516"), r.text
    assert r.headers.get("WWW-Authenticate", "").startswith("Basic")
    r = httpx.get(setup.url + "/", params={"query": "SELECT 1"}, timeout=30)
    assert r.status_code == 401
    wrong = "Basic " + base64.b64encode(b"default:guess").decode()
    r = httpx.post(setup.url + "/", content=b"SELECT 1", headers={"Authorization": wrong}, timeout=30)
    assert (r.status_code, r.headers.get("X-ClickHouse-Exception-Code")) == (403, "516")


def test_browser_cross_origin_requests_are_refused(setup: ChServer) -> None:
    """A web page's text/plain POST (no preflight) carries Origin: it must not reach SQL, even with credentials."""
    for headers in ({"Origin": "https://evil.example", "Content-Type": "text/plain"}, {"Sec-Fetch-Site": "cross-site"}):
        r = httpx.post(setup.url + "/", content=b"DROP TABLE analytics.sec_t", headers=headers, auth=setup.auth, timeout=30)
        assert (r.status_code, r.headers.get("X-ClickHouse-Exception-Code")) == (403, "497"), r.text
    assert httpx.options(setup.url + "/", headers={"Origin": "https://evil.example"}, timeout=30).status_code == 403
    with httpx.Client(base_url=setup.url, auth=setup.auth, timeout=60) as w:
        assert w.post("/", content=b"SELECT count() FROM analytics.sec_t").text == "1\n"


@pytest.mark.parametrize("name", ["query_id", "session_id"])
def test_newline_in_ids_is_400(setup: ChServer, name: str) -> None:
    r = httpx.post(setup.url + "/", params={name: "a\nb"}, content=b"SELECT 1", auth=setup.auth, timeout=30)
    assert (r.status_code, r.headers.get("X-ClickHouse-Exception-Code")) == (400, "36"), r.text


# --- the trusted service user: reader rules plus file() on the lake only -------------------------------------
@pytest.fixture()
def service(setup: ChServer) -> Iterator[tuple[httpx.Client, Path]]:
    home = setup.data_dir.parent  # the server's EVENTPIPE_HOME: the default lake lives there
    password = setup.service_password  # CLICKHOUSE_SERVICE_PASSWORD of the server (else generated into its home)
    lake = home / "lake" / "enriched" / "sec"
    lake.mkdir(parents=True, exist_ok=True)
    (lake / "part.csv").write_text("1,a\n2,b\n")
    with httpx.Client(base_url=setup.url, auth=("query_service", password), timeout=60) as c:
        yield c, lake


def test_service_user_reads_the_lake_and_nothing_else(service: tuple[httpx.Client, Path], reader: httpx.Client) -> None:
    client, lake = service
    ok = f"SELECT count(), sum(c1) FROM file('{lake}/*.csv', 'CSV')"
    r = client.post("/", content=ok.encode())
    assert (r.status_code, r.text) == (200, "2\t3\n"), r.text
    assert client.post("/", content=b"SELECT count() FROM analytics.sec_t").text == "1\n"
    for sql in (
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        f"SELECT * FROM file('{lake}/../../../chserver-credentials', 'LineAsString')",
        f"SELECT * FROM file('{lake.parent.parent}x/a.csv', 'CSV')",  # a sibling dir sharing the prefix
        "SELECT * FROM file({p:String}, 'LineAsString')",  # not a literal: cannot be checked
        "SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')",
        f"SELECT 1 INTO OUTFILE '{lake}/pwned.txt'",
        "SELECT * FROM secret_db.t",
    ):
        r = client.post("/", content=sql.encode(), params={"param_p": "/etc/passwd"})
        assert (r.status_code, r.headers.get("X-ClickHouse-Exception-Code")) == DENIED_STR, (sql, r.text)
    assert client.post("/", content=b"DROP TABLE analytics.sec_t").headers.get("X-ClickHouse-Exception-Code") == "164"
    r = reader.post("/", content=ok.encode())  # the BI reader may not read files, not even the lake's
    assert (r.status_code, r.headers.get("X-ClickHouse-Exception-Code")) == DENIED_STR


DENIED_STR = (DENIED[0], str(DENIED[1]))


# --- limits -------------------------------------------------------------------------------------------------
def test_reader_limits_apply(reader: httpx.Client) -> None:
    r = reader.post("/", content=b"SELECT count() FROM system.numbers", params={"max_execution_time": "1"})
    assert (r.status_code, r.headers.get("X-ClickHouse-Exception-Code")) == (408, "159"), r.text
    r = reader.post("/", content=b"SELECT number FROM numbers(100)", params={"max_result_rows": "5"})
    assert r.headers.get("X-ClickHouse-Exception-Code") == "396", r.text


def test_slow_readers_cannot_stall_the_writer(setup: ChServer) -> None:
    """More slow reader queries than the reader's limit: the extra ones get 202 at once; the writer answers promptly."""
    import concurrent.futures
    import time

    def slow(_: int) -> httpx.Response:
        return httpx.post(setup.url + "/", content=b"SELECT sleep(2)", auth=READER, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(slow, i) for i in range(12)]
        time.sleep(0.7)
        t0 = time.monotonic()
        r = httpx.post(setup.url + "/", content=b"SELECT 1", auth=setup.auth, timeout=60)
        writer_s = time.monotonic() - t0
        results = [f.result() for f in futures]
    assert r.text == "1\n" and writer_s < 1.5, writer_s
    codes = sorted(x.headers.get("X-ClickHouse-Exception-Code", "ok") for x in results)
    assert codes.count("ok") == 8 and codes.count("202") == 4, codes
    assert all(x.status_code == 503 for x in results if x.status_code != 200)


@pytest.mark.parametrize("sql", ["SELECT query FROM processes", "SELECT count() FROM query_log"])
def test_reader_private_system_tables_refused_unqualified_too(reader: httpx.Client, sql: str) -> None:
    r = reader.post("/", content=sql.encode(), params={"database": "system"})
    assert (r.status_code, r.headers.get("X-ClickHouse-Exception-Code")) == (403, "497"), r.text
    assert reader.post("/", content=b"SELECT count() FROM one", params={"database": "system"}).text == "1\n"
