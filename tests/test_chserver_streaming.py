"""Streamed results: errors after the first block reach the client in-band, big results keep memory bounded."""

from __future__ import annotations

import gzip
import threading
import time
from pathlib import Path

import clickhouse_connect
import httpx
import pytest
import zstandard
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, StreamFailureError

from tests.chserver_support import READER, ChServer

# an error at row 1.5M of 2M: long after the first megabyte (answered whole) has gone out
FAILING = "SELECT throwIf(number = 1500000, 'boom at 1.5M'), number FROM numbers(2000000) " \
          "SETTINGS max_block_size = 10000, max_threads = 1"


def client(server: ChServer, user: tuple[str, str] | None = None, **kwargs: object) -> Client:
    name, password = user or server.auth
    return clickhouse_connect.get_client(
        host=server.host, port=server.port, username=name, password=password, **kwargs  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("user", [None, READER], ids=["writer", "reader"])
def test_an_error_after_the_first_block_is_a_stream_failure(chserver: ChServer, user: tuple[str, str] | None) -> None:
    c = client(chserver, user)
    seen = 0
    with pytest.raises(StreamFailureError) as failure:
        with c.query_row_block_stream(FAILING) as stream:
            for block in stream:
                seen += len(block)
    assert failure.value.code == 395 and "boom at 1.5M" in str(failure.value)
    assert 100_000 < seen <= 1_500_000  # blocks before the error did arrive
    # a buffered query (clickhouse-connect's query() asks wait_end_of_query=1) gets a plain HTTP error instead
    with pytest.raises(DatabaseError) as plain:
        c.query(FAILING)
    assert not isinstance(plain.value, StreamFailureError) and plain.value.code == 395
    assert c.query("SELECT 1").result_rows == [(1,)]  # the connection's slot was given back


def test_raw_stream_ends_with_clickhouse_exception_block(chserver: ChServer) -> None:
    r = httpx.post(chserver.url, params={"query": FAILING + " FORMAT TSV"}, auth=chserver.auth, timeout=60)
    assert r.status_code == 200 and r.headers["transfer-encoding"] == "chunked"
    tag = r.headers["X-ClickHouse-Exception-Tag"]
    head, _, block = r.content.partition(b"__exception__\r\n" + tag.encode() + b"\r\n")
    assert head.endswith(b"\n") and head.count(b"\n") >= 100_000
    message, _, footer = block.partition(b"\n")
    assert message.startswith(b"Code: 395. DB::Exception: boom at 1.5M")
    assert footer == str(len(message)).encode() + b" " + tag.encode() + b"\r\n__exception__\r\n"


@pytest.mark.parametrize(
    "fmt", ["TSVWithNamesAndTypes", "CSVWithNames", "RowBinaryWithNamesAndTypes", "JSONCompactEachRowWithNames", "Native"]
)
def test_streamed_answer_equals_the_buffered_one(chserver: ChServer, fmt: str) -> None:
    """A streamed result is byte for byte what the whole result is: headers once, every row once."""
    sql = f"SELECT number AS `n,\"x`, toString(number) AS s FROM numbers(400000) SETTINGS max_block_size = 50000 FORMAT {fmt}"
    whole = httpx.post(chserver.url, params={"query": sql, "wait_end_of_query": "1"}, auth=chserver.auth, timeout=60)
    streamed = httpx.post(chserver.url, params={"query": sql}, auth=chserver.auth, timeout=60)
    assert "X-ClickHouse-Exception-Tag" not in whole.headers and "X-ClickHouse-Exception-Tag" in streamed.headers
    assert len(whole.content) > 2 << 20
    assert streamed.content == whole.content


@pytest.mark.parametrize("encoding", ["gzip", "zstd", "lz4"])
def test_streamed_answer_is_compressed_as_one_stream(chserver: ChServer, encoding: str) -> None:
    sql = "SELECT number, toString(number) FROM numbers(500000) FORMAT TSV"
    params = {"query": sql, "enable_http_compression": "1"}
    with httpx.stream("POST", chserver.url, params=params, auth=chserver.auth, headers={"Accept-Encoding": encoding},
                      timeout=60) as r:
        assert r.headers["Content-Encoding"] == encoding and "X-ClickHouse-Exception-Tag" in r.headers
        raw = b"".join(r.iter_raw())
    if encoding == "gzip":
        text = gzip.decompress(raw)
    elif encoding == "zstd":
        text = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    else:
        import lz4.frame

        text = lz4.frame.decompress(raw)
    lines = text.splitlines()
    assert len(lines) == 500_000 and lines[0] == b"0\t0" and lines[-1] == b"499999\t499999"
    # clickhouse-connect (lz4 by default) reads the same stream
    c = client(chserver, compress=encoding)
    with c.query_row_block_stream("SELECT number FROM numbers(500000)") as stream:
        assert sum(len(b) for b in stream) == 500_000


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_big_result_is_streamed_with_bounded_server_memory(chserver: ChServer) -> None:
    """400 MB of result read slowly by the client: the server's memory grows by far less than the result."""
    assert chserver.proc is not None
    pid = chserver.proc.pid
    sql = "SELECT repeat('x', 1000) FROM numbers(400000) SETTINGS max_block_size = 8192 FORMAT TSV"
    baseline = _rss(pid)
    peak = baseline
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _rss(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    total = 0
    try:
        with httpx.stream("POST", chserver.url, params={"query": sql}, auth=chserver.auth, timeout=120) as r:
            assert r.status_code == 200
            for piece in r.iter_raw(1 << 20):
                total += len(piece)
                time.sleep(0.002)  # a slow reader: the server must not run ahead and buffer everything
    finally:
        stop.set()
        sampler.join()
    assert total == 400_000 * 1001
    assert peak - baseline < 150 << 20, f"server grew by {(peak - baseline) >> 20} MiB for a {total >> 20} MiB result"
