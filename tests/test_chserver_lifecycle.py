"""chserver as a process: restart persistence, one server per data dir, clean signals, `eventpipe up`."""

from __future__ import annotations

import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import clickhouse_connect
import pytest

from embedded.broker import free_port, port_is_free
from tests.chserver_support import ChServer, start_chserver


def client(server: ChServer) -> clickhouse_connect.driver.client.Client:
    return clickhouse_connect.get_client(
        host=server.host, port=server.port, database="analytics", compress="lz4", password=server.password
    )


def flat(result: subprocess.CompletedProcess[str]) -> str:
    """The process output with line wrapping (rich wraps to the terminal width) undone."""
    return " ".join((result.stderr + result.stdout).split())


def test_restart_finds_all_data(tmp_path: Path) -> None:
    data = tmp_path / "ch"
    server = start_chserver(data)
    try:
        ch = client(server)
        ch.command("CREATE TABLE events (id UInt64, kind LowCardinality(String)) ENGINE = MergeTree ORDER BY id")
        ch.command("CREATE TABLE counts ENGINE = MergeTree ORDER BY kind AS SELECT 'a' AS kind, 1 AS n")
        for batch in range(5):
            ch.insert("events", [[batch * 20_000 + i, f"k{i % 7}"] for i in range(20_000)], column_names=["id", "kind"])
        ch.command("CREATE VIEW kinds AS SELECT kind, count() AS c FROM events GROUP BY kind")
        ch.close()
    finally:
        assert server.stop(signal.SIGTERM) == 0, server.log()

    again = start_chserver(data)
    try:
        ch = client(again)
        assert ch.query("SELECT count(), sum(id) FROM events").result_rows == [(100_000, sum(range(100_000)))]
        assert ch.query("SELECT sum(c) FROM kinds").result_rows == [(100_000,)]
        assert ch.query("SELECT engine FROM system.databases WHERE name = 'analytics'").result_rows == [("Atomic",)]
        assert ch.command("EXISTS TABLE counts") == 1
        ch.close()
    finally:
        assert again.stop(signal.SIGINT) == 0, again.log()


def test_second_server_on_same_data_dir_fails_fast(tmp_path: Path) -> None:
    data = tmp_path / "ch"
    first = start_chserver(data)
    try:
        second = ChServer(data_dir=data, port=free_port())
        t0 = time.monotonic()
        result = subprocess.run(second.command(), env=second.env(), capture_output=True, text=True, timeout=60)
        elapsed = time.monotonic() - t0
        assert result.returncode == 1
        said = flat(result)
        assert "already in use by another chserver" in said
        assert first.proc is not None and f"pid {first.proc.pid}" in said
        assert elapsed < 15
        assert port_is_free("127.0.0.1", second.port)
        # the first server is unaffected
        with urllib.request.urlopen(f"{first.url}/?query=SELECT+1&user=default&password={first.password}", timeout=5) as resp:
            assert resp.read() == b"1\n"
    finally:
        first.stop()


def test_taken_port_is_refused_with_a_clear_message(tmp_path: Path, chserver: ChServer) -> None:
    other = ChServer(data_dir=tmp_path / "ch", port=chserver.port)
    result = subprocess.run(other.command(), env=other.env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"127.0.0.1:{chserver.port} is already in use" in flat(result)


def test_sigterm_during_inserts_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """Inserts acknowledged before shutdown are all there after a restart; the shutdown itself is clean."""
    data = tmp_path / "ch"
    server = start_chserver(data)
    ch = client(server)
    ch.command("CREATE TABLE t (batch UInt32, id UInt64) ENGINE = MergeTree ORDER BY (batch, id)")
    ch.close()
    acked: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        c = client(server)
        batch = 0
        while not stop.is_set():
            try:
                c.insert("t", [[batch, i] for i in range(5_000)], column_names=["batch", "id"])
            except Exception:  # noqa: BLE001 - the server is going away; unacknowledged batches may be lost
                return
            acked.append(batch)
            batch += 1

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(2.0)
    assert server.stop(signal.SIGTERM) == 0, server.log()
    stop.set()
    thread.join(30)
    assert len(acked) >= 2, "too few inserts before shutdown for the test to mean anything"

    again = start_chserver(data)
    try:
        ch = client(again)
        batches = {b for (b,) in ch.query("SELECT DISTINCT batch FROM t").result_rows}
        assert set(acked) <= batches
        per_batch = ch.query("SELECT batch, count() FROM t GROUP BY batch").result_rows
        assert all(n == 5_000 for _, n in per_batch), per_batch  # no torn batch
        ch.close()
    finally:
        again.stop()


@pytest.mark.timeout(420)
def test_eventpipe_up_serves_clickhouse(tmp_path: Path) -> None:
    from tests.stack_support import up_env

    ch_port = free_port()
    env = up_env(tmp_path, CLICKHOUSE_URL=f"http://default:@127.0.0.1:{ch_port}/analytics")
    proc = subprocess.Popen(
        [sys.executable, "-m", "eventpipe_cli.main", "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "stack is up" in line or "error" in line:
                break
        assert any("chserver" in line and f":{ch_port}" in line for line in lines), lines
        # the writer's password was generated at first start, private to this user, and is required
        creds = tmp_path / "chserver-credentials"
        assert stat.S_IMODE(creds.stat().st_mode) == 0o600
        password = dict(line.split(":", 1) for line in creds.read_text().splitlines() if not line.startswith("#"))["default"]
        assert len(password) >= 24
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(f"http://127.0.0.1:{ch_port}/?query=SELECT+1", timeout=10)
        assert exc.value.code == 401
        auth = f"&user=default&password={urllib.parse.quote(password)}"
        with urllib.request.urlopen(f"http://127.0.0.1:{ch_port}/?query=SELECT+version(){auth}", timeout=10) as resp:
            version = resp.read().decode().strip()
        assert version.count(".") >= 2 and version[0].isdigit()
        with urllib.request.urlopen(f"http://127.0.0.1:{ch_port}/?query=EXISTS+DATABASE+analytics{auth}", timeout=10) as resp:
            assert resp.read() == b"1\n"
        # and every eventpipe component resolves the same password from the settings
        from eventpipe_core.settings import load_settings

        resolved = load_settings(eventpipe_home=tmp_path, clickhouse_url=f"http://default:@127.0.0.1:{ch_port}/analytics")
        assert resolved.clickhouse.password == password
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, "".join(lines) + out
    assert port_is_free("127.0.0.1", ch_port)
    assert (tmp_path / "clickhouse" / "chserver.lock").exists()


def test_default_password_comes_from_clickhouse_url(tmp_path: Path) -> None:
    port = free_port()
    server = ChServer(
        data_dir=tmp_path / "ch", port=port, extra_env={"CLICKHOUSE_URL": f"http://default:s3cr%40t@127.0.0.1:{port}/analytics"}
    ).start()
    try:
        anonymous = urllib.request.Request(f"{server.url}/?query=SELECT+1")
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(anonymous, timeout=5)
        assert exc.value.code == 401 and exc.value.headers["X-ClickHouse-Exception-Code"] == "516"
        ch = clickhouse_connect.get_client(host=server.host, port=server.port, username="default", password="s3cr@t")
        assert ch.command("SELECT currentDatabase() = 'default'") == 1
        ch.close()
    finally:
        server.stop()
