"""Inserts never report rows they did not store (chDB's streaming inserter dropped refused blocks silently)."""

from __future__ import annotations

import uuid

import clickhouse_connect
import pyarrow as pa
import pytest

from tests.chserver_support import ChServer


@pytest.fixture()
def client(chserver: ChServer):  # noqa: ANN201 - a clickhouse-connect client on a fresh table
    c = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, password=chserver.password,
                                      autogenerate_session_id=False)
    db = f"t_ins_{uuid.uuid4().hex[:8]}"
    c.command(f"CREATE DATABASE {db}")
    c.command(f"CREATE TABLE {db}.t (h UInt32, x UInt64, s String) ENGINE MergeTree PARTITION BY h ORDER BY x")
    yield c, f"{db}.t"
    c.command(f"DROP DATABASE {db}")


def test_block_over_100_partitions_is_refused_not_lost(client) -> None:  # noqa: ANN001
    c, table = client
    t = pa.table({"h": pa.array(range(150), pa.uint32()), "x": pa.array(range(150), pa.uint64()),
                  "s": pa.array([str(i) for i in range(150)])})
    values = [list(r.values()) for r in t.to_pylist()]
    for insert in (lambda: c.insert_arrow(table, t), lambda: c.insert(table, values, column_names=["h", "x", "s"])):
        with pytest.raises(Exception, match="TOO_MANY_PARTS|Code: 252"):
            insert()
    assert c.query(f"SELECT count() FROM {table}").result_rows == [(0,)]


@pytest.mark.parametrize("how", ["arrow", "native"])
@pytest.mark.parametrize("compress", ["lz4", "zstd", False])
def test_multi_block_insert_stores_every_row(chserver: ChServer, client, how: str, compress) -> None:  # noqa: ANN001
    """A body of many blocks (one LZ4 frame each from clickhouse-connect) is stored whole."""
    _, table = client
    c = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, password=chserver.password,
                                      compress=compress, autogenerate_session_id=False)
    n = 200_000  # many 8192-row blocks, 90 partitions
    rows = pa.table({"h": pa.array([i % 90 for i in range(n)], pa.uint32()), "x": pa.array(range(n), pa.uint64()),
                     "s": pa.array([f"v{i % 1000}" for i in range(n)])})
    summary = c.insert_arrow(table, rows) if how == "arrow" else c.insert(
        table, list(zip(*(rows.column(k).to_pylist() for k in ("h", "x", "s")), strict=True)), column_names=["h", "x", "s"])
    assert summary.written_rows == n
    assert c.query(f"SELECT count(), uniqExact(h), sum(x) FROM {table}").result_rows == [(n, 90, n * (n - 1) // 2)]
