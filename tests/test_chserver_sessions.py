"""HTTP sessions (`session_id`): SET, USE and temporary tables persist within a session and nowhere else."""

from __future__ import annotations

import threading
import uuid

import httpx

from tests.chserver_support import ChServer


def _q(server: ChServer, sql: str, **params: str) -> httpx.Response:
    return httpx.post(server.url + "/", params=params, content=sql.encode(), timeout=30, auth=server.auth)


def test_temporary_tables_and_settings_live_in_their_session(chserver: ChServer) -> None:
    sid, other = uuid.uuid4().hex, uuid.uuid4().hex
    assert _q(chserver, "CREATE TEMPORARY TABLE tmp_s (a Int32) ENGINE = Memory", session_id=sid).status_code == 200
    assert _q(chserver, "INSERT INTO tmp_s VALUES (1), (2), (3)", session_id=sid).status_code == 200
    assert _q(chserver, "SELECT sum(a) FROM tmp_s", session_id=sid).text == "6\n"
    # invisible without the session and from another session
    for params in ({}, {"session_id": other}):
        r = _q(chserver, "SELECT sum(a) FROM tmp_s", **params)
        assert r.status_code == 404 and "UNKNOWN_TABLE" in r.text, r.text
    assert _q(chserver, "SET max_threads = 3", session_id=sid).status_code == 200
    assert _q(chserver, "SELECT getSetting('max_threads')", session_id=sid).text == "3\n"
    assert _q(chserver, "SELECT getSetting('max_threads')").text != "3\n"


def test_url_settings_and_database_apply_to_one_query_of_a_session(chserver: ChServer) -> None:
    """clickhouse-connect always sends a session_id: one max_threads=1 or database=… must not leak into later queries."""
    sid = uuid.uuid4().hex
    assert _q(chserver, "SET max_threads = 3", session_id=sid).status_code == 200
    assert _q(chserver, "SELECT getSetting('max_threads')", session_id=sid, max_threads="1").text == "1\n"
    assert _q(chserver, "SELECT getSetting('max_threads')", session_id=sid).text == "3\n"
    assert _q(chserver, "SELECT currentDatabase()", session_id=sid, database="system").text == "system\n"
    assert _q(chserver, "SELECT currentDatabase()", session_id=sid).text == "default\n"
    assert _q(chserver, "USE analytics", session_id=sid).status_code == 200  # a USE statement does stick
    assert _q(chserver, "SELECT currentDatabase()", session_id=sid).text == "analytics\n"


def test_session_check_and_lock(chserver: ChServer) -> None:
    r = _q(chserver, "SELECT 1", session_id=uuid.uuid4().hex, session_check="1")
    assert r.status_code == 500 and r.headers["X-ClickHouse-Exception-Code"] == "372", r.text

    sid = uuid.uuid4().hex
    assert _q(chserver, "SELECT 1", session_id=sid).status_code == 200
    results: list[httpx.Response] = []
    slow = threading.Thread(target=lambda: results.append(_q(chserver, "SELECT sleep(2)", session_id=sid)))
    slow.start()
    import time

    time.sleep(0.7)
    concurrent = _q(chserver, "SELECT 2", session_id=sid)
    slow.join()
    assert results[0].status_code == 200
    assert concurrent.status_code == 500 and concurrent.headers["X-ClickHouse-Exception-Code"] == "373", concurrent.text


def test_session_expires_after_its_timeout(chserver: ChServer) -> None:
    import time

    sid = uuid.uuid4().hex
    assert _q(chserver, "CREATE TEMPORARY TABLE tmp_e (a Int32) ENGINE = Memory", session_id=sid,
              session_timeout="1").status_code == 200
    time.sleep(2.2)
    r = _q(chserver, "SELECT count() FROM tmp_e", session_id=sid, session_timeout="1")
    assert r.status_code == 404, "an expired session starts afresh"
    bad = _q(chserver, "SELECT 1", session_id=sid, session_timeout="zero")
    assert bad.status_code == 400
