"""CREATE USER / GRANT / REVOKE / SHOW GRANTS / DROP USER, emulated in chserver's own user table."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import clickhouse_connect
import httpx
import pytest

from tests.chserver_support import READER, ChServer, start_chserver


def sql(server: ChServer, text: str, auth: tuple[str, str] | None = None, **params: str) -> httpx.Response:
    return httpx.post(server.url, content=text.encode(), params=params, auth=auth or server.auth, timeout=30)


def ok(server: ChServer, text: str, auth: tuple[str, str] | None = None) -> str:
    r = sql(server, text, auth)
    assert r.status_code == 200, (text, r.text)
    return r.text


def code(r: httpx.Response) -> tuple[int, str | None]:
    return r.status_code, r.headers.get("X-ClickHouse-Exception-Code")


@pytest.fixture()
def db(chserver: ChServer) -> Iterator[str]:
    name = f"t_users_{uuid.uuid4().hex[:6]}"
    ok(chserver, f"CREATE DATABASE {name}")
    for table in ("a", "b"):
        ok(chserver, f"CREATE TABLE {name}.{table} (x UInt8) ENGINE = Memory")
        ok(chserver, f"INSERT INTO {name}.{table} VALUES (7)")
    yield name
    ok(chserver, f"DROP DATABASE {name}")


def test_user_without_password_and_on_cluster_clause(chserver: ChServer) -> None:
    user = f"u_{uuid.uuid4().hex[:6]}"
    ok(chserver, f"CREATE USER {user} ON CLUSTER default HOST ANY")  # no IDENTIFIED: no password, as ClickHouse
    assert ok(chserver, "SELECT currentDatabase() != ''", (user, "")) == "1\n"
    ok(chserver, f"DROP USER IF EXISTS {user}")


def test_created_user_reads_only_what_was_granted(chserver: ChServer, db: str) -> None:
    user = f"u_{uuid.uuid4().hex[:6]}"
    me = (user, "pw-1")
    ok(chserver, f"CREATE USER IF NOT EXISTS {user} IDENTIFIED WITH sha256_password BY 'pw-1'")
    # no grant yet: authenticated, but nothing of the database is readable
    assert code(sql(chserver, f"SELECT x FROM {db}.a", me)) == (403, "497")
    assert ok(chserver, "SELECT 1", me) == "1\n"  # system/inline reads are always allowed
    ok(chserver, f"GRANT SELECT ON {db}.* TO {user}")
    assert ok(chserver, f"SELECT x FROM {db}.a", me) == "7\n"
    assert sql(chserver, "SELECT x FROM a", me, database=db).text == "7\n"
    # reader rules still hold: no writes, no files, no other database
    assert code(sql(chserver, f"INSERT INTO {db}.a VALUES (1)", me)) == (500, "164")
    assert code(sql(chserver, "SELECT * FROM file('/etc/passwd', 'LineAsString')", me)) == (403, "497")
    assert code(sql(chserver, "SELECT count() FROM analytics.events", me)) == (403, "497")
    assert code(sql(chserver, "SELECT query FROM system.processes", me)) == (403, "497")
    # SHOW GRANTS: the user about itself, the writer about anyone
    assert ok(chserver, "SHOW GRANTS", me) == f"GRANT SELECT ON {db}.* TO {user}\n"
    assert ok(chserver, f"SHOW GRANTS FOR {user}") == f"GRANT SELECT ON {db}.* TO {user}\n"
    assert code(sql(chserver, "SHOW GRANTS FOR default", me)) == (403, "497")
    assert user in ok(chserver, "SHOW USERS").split()
    # REVOKE takes it away again; DROP USER ends the account
    ok(chserver, f"REVOKE SELECT ON {db}.* FROM {user}")
    assert code(sql(chserver, f"SELECT x FROM {db}.a", me)) == (403, "497")
    ok(chserver, f"DROP USER {user}")
    assert code(sql(chserver, "SELECT 1", me)) == (403, "516")


def test_table_grant_permits_that_table_only(chserver: ChServer, db: str) -> None:
    user = f"u_{uuid.uuid4().hex[:6]}"
    me = (user, "secret")
    ok(chserver, f"CREATE USER {user} IDENTIFIED BY 'secret'")
    ok(chserver, f"GRANT SELECT ON {db}.a TO {user}")
    assert ok(chserver, f"SELECT x FROM {db}.a", me) == "7\n"
    assert ok(chserver, "SELECT x FROM a", me) == "7\n"  # the default database is the granted one
    assert code(sql(chserver, f"SELECT x FROM {db}.b", me)) == (403, "497")
    assert code(sql(chserver, f"SELECT 1 WHERE 7 IN {db}.b", me)) == (403, "497")
    # clickhouse-connect as the created user
    c = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username=user, password="secret")
    assert c.query(f"SELECT x FROM {db}.a").result_rows == [(7,)]
    ok(chserver, f"DROP USER {user}")


def test_access_statements_errors(chserver: ChServer) -> None:
    user = f"u_{uuid.uuid4().hex[:6]}"
    ok(chserver, f"CREATE USER {user} IDENTIFIED WITH plaintext_password BY 'p'")
    assert code(sql(chserver, f"CREATE USER {user} IDENTIFIED BY 'q'")) == (500, "493")  # already exists
    ok(chserver, f"CREATE USER IF NOT EXISTS {user} IDENTIFIED BY 'q'")
    assert code(sql(chserver, "SELECT 1", (user, "q"))) == (403, "516")  # IF NOT EXISTS changed nothing
    ok(chserver, f"ALTER USER {user} IDENTIFIED BY 'q'")
    assert ok(chserver, "SELECT 1", (user, "q")) == "1\n"
    # readers and the created users themselves cannot manage users; GET is read-only too
    for who in (READER, (user, "q")):
        assert code(sql(chserver, "CREATE USER x IDENTIFIED BY 'y'", who)) == (500, "164")
        assert code(sql(chserver, f"GRANT SELECT ON *.* TO {user}", who)) == (500, "164")
    r = httpx.get(chserver.url, params={"query": f"DROP USER {user}"}, auth=chserver.auth, timeout=30)
    assert code(r) == (500, "164")
    # the configured users are not SQL's to change
    assert code(sql(chserver, "DROP USER default")) == (403, "497")
    assert code(sql(chserver, "GRANT SELECT ON secret.* TO reader")) == (403, "497")
    assert code(sql(chserver, "DROP USER nobody_here")) == (403, "192")  # UNKNOWN_USER
    ok(chserver, "DROP USER IF EXISTS nobody_here")
    assert code(sql(chserver, f"GRANT SELECT(x) ON t.a TO {user}")) == (501, "48")
    assert code(sql(chserver, f"GRANT SELECT ON t.* TO {user}; GRANT ALL ON *.* TO {user}")) == (400, "62")
    assert ok(chserver, f"SHOW GRANTS FOR {user}") == ""  # nothing of the refused request was applied
    ok(chserver, f"DROP USER {user}")


def test_sha256_hash_and_no_password(chserver: ChServer, db: str) -> None:
    user = f"u_{uuid.uuid4().hex[:6]}"
    digest = hashlib.sha256(b"hashed-pw" + b"NaCl").hexdigest()
    ok(chserver, f"CREATE USER {user} IDENTIFIED WITH sha256_hash BY '{digest}' SALT 'NaCl'")
    assert ok(chserver, "SELECT 1", (user, "hashed-pw")) == "1\n"
    assert code(sql(chserver, "SELECT 1", (user, "other"))) == (403, "516")
    ok(chserver, f"DROP USER {user}")
    ok(chserver, f"CREATE USER {user} NOT IDENTIFIED")
    assert ok(chserver, "SELECT 1", (user, "")) == "1\n"
    ok(chserver, f"DROP USER {user}")


def test_created_users_survive_a_restart(tmp_path: Path) -> None:
    server = start_chserver(tmp_path / "clickhouse")
    try:
        ok(server, "CREATE DATABASE t_keep")
        ok(server, "CREATE TABLE t_keep.t (x UInt8) ENGINE = MergeTree ORDER BY x")
        ok(server, "INSERT INTO t_keep.t VALUES (3)")
        ok(server, "CREATE USER bi_tool IDENTIFIED BY 'bi-pw' DEFAULT DATABASE t_keep")
        ok(server, "GRANT SELECT ON t_keep.* TO bi_tool")
    finally:
        assert server.stop() == 0
    stored = (tmp_path / "clickhouse" / "chserver-users.json")
    assert stored.stat().st_mode & 0o077 == 0 and "bi-pw" not in stored.read_text()
    server = start_chserver(tmp_path / "clickhouse", password=server.password)
    try:
        assert ok(server, "SELECT x FROM t", ("bi_tool", "bi-pw")) == "3\n"
    finally:
        server.stop()
