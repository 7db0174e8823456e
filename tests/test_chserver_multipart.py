"""multipart/form-data: long bound parameters as form fields (query, param_*), and external data (file parts)."""

from __future__ import annotations

import clickhouse_connect
import httpx
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from clickhouse_connect.driver.external import ExternalData

from tests.chserver_support import READER, ChServer


def test_large_parameters_sent_as_form_fields(chserver: ChServer) -> None:
    ids = [f"device-{i:06d}" for i in range(5000)]  # far beyond the URL-length switch-over
    client = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, password=chserver.password)
    result = client.query("SELECT length({ids:Array(String)}), {ids:Array(String)}[4321]", parameters={"ids": ids})
    assert result.result_rows == [(5000, "device-004320")]
    forced = clickhouse_connect.get_client(
        host=chserver.host, port=chserver.port, password=chserver.password, form_encode_query_params=True
    )
    assert forced.query("SELECT {n:UInt8} + 1", parameters={"n": 41}).result_rows == [(42,)]


def test_external_data_with_curl_style_parts(chserver: ChServer) -> None:
    """ClickHouse's own example: a file part named ``passwd`` with ``passwd_structure`` in the URL."""
    files = {"passwd": ("passwd", b"root:x:0\nbin:x:1\nzed:x:1\n", "text/plain")}
    params = {
        "query": "SELECT uid, count() AS c FROM passwd GROUP BY uid ORDER BY uid",
        "passwd_structure": "login String, pw String, uid UInt16",
        "passwd_format": "CSV",
        "format_csv_delimiter": ":",  # a URL setting applies to the external data too
    }
    r = httpx.post(chserver.url + "/", params=params, files=files, timeout=30, auth=chserver.auth)
    assert r.status_code == 200, r.text
    assert r.text == "0\t1\n1\t2\n"
    # types only: columns are _1, _2 …; the default format is TabSeparated
    files = {"t": ("t.tsv", b"1\ta\n2\tb\n", "text/tab-separated-values")}
    r = httpx.post(chserver.url + "/", params={"query": "SELECT sum(_1), groupArray(_2) FROM t", "t_types": "UInt8,String"},
                   files=files, timeout=30, auth=chserver.auth)
    assert r.status_code == 200 and r.text == "3\t['a','b']\n", r.text


@pytest.mark.parametrize("user", ["writer", "reader"])
def test_external_data_through_clickhouse_connect(chserver: ChServer, user: str) -> None:
    name, password = ("default", chserver.password) if user == "writer" else READER
    client = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username=name, password=password)
    data = ExternalData(file_name="ids.csv", data=b"1,x\n2,y\n3,z\n", fmt="CSV", structure=["id UInt32", "tag String"])
    data.add_file(file_name="more.tsv", data=b"2\n3\n", types="UInt32")
    result = client.query("SELECT tag FROM ids WHERE id IN (SELECT _1 FROM more) ORDER BY tag", external_data=data)
    assert result.result_rows == [("y",), ("z",)]
    # the tables belong to that query only: the next query of the same (session-keeping) client does not see them
    with pytest.raises(DatabaseError) as gone:
        client.query("SELECT count() FROM ids")
    assert gone.value.code == 60  # UNKNOWN_TABLE


@pytest.mark.parametrize(
    "structure",
    ["x String DEFAULT (SELECT * FROM file('/etc/passwd', 'LineAsString'))", "x String) ENGINE = Memory; DROP TABLE t (y String",
     "x String MATERIALIZED file('/etc/hostname')", "x String CODEC(ZSTD)"],
)
def test_external_structure_is_names_and_types_only(chserver: ChServer, structure: str) -> None:
    files = {"t": ("t.tsv", b"a\n", "text/plain")}
    r = httpx.post(chserver.url + "/", params={"query": "SELECT * FROM t", "t_structure": structure}, files=files,
                   timeout=30, auth=READER)
    assert r.status_code == 400 and r.headers["X-ClickHouse-Exception-Code"] == "36", r.text
    assert "root:" not in r.text


def test_external_data_errors_are_clear(chserver: ChServer) -> None:
    files = {"t": ("t.tsv", b"1\n", "text/plain")}
    r = httpx.post(chserver.url + "/", params={"query": "SELECT * FROM t"}, files=files, timeout=30, auth=chserver.auth)
    assert r.status_code == 400 and "t_structure or t_types" in r.text, r.text
    r = httpx.post(chserver.url + "/", params={"query": "SELECT * FROM t", "t_types": "UInt8", "t_format": "Nope"},
                   files=files, timeout=30, auth=chserver.auth)
    assert r.status_code == 404 and r.headers["X-ClickHouse-Exception-Code"] == "73", r.text
    r = httpx.post(chserver.url + "/", params={"query": "SELECT * FROM t", "t_types": "UInt8"},
                   files={"t": ("t.tsv", b"not a number\n", "text/plain")}, timeout=30, auth=chserver.auth)
    assert r.status_code == 400 and r.headers["X-ClickHouse-Exception-Code"] in ("27", "6", "72"), r.text
