"""Cancelling queries on chserver: ``KILL QUERY`` (the writer any, readers their own) and client disconnects."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable

import clickhouse_connect
import httpx
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from tests.chserver_support import READER, ChServer

# ~60 s of sleeping in 0.1 s blocks: a kill is seen at the next block, and it costs no CPU meanwhile
SLOW = "SELECT sleepEachRow(0.1) FROM numbers(600) SETTINGS max_block_size = 1"


def client(server: ChServer, user: tuple[str, str] | None = None) -> Client:
    name, password = user or server.auth
    return clickhouse_connect.get_client(
        host=server.host, port=server.port, username=name, password=password, send_receive_timeout=120
    )


def engine_running(server: ChServer, marker: str) -> int:
    """Queries the engine itself is running whose text holds ``marker`` (what a kill must end)."""
    sql = f"SELECT count() FROM system.processes WHERE query LIKE '%{marker}%' AND query NOT LIKE '%system.processes%'"
    r = httpx.post(server.url, params={"query": sql}, auth=server.auth, timeout=30)
    assert r.status_code == 200, r.text
    return int(r.text)


def kill(server: ChServer, condition: str, user: tuple[str, str] | None = None) -> list[tuple[str, str, str]]:
    """``KILL QUERY WHERE <condition>`` over raw HTTP: (kill_status, query_id, user) of each query found."""
    r = httpx.post(server.url, params={"query": f"KILL QUERY WHERE {condition} FORMAT JSONEachRow"},
                   auth=user or server.auth, timeout=90)
    assert r.status_code == 200, r.text
    return [(row["kill_status"], row["query_id"], row["user"]) for row in map(json.loads, r.text.splitlines())]


def wait_until(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def run_in_thread(c: Client, sql: str, query_id: str) -> tuple[threading.Thread, dict[str, object]]:
    out: dict[str, object] = {}

    def target() -> None:
        t0 = time.monotonic()
        try:
            out["rows"] = c.query(sql, settings={"query_id": query_id}).result_rows
        except DatabaseError as exc:
            out["error"] = exc
        out["elapsed"] = time.monotonic() - t0

    thread = threading.Thread(target=target)
    thread.start()
    return thread, out


def test_writer_kills_a_running_query_by_id(chserver: ChServer) -> None:
    marker = f"kill_{uuid.uuid4().hex[:8]}"
    query_id = f"q-{marker}"
    victim = client(chserver)
    thread, out = run_in_thread(victim, f"{SLOW.replace('SELECT', f'SELECT {marker!r},', 1)}", query_id)
    assert wait_until(lambda: engine_running(chserver, marker) == 1)
    killer = client(chserver)
    t0 = time.monotonic()
    rows = killer.query(f"KILL QUERY WHERE query_id = '{query_id}' SYNC").result_rows
    assert time.monotonic() - t0 < 10
    assert [(r[0], r[1], r[2]) for r in rows] == [("finished", query_id, "default")]
    thread.join(30)
    assert isinstance(out.get("error"), DatabaseError) and out["error"].code == 394, out  # QUERY_WAS_CANCELLED
    assert out["elapsed"] < 30
    assert engine_running(chserver, marker) == 0
    # the id is free again, and a condition on other columns works for the writer
    assert kill(chserver, f"user = 'default' AND query LIKE '%{marker}%'") == []


def test_a_query_id_already_running_is_refused(chserver: ChServer) -> None:
    marker = f"dup_{uuid.uuid4().hex[:8]}"
    query_id = f"q-{marker}"
    thread, out = run_in_thread(client(chserver), SLOW.replace("SELECT", f"SELECT {marker!r},", 1), query_id)
    assert wait_until(lambda: engine_running(chserver, marker) == 1)
    r = httpx.post(chserver.url, params={"query": "SELECT 1", "query_id": query_id}, auth=chserver.auth, timeout=30)
    assert r.status_code == 400 and r.headers["X-ClickHouse-Exception-Code"] == "216", r.text
    client(chserver).command(f"KILL QUERY WHERE query_id = '{query_id}' SYNC")
    thread.join(30)
    assert out["error"].code == 394  # type: ignore[union-attr]


def test_readers_kill_only_their_own_queries(chserver: ChServer) -> None:
    marker = f"rkill_{uuid.uuid4().hex[:8]}"
    writer_id, reader_id = f"w-{marker}", f"r-{marker}"
    w_thread, w_out = run_in_thread(client(chserver), SLOW.replace("SELECT", f"SELECT '{marker}w',", 1), writer_id)
    r_thread, r_out = run_in_thread(client(chserver, READER), SLOW.replace("SELECT", f"SELECT '{marker}r',", 1), reader_id)
    assert wait_until(lambda: engine_running(chserver, marker) == 2)
    reader = client(chserver, READER)
    # the writer's query is not the reader's to kill: nothing is found, and it keeps running
    assert kill(chserver, f"query_id = '{writer_id}' SYNC", READER) == []
    # only query ids may be named by a reader (a free condition could reach other users' queries)
    with pytest.raises(DatabaseError) as denied:
        reader.query(f"KILL QUERY WHERE query LIKE '%{marker}%'")
    assert denied.value.code == 497
    assert kill(chserver, f"query_id IN ('{reader_id}', '{writer_id}') SYNC", READER) == [("finished", reader_id, "reader")]
    r_thread.join(30)
    assert r_out["error"].code == 394  # type: ignore[union-attr]
    assert engine_running(chserver, f"{marker}w") == 1 and w_thread.is_alive()
    client(chserver).command(f"KILL QUERY WHERE query_id = '{writer_id}' SYNC")
    w_thread.join(30)
    assert w_out["error"].code == 394  # type: ignore[union-attr]


def raw_post(server: ChServer, sql: str, user: tuple[str, str] | None = None) -> socket.socket:
    name, password = user or server.auth
    sock = socket.create_connection((server.host, server.port))
    auth = base64.b64encode(f"{name}:{password}".encode()).decode()
    body = sql.encode()
    head = f"POST / HTTP/1.1\r\nHost: t\r\nAuthorization: Basic {auth}\r\nContent-Length: {len(body)}\r\n\r\n"
    sock.sendall(head.encode() + body)
    return sock


@pytest.mark.parametrize("user", [None, READER], ids=["writer", "reader"])
def test_a_query_is_cancelled_when_its_client_disconnects(chserver: ChServer, user: tuple[str, str] | None) -> None:
    marker = f"gone_{uuid.uuid4().hex[:8]}"
    sock = raw_post(chserver, SLOW.replace("SELECT", f"SELECT {marker!r},", 1), user)
    assert wait_until(lambda: engine_running(chserver, marker) == 1)
    sock.close()
    assert wait_until(lambda: engine_running(chserver, marker) == 0, timeout=10)
    # the server is fine afterwards, and the reader's slots are free again
    r = httpx.post(chserver.url, params={"query": "SELECT 1"}, auth=user or chserver.auth, timeout=30)
    assert r.status_code == 200 and r.text == "1\n"


def test_a_streamed_query_is_cancelled_when_its_client_disconnects(chserver: ChServer) -> None:
    marker = f"sgone_{uuid.uuid4().hex[:8]}"
    # a big result whose first megabyte is out long before the end: the answer is being streamed
    sql = f"SELECT {marker!r}, number, sleepEachRow(0.001) FROM numbers(10000000) SETTINGS max_block_size = 1000 FORMAT TSV"
    sock = raw_post(chserver, sql)
    received = b""
    while len(received) < (1 << 20) + 4096:
        received += sock.recv(1 << 16)
    assert received.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in received.lower()
    assert engine_running(chserver, marker) == 1
    sock.close()
    assert wait_until(lambda: engine_running(chserver, marker) == 0, timeout=10)


def test_a_queued_query_whose_client_left_never_runs(chserver: ChServer) -> None:
    """Eight slow reader queries fill the restricted pool; a service-user query waits behind them. Its client
    leaves; when the pool frees up, the queued query is refused instead of running for nobody."""
    marker = f"queued_{uuid.uuid4().hex[:8]}"
    fillers = [raw_post(chserver, SLOW.replace("SELECT", f"SELECT '{marker}f{i}',", 1), READER) for i in range(8)]
    try:
        assert wait_until(lambda: engine_running(chserver, f"{marker}f") == 8)
        service = ("query_service", chserver.service_password)
        waiting = raw_post(chserver, SLOW.replace("SELECT", f"SELECT '{marker}q',", 1), service)
        time.sleep(0.5)
        assert engine_running(chserver, f"{marker}q") == 0  # queued, not running
        waiting.close()
        time.sleep(0.3)
        assert len(kill(chserver, f"query LIKE '%{marker}f%' SYNC")) == 8
        assert wait_until(lambda: engine_running(chserver, f"{marker}f") == 0)
        time.sleep(1.5)  # the pool is free: the queued request has started by now — and must have been refused
        assert engine_running(chserver, f"{marker}q") == 0
    finally:
        for sock in fillers:
            sock.close()
